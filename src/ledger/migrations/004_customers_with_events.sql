-- Which of these customers have any event: customersWithEvents, asked for every batch that brings
-- customers the fast path has not loaded. One probe of the usage index per customer is always cheap, but
-- on a month partition that grew faster than its statistics the planner preferred to read the whole
-- partition into a hash (tens of milliseconds per call, and growing with the month). A function's own
-- settings hold whatever the statistics say; it is not inlined, so they apply to its query.
CREATE FUNCTION meterd_customers_with_events(ids TEXT[])
RETURNS SETOF TEXT
LANGUAGE sql STABLE
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
  SELECT c.customer_id FROM unnest(ids) AS c(customer_id)
    WHERE EXISTS (SELECT 1 FROM meterd_events e WHERE e.customer_id = c.customer_id)
$fn$;
