-- Trading state (contract §11.4): the current state of each scope ('global' or an asset) and
-- every change. Shared by every instance, obeyed by the leader, kept across restarts.
CREATE TABLE IF NOT EXISTS trading_state (
    scope     text PRIMARY KEY,                     -- 'global' or a symbol
    state     text NOT NULL CHECK (state IN ('active', 'reducing', 'halted')),
    reason    text NOT NULL,
    message   text,
    source    text NOT NULL CHECK (source IN ('operator', 'automatic')),
    operator  text,                                 -- X-Operator of the request, when given
    since     timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS trading_state_changes (
    id          bigserial PRIMARY KEY,
    scope       text NOT NULL,
    state       text NOT NULL,
    previous    text NOT NULL,
    reason      text NOT NULL,
    message     text,
    source      text NOT NULL,
    operator    text,
    request_id  uuid,                               -- the operator request that made it, if any
    epoch       bigint,                             -- the leader that made it
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS trading_state_changes_at_idx ON trading_state_changes (at DESC);

-- Each asset's net PnL (realized, fees included, plus unrealized) at its first evaluation of a
-- UTC day: the daily-loss trigger (§11.6) measures from there, across restarts and instances.
CREATE TABLE IF NOT EXISTS daily_pnl_baselines (
    day       date NOT NULL,
    asset     text NOT NULL,
    net_pnl   numeric NOT NULL,
    taken_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (day, asset)
);

-- The outbox also carries trading-state events, to their own queue.
ALTER TABLE order_events_outbox ADD COLUMN IF NOT EXISTS queue text NOT NULL DEFAULT 'order-manager.order_events';
