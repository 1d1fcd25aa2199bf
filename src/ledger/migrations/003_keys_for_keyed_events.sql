-- meterd_event_keys holds only what the partitioned table cannot guard: one event per customer and
-- idempotency key, across months. An event's own id needs no row here: the id is made by the server,
-- and a second write of the same event (a sweeper committing what a slow replica also commits) carries
-- the same occurred_at, so meterd_events' primary key (id, occurred_at) refuses it. Keyless events then
-- cost no row here at all, and keyed ones one index instead of two.
DELETE FROM meterd_event_keys WHERE idempotency_key IS NULL;
ALTER TABLE meterd_event_keys DROP CONSTRAINT meterd_event_keys_pkey;
ALTER TABLE meterd_event_keys ALTER COLUMN idempotency_key SET NOT NULL;
