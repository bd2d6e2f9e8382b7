"""The Bybit v5 adapter: pybit in worker threads (transport), the request policy (client),
the wire format (wire), the shared ticker reads (tickers) and the ``Venue`` port (exchange)."""
