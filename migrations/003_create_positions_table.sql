-- The service's own view of each position (one-way mode: signed size; Sell = negative).
CREATE TABLE IF NOT EXISTS positions (
    asset                text NOT NULL,
    mode                 text NOT NULL DEFAULT 'one_way',
    size                 numeric NOT NULL DEFAULT 0,
    average_entry_price  numeric NOT NULL DEFAULT 0,
    realized_pnl         numeric NOT NULL DEFAULT 0,
    unrealized_pnl       numeric NOT NULL DEFAULT 0,
    fees                 numeric NOT NULL DEFAULT 0,
    last_price           numeric,
    last_updated         timestamptz NOT NULL DEFAULT now(),
    last_snapshot_at     timestamptz,
    PRIMARY KEY (asset, mode)
);
