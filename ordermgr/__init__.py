"""ordermgr: turns model-service trading signals into Bybit orders and follows them to their end."""

__version__ = "0.1.0"
