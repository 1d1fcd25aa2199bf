-- The ledger: one row per counted event, kept exactly once.
CREATE TABLE meterd_events (
  id              TEXT PRIMARY KEY,
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
  properties      JSONB NOT NULL DEFAULT '{}',
  -- NULLs are distinct: keyless events are deduplicated by id only.
  CONSTRAINT meterd_events_customer_key UNIQUE (customer_id, idempotency_key)
);

-- sumUsage: one customer's feature over a time range, answered from the index alone.
CREATE INDEX meterd_events_usage ON meterd_events (customer_id, feature_key, occurred_at) INCLUDE (amount);

-- walletBalance and walletHistory: only the rows that moved the wallet.
CREATE INDEX meterd_events_wallet ON meterd_events (customer_id, recorded_at DESC, seq DESC)
  INCLUDE (credits) WHERE credits <> 0;

-- The catalogue: features, plans and customers, one JSON document each.
CREATE TABLE meterd_catalog (
  kind       TEXT NOT NULL CHECK (kind IN ('feature', 'plan', 'customer')),
  key        TEXT NOT NULL,
  doc        JSONB NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (kind, key)
);
