"""The domain: signals, decisions, order state, positions and events as plain values and pure
functions. Nothing here touches a socket, a file or the clock, and nothing imports from outside
``ordermgr.domain``: every rule of the contract can be tested without a server."""
