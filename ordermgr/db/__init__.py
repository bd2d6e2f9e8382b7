"""PostgreSQL: the schema migrations, the writes the actors make (store, the ``Store`` port) and
the read-only queries of the API."""
