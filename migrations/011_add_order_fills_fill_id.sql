-- Each fill delta carries an id made when it is first applied, so a transaction redone after
-- its COMMIT answer was lost (the connection dropped) cannot record the same fill twice.
ALTER TABLE order_fills ADD COLUMN IF NOT EXISTS fill_id uuid;

CREATE UNIQUE INDEX IF NOT EXISTS order_fills_fill_id_idx ON order_fills (fill_id);
