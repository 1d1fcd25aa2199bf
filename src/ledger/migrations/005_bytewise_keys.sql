-- Identifiers compare byte by byte (COLLATE "C"): every insert walks the btrees of the event id, the
-- customer and the idempotency key, and a locale's collation turns each comparison into a strcoll call.
-- The order is Unicode code point order, which is what C.UTF-8 databases already used; under any other
-- locale, only the order of listings by customer id changes. Postgres rebuilds the indexes on these
-- columns; the rows themselves are not rewritten.
ALTER TABLE meterd_events
  ALTER COLUMN id TYPE TEXT COLLATE "C",
  ALTER COLUMN customer_id TYPE TEXT COLLATE "C",
  ALTER COLUMN feature_key TYPE TEXT COLLATE "C",
  ALTER COLUMN idempotency_key TYPE TEXT COLLATE "C";

ALTER TABLE meterd_event_keys
  ALTER COLUMN event_id TYPE TEXT COLLATE "C",
  ALTER COLUMN customer_id TYPE TEXT COLLATE "C",
  ALTER COLUMN idempotency_key TYPE TEXT COLLATE "C";
