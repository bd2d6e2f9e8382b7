-- Which orders a signal produced: one_to_one, or one_to_many when it was split into legs.
CREATE TABLE IF NOT EXISTS signal_order_relationships (
    id                   bigserial PRIMARY KEY,
    signal_id            varchar(100) NOT NULL,
    order_id             uuid NOT NULL REFERENCES orders (id),
    relationship_type    text NOT NULL CHECK (relationship_type IN ('one_to_one', 'one_to_many')),
    execution_sequence   integer NOT NULL DEFAULT 1,
    allocation_amount    numeric NOT NULL,             -- quote currency (USDT) allotted to this order
    allocation_quantity  numeric NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id)
);

CREATE INDEX IF NOT EXISTS signal_order_relationships_signal_idx ON signal_order_relationships (signal_id);
