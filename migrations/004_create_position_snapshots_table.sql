-- Copies of the positions taken every ORDERMANAGER_POSITION_SNAPSHOT_INTERVAL.
CREATE TABLE IF NOT EXISTS position_snapshots (
    id                   bigserial PRIMARY KEY,
    asset                text NOT NULL,
    mode                 text NOT NULL,
    size                 numeric NOT NULL,
    average_entry_price  numeric NOT NULL,
    realized_pnl         numeric NOT NULL,
    unrealized_pnl       numeric NOT NULL,
    fees                 numeric NOT NULL,
    last_price           numeric,
    snapshot_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS position_snapshots_asset_idx ON position_snapshots (asset, snapshot_at DESC);
