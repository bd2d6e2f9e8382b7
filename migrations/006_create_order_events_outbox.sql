-- Order events, written in the same transaction as the state change they describe and
-- published from here with publisher confirms: a broker outage delays events, loses none.
CREATE TABLE IF NOT EXISTS order_events_outbox (
    seq           bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    event_type    text NOT NULL,
    signal_id     varchar(100),
    order_uuid    uuid,
    trace_id      text,
    body          jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);

CREATE INDEX IF NOT EXISTS order_events_outbox_unpublished_idx ON order_events_outbox (seq) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS order_events_outbox_signal_idx ON order_events_outbox (signal_id);
