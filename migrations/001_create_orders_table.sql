-- Orders placed (or simulated) for signals. One row per exchange order; the row is written
-- as an intent (status 'submitting') before the venue is called.
CREATE TABLE IF NOT EXISTS orders (
    id               uuid PRIMARY KEY,
    order_id         text UNIQUE,                       -- venue id, set once acknowledged
    order_link_id    varchar(36) NOT NULL UNIQUE,       -- deterministic per signal, attempt and leg
    signal_id        varchar(100) NOT NULL,
    asset            text NOT NULL,
    category         text NOT NULL DEFAULT 'linear',
    side             text NOT NULL CHECK (side IN ('Buy', 'Sell')),
    order_type       text NOT NULL CHECK (order_type IN ('Market', 'Limit')),
    time_in_force    text NOT NULL DEFAULT 'GTC',
    reduce_only      boolean NOT NULL DEFAULT false,
    quantity         numeric NOT NULL CHECK (quantity > 0),
    price            numeric,
    status           text NOT NULL CHECK (status IN ('submitting', 'pending', 'partially_filled', 'filled',
                                                     'cancelled', 'rejected', 'dry_run')),
    filled_quantity  numeric NOT NULL DEFAULT 0,
    filled_value     numeric NOT NULL DEFAULT 0,        -- cumExecValue, so fill deltas can be priced
    average_price    numeric,
    fees             numeric NOT NULL DEFAULT 0,
    rejection_reason text,
    venue_updated_ms bigint,                            -- Bybit updatedTime of the last merged update
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    executed_at      timestamptz,
    trace_id         text,
    is_dry_run       boolean NOT NULL DEFAULT false
);

CREATE INDEX IF NOT EXISTS orders_asset_created_idx ON orders (asset, created_at DESC);
CREATE INDEX IF NOT EXISTS orders_created_idx ON orders (created_at DESC);
CREATE INDEX IF NOT EXISTS orders_signal_idx ON orders (signal_id);
CREATE INDEX IF NOT EXISTS orders_active_idx ON orders (asset, status)
    WHERE status IN ('submitting', 'pending', 'partially_filled');
