"""The HTTP side: the aiohttp server with its probes, the REST API and its OpenAPI document."""
