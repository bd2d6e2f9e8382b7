-- One writer (contract §13): the instance that holds this lease trades; the others stand by.
-- Each new leader gets a larger epoch, and the statements that commit an intent or change an
-- order check it, so a deposed leader that has not noticed yet can write nothing (fencing).
-- Times come from the database's clock only, so the instances' clocks never have to agree.
CREATE TABLE IF NOT EXISTS leader_lease (
    name         text PRIMARY KEY,                -- 'trading': one lease per account
    holder       text NOT NULL,                   -- the instance (host, pid, start)
    epoch        bigint NOT NULL,
    acquired_at  timestamptz NOT NULL,
    renewed_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);

-- Every epoch ever granted, and how it ended: the audit of who led when (never two at once).
CREATE TABLE IF NOT EXISTS leader_epochs (
    epoch        bigint PRIMARY KEY,
    holder       text NOT NULL,
    acquired_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at     timestamptz,
    ended        text                             -- 'released' (drained) or 'lost'
);

-- Raises when a guarded write finds the database other than it expects (a fenced epoch, a row
-- changed by someone else): the whole statement, and so its transaction, is undone.
CREATE OR REPLACE FUNCTION ordermgr_require(ok boolean, sqlstate text, failure text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = failure;
    END IF;
    RETURN true;
END
$$;

-- Optimistic concurrency on the rows the actors rewrite: a write names the version it read and
-- fails if the row moved on; ``last_write`` lets a write redone after a lost answer see itself.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS last_write uuid;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS last_write uuid;
