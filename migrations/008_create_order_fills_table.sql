-- Each fill delta applied to a position, exactly once: the increase of an order's cumulative
-- executed quantity, value and fee seen by one merged update (ws-gateway event or sync lookup).
CREATE TABLE IF NOT EXISTS order_fills (
    id           bigserial PRIMARY KEY,
    order_uuid   uuid NOT NULL REFERENCES orders (id),
    signal_id    varchar(100) NOT NULL,
    asset        text NOT NULL,
    side         text NOT NULL CHECK (side IN ('Buy', 'Sell')),
    quantity     numeric NOT NULL,
    value        numeric NOT NULL,
    price        numeric,
    fee          numeric NOT NULL,
    source       text NOT NULL,                 -- 'ws_gateway', 'sync', 'adoption'
    venue_time_ms bigint NOT NULL,              -- when the venue reports it happened (updatedTime)
    filled_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS order_fills_order_idx ON order_fills (order_uuid);
CREATE INDEX IF NOT EXISTS order_fills_signal_idx ON order_fills (signal_id);
-- Replaying a symbol's fills in venue order rebuilds its position exactly.
CREATE INDEX IF NOT EXISTS order_fills_asset_time_idx ON order_fills (asset, venue_time_ms, id);
