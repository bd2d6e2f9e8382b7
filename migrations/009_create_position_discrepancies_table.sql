-- Differences found between our positions and the venue's, and how each was resolved
-- (in favour of the venue).
CREATE TABLE IF NOT EXISTS position_discrepancies (
    id                   bigserial PRIMARY KEY,
    asset                text NOT NULL,
    local_size           numeric NOT NULL,
    venue_size           numeric NOT NULL,
    local_average_price  numeric NOT NULL,
    venue_average_price  numeric NOT NULL,
    resolution           text NOT NULL,
    detected_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS position_discrepancies_asset_idx ON position_discrepancies (asset, detected_at DESC);
