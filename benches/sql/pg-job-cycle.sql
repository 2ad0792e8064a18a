-- The raw limit for PostgreSQL job throughput (benches/store.rs runs this with pgbench):
-- one cycle claims up to 128 available jobs with the statement SqlStore::job_claim sends,
-- then, by id and guarded by state, completes them and advances their chains in one
-- statement. It skips what maas also does per completion (the attempt fence, reading the
-- chain under lock, host-run ends, batch counts, claims, events), so it bounds what any
-- store could reach with this schema.
WITH picked AS MATERIALIZED (
    SELECT id FROM maas_jobs
    WHERE state = 'available' AND site = 'dc1' AND kind IN ('preflight', 'power_cycle', 'verify')
      AND run_at <= 9000000000000000
    ORDER BY queue_key, id LIMIT 128 FOR UPDATE SKIP LOCKED),
claimed AS (
    UPDATE maas_jobs SET state = 'running', attempt = attempt + 1, lease_owner = 'pgbench-' || :client_id,
        lease_expires_at = 9000000000000000, started_at = 1
    FROM picked WHERE maas_jobs.id = picked.id RETURNING maas_jobs.*)
SELECT quote_literal(coalesce(string_agg(id, ','), '')) AS ids FROM claimed
\gset
WITH done AS (
    UPDATE maas_jobs SET state = 'succeeded', finished_at = 2, lease_owner = NULL, lease_expires_at = NULL
    WHERE id = ANY(string_to_array(:ids, ',')) AND state = 'running'
    RETURNING host_run_id, position),
advanced AS (
    UPDATE maas_jobs SET state = 'available', enqueued_at = 2, run_at = 2
    FROM done WHERE maas_jobs.host_run_id = done.host_run_id AND maas_jobs.position = done.position + 1
    RETURNING maas_jobs.host_run_id, maas_jobs.position)
UPDATE maas_host_runs SET step = advanced.position FROM advanced WHERE maas_host_runs.id = advanced.host_run_id;
