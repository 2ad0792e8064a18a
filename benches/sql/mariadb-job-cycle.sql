-- The raw limit for MariaDB job throughput (benches/store.rs sends these statements as
-- they are, from as many tasks as maas has workers; MariaDB has no pgbench). The same
-- cycle as pg-job-cycle.sql on the same schema, in MariaDB's dialect: MariaDB has no
-- UPDATE ... RETURNING and no data-modifying CTEs, so the claim locks with SKIP LOCKED and
-- leases the locked ids in a second statement (what SqlStore::job_claim sends), and the
-- completion is three joined UPDATEs. Both transactions run at READ COMMITTED, as maas's
-- do. `:client_id` and `:ids` are filled in by the harness.
-- claim
SELECT id FROM maas_jobs
WHERE ready_site = 'dc1' AND kind IN ('preflight', 'power_cycle', 'verify') AND run_at <= 9000000000000000
ORDER BY queue_key, id LIMIT 128 FOR UPDATE SKIP LOCKED;
UPDATE maas_jobs SET state = 'running', attempt = attempt + 1, lease_owner = CONCAT('raw-', :client_id),
    lease_expires_at = 9000000000000000, started_at = 1
WHERE id IN (:ids);
-- complete
UPDATE maas_jobs SET state = 'succeeded', finished_at = 2, lease_owner = NULL, lease_expires_at = NULL
WHERE id IN (:ids) AND state = 'running';
UPDATE maas_jobs n JOIN maas_jobs d ON n.host_run_id = d.host_run_id AND n.position = d.position + 1
SET n.state = 'available', n.enqueued_at = 2, n.run_at = 2
WHERE d.id IN (:ids);
UPDATE maas_host_runs r JOIN maas_jobs n ON n.host_run_id = r.id JOIN maas_jobs d ON d.host_run_id = r.id
    AND n.position = d.position + 1
SET r.step = n.position
WHERE d.id IN (:ids);
