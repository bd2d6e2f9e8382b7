-- The signal part of our orderLinkIds (om-<first 20 hex of sha256(signal_id)>-<attempt>-<leg>),
-- so an order found on the venue with our prefix can be traced back to its signal.
ALTER TABLE signals ADD COLUMN IF NOT EXISTS link_key text;

CREATE INDEX IF NOT EXISTS signals_link_key_idx ON signals (link_key);
