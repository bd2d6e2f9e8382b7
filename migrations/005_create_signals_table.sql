-- Every signal that arrived, valid or not, with its raw body: nothing is lost.
CREATE TABLE IF NOT EXISTS signals (
    signal_id          varchar(100) PRIMARY KEY,       -- 'invalid:<uuid>' when the message had none usable
    status             text NOT NULL CHECK (status IN ('received', 'processing', 'accepted', 'rejected', 'invalid')),
    raw_payload        jsonb,                           -- the body when it was a JSON object
    raw_text           text,                            -- the body when it was not (cut to 64 KiB)
    body_size          integer NOT NULL,
    signal_type        text,
    asset              text,
    amount             numeric,
    confidence         numeric,
    signal_timestamp   timestamptz,
    strategy_id        text,
    is_warmup          boolean,
    rejection_code     text,
    rejection_message  text,
    rejection_details  jsonb,
    decision           jsonb,                           -- order type, price, legs as decided
    attempts           integer NOT NULL DEFAULT 0,      -- evaluations; a rejected signal is evaluated again
    deliveries         integer NOT NULL DEFAULT 1,      -- how often the broker handed it to us
    trace_id           text,
    received_at        timestamptz NOT NULL DEFAULT now(),
    processed_at       timestamptz
);

CREATE INDEX IF NOT EXISTS signals_received_idx ON signals (received_at DESC);
CREATE INDEX IF NOT EXISTS signals_asset_idx ON signals (asset, received_at DESC);
