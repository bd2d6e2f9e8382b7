-- Operator actions and trading-state changes (contract §12, §13.4): any instance takes the
-- request and records it here; the leader, woken by NOTIFY, carries it out and writes the
-- outcome, which the taking instance returns. The table is also the audit trail: who, what, when.
CREATE TABLE IF NOT EXISTS operator_requests (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL,        -- trading_state, cancel_order, cancel_all, close_position, close_all, sync
    params       jsonb NOT NULL,
    operator     text,                 -- the X-Operator header
    status       text NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    http_status  integer,
    result       jsonb,
    taken_by     text NOT NULL,        -- the instance that took the request
    executed_by  text,                 -- the leader that carried it out
    epoch        bigint,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at   timestamptz,
    finished_at  timestamptz
);

CREATE INDEX IF NOT EXISTS operator_requests_open_idx ON operator_requests (created_at)
    WHERE status IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS operator_requests_created_idx ON operator_requests (created_at DESC);
