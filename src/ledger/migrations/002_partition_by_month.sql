-- The ledger, range-partitioned by month on occurred_at (UTC months), so that a time-bounded query
-- reads only its months and an old month can be detached and archived as one table.
--
-- A partitioned table's unique keys must include occurred_at, so the two rules that used to be
-- UNIQUE on meterd_events (one row per id; one row per customer and idempotency key) move to
-- meterd_event_keys, a narrow unpartitioned table written in the same transaction as the event rows.
--
-- The existing rows are copied into the new table inside this migration's transaction, which holds
-- the old table locked meanwhile: on a large ledger, plan for that pause.

-- Every event's identity: one row per event, in step with meterd_events.
CREATE TABLE meterd_event_keys (
  event_id        TEXT PRIMARY KEY,
  customer_id     TEXT NOT NULL,
  -- NULLs are distinct: keyless events are deduplicated by event_id only.
  idempotency_key TEXT NULL,
  -- The event's partition key, so that finding the row behind a key reads one partition.
  occurred_at     TIMESTAMPTZ NOT NULL,
  CONSTRAINT meterd_event_keys_customer_key UNIQUE (customer_id, idempotency_key)
);

-- Set the 001 table aside; its sequence too, so that the new one takes the usual name.
ALTER TABLE meterd_events RENAME TO meterd_events_001;
ALTER SEQUENCE meterd_events_seq_seq RENAME TO meterd_events_001_seq_seq;

-- The same columns as in 001. Keys and indexes are added after the copy, under their 001 names.
CREATE TABLE meterd_events (
  id              TEXT NOT NULL,
  -- Insertion order, a tie-break for rows committed in the same transaction (they share recorded_at).
  seq             BIGINT GENERATED ALWAYS AS IDENTITY,
  customer_id     TEXT NOT NULL,
  feature_key     TEXT NULL,
  kind            TEXT NOT NULL CHECK (kind IN ('track', 'set', 'adjustment', 'topup')),
  amount          NUMERIC NOT NULL,
  credits         NUMERIC NOT NULL DEFAULT 0,
  idempotency_key TEXT NULL,
  fingerprint     TEXT NOT NULL,
  occurred_at     TIMESTAMPTZ NOT NULL,
  recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
  properties      JSONB NOT NULL DEFAULT '{}'
) PARTITION BY RANGE (occurred_at);

-- Events of a month that has no partition (far past, far future) land here.
CREATE TABLE meterd_events_default PARTITION OF meterd_events DEFAULT;

-- Creates the monthly partitions meterd_events_YYYY_MM (UTC) for `months` months from the month of
-- from_month, skipping those that exist; returns the names it created. Rows of such a month already
-- in the DEFAULT partition are moved into the new partition (Postgres refuses to create it over
-- them). Takes the migration advisory lock, so concurrent callers and migrations take turns; takes
-- meterd_events ACCESS EXCLUSIVE only when it has a partition to create.
CREATE FUNCTION meterd_ensure_partitions(from_month TIMESTAMPTZ, months INTEGER)
RETURNS SETOF TEXT
LANGUAGE plpgsql
AS $fn$
DECLARE
  -- Month arithmetic in UTC wall-clock time, whatever the session's TimeZone.
  first_month TIMESTAMP := date_trunc('month', from_month AT TIME ZONE 'UTC');
  lo          TIMESTAMPTZ;
  hi          TIMESTAMPTZ;
  part        TEXT;
  strays      BOOLEAN;
BEGIN
  -- MIGRATION_LOCK_KEY in migrate.ts.
  PERFORM pg_advisory_xact_lock(120279469470308);
  FOR i IN 0 .. months - 1 LOOP
    lo := (first_month + make_interval(months => i)) AT TIME ZONE 'UTC';
    hi := (first_month + make_interval(months => i + 1)) AT TIME ZONE 'UTC';
    part := 'meterd_events_' || to_char(first_month + make_interval(months => i), 'YYYY_MM');
    CONTINUE WHEN to_regclass(part) IS NOT NULL;

    -- Before looking at DEFAULT, so that no row of this month can reach it until the partition exists.
    LOCK TABLE meterd_events IN ACCESS EXCLUSIVE MODE;
    strays := EXISTS (SELECT 1 FROM meterd_events_default WHERE occurred_at >= lo AND occurred_at < hi);
    IF strays THEN
      ALTER TABLE meterd_events DETACH PARTITION meterd_events_default;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF meterd_events FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    IF strays THEN
      -- Every column, seq and recorded_at included: a moved row is the same row.
      WITH moved AS (
        DELETE FROM meterd_events_default WHERE occurred_at >= lo AND occurred_at < hi
        RETURNING id, seq, customer_id, feature_key, kind, amount, credits, idempotency_key, fingerprint,
          occurred_at, recorded_at, properties
      )
      INSERT INTO meterd_events (id, seq, customer_id, feature_key, kind, amount, credits, idempotency_key,
          fingerprint, occurred_at, recorded_at, properties)
        OVERRIDING SYSTEM VALUE
        SELECT id, seq, customer_id, feature_key, kind, amount, credits, idempotency_key, fingerprint,
          occurred_at, recorded_at, properties
        FROM moved;
      ALTER TABLE meterd_events ATTACH PARTITION meterd_events_default DEFAULT;
    END IF;
    RETURN NEXT part;
  END LOOP;
END
$fn$;

-- A partition for every month that holds rows, so that history does not pile up in DEFAULT.
SELECT meterd_ensure_partitions(month, 1)
  FROM (SELECT DISTINCT date_trunc('month', occurred_at, 'UTC') AS month FROM meterd_events_001) AS months;

INSERT INTO meterd_events (id, seq, customer_id, feature_key, kind, amount, credits, idempotency_key, fingerprint,
    occurred_at, recorded_at, properties)
  OVERRIDING SYSTEM VALUE
  SELECT id, seq, customer_id, feature_key, kind, amount, credits, idempotency_key, fingerprint, occurred_at,
    recorded_at, properties
  FROM meterd_events_001;

INSERT INTO meterd_event_keys (event_id, customer_id, idempotency_key, occurred_at)
  SELECT id, customer_id, idempotency_key, occurred_at FROM meterd_events_001;

-- New rows continue after the copied ones.
SELECT setval(pg_get_serial_sequence('meterd_events', 'seq'), max(seq) + 1, false)
  FROM meterd_events_001 HAVING count(*) > 0;

DROP TABLE meterd_events_001;

-- The row's identity within the partitioned table (the global rules live in meterd_event_keys).
ALTER TABLE meterd_events ADD CONSTRAINT meterd_events_pkey PRIMARY KEY (id, occurred_at);

-- sumUsage: one customer's feature over a time range, answered from the index alone.
CREATE INDEX meterd_events_usage ON meterd_events (customer_id, feature_key, occurred_at) INCLUDE (amount);

-- walletBalance and walletHistory: only the rows that moved the wallet.
CREATE INDEX meterd_events_wallet ON meterd_events (customer_id, recorded_at DESC, seq DESC)
  INCLUDE (credits) WHERE credits <> 0;
