//! `SqlStore`: the `Store` and `Inventory` contracts on SQLite, PostgreSQL and
//! MySQL/MariaDB. Decisions come from `maas_core::machine`; this file loads the rows a
//! change touches (locked, in a fixed order: batch, host run, jobs), calls the decision, and
//! writes its `Effects` in the same transaction.
//!
//! Locking: PostgreSQL and MySQL lock the rows they will rewrite with `FOR UPDATE`, and
//! claims skip rows other claimers hold (`SKIP LOCKED`); SQLite write transactions begin
//! `IMMEDIATE`, so writers queue on the database lock instead of failing on a stale
//! snapshot. Every write that could conflict is also guarded by the state it expects.
//! Deadlocks and busy errors retry the whole transaction a few times.

use std::collections::BTreeMap;
use std::sync::Arc;

use maas_core::effects::{ApplyEffects, EffectWrite};
use maas_core::id::{BatchId, HostRunId, JobId};
use maas_core::machine::{self, Effects, Expiry, JobContext, Rules, TransitionError};
use maas_core::model::*;
use maas_core::names::{Hostname, Site};
use maas_core::overlap::Conflict;
use maas_core::ports::store::*;
use maas_core::time::Timestamp;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, IsolationLevel, QueryResult,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait, Value,
};

use crate::errors::backend as backend_err;
use crate::rows::{self, col, n, s, t};
use crate::{OpenError, OpenOptions, entity};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

mod complete;

/// Rows per multi-row INSERT (well under every backend's bind-parameter limit).
const CHUNK: usize = 400;
/// Batch specs kept parsed (cleared when full).
const SPEC_CACHE: usize = 10_000;
/// Host runs (with their jobs) deleted per retention transaction.
const PURGE_RUNS: usize = 500;
/// Completions committed per transaction in `job_complete_many`.
const COMPLETION_GROUP: usize = 128;
/// Attempts of a transaction that hit a deadlock or a busy database.
const RETRIES: usize = 8;

/// Runs `$body` (which uses `$c: &DatabaseTransaction`) in a write transaction, committing
/// on `Ok` and rolling back on `Err`; deadlocks and busy databases retry the whole body.
/// A macro rather than a closure so the body's future stays `Send`.
macro_rules! write_txn {
    ($store:ident, $c:ident, $body:block) => {{
        let mut attempt = 0usize;
        loop {
            attempt += 1;
            let txn = $store.begin().await?;
            let result = {
                let $c = &txn;
                async { $body }.await
            };
            match result {
                Ok(v) => match txn.commit().await.map_err(backend_err) {
                    Ok(()) => break Ok(v),
                    Err(e) if transient(&e) && attempt < RETRIES => continue,
                    Err(e) => break Err(e),
                },
                Err(e) => {
                    let _ = txn.rollback().await;
                    if transient(&e) && attempt < RETRIES {
                        tokio::time::sleep(std::time::Duration::from_millis(2 * attempt as u64)).await;
                        continue;
                    }
                    break Err(e);
                }
            }
        }
    }};
}

// After the macro: these use `write_txn!`.
mod inventory;
mod queue;
mod report;

/// The SQL store.
pub struct SqlStore {
    db: DatabaseConnection,
    backend: DbBackend,
    rules: Rules,
    /// Parsed batch specs by id: specs are immutable and can be large (every host).
    specs: std::sync::Mutex<std::collections::HashMap<String, Arc<maas_core::batch::BatchSpec>>>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").field("backend", &self.backend).finish_non_exhaustive()
    }
}

/// The column holding a job's deadline under `expiry` (maas-core's `Expiry::deadline`).
fn expiry_column(expiry: Expiry) -> &'static str {
    match expiry {
        Expiry::Lease => "lease_expires_at",
        Expiry::Wait => "wait_deadline",
    }
}

fn placeholders(k: usize) -> String {
    vec!["?"; k].join(", ")
}

fn set_clause(columns: &str) -> String {
    columns.split(',').map(str::trim).skip(1).map(|c| format!("{c} = ?")).collect::<Vec<_>>().join(", ")
}

/// A row's values rearranged for `UPDATE ... SET (all but the first) WHERE first = ?`.
fn update_values(mut v: Vec<Value>) -> Vec<Value> {
    let id = v.remove(0);
    v.push(id);
    v
}

impl SqlStore {
    /// Opens (and migrates) the database at `url`; `rules` must match the engine's.
    pub async fn open(url: &str, options: &OpenOptions, rules: Rules) -> Result<Self, OpenError> {
        let db = crate::open(url, options).await?;
        let backend = db.get_database_backend();
        Ok(SqlStore { db, backend, rules, specs: Default::default() })
    }

    /// The backend in use.
    pub fn backend(&self) -> DbBackend {
        self.backend
    }

    /// The connection (for tests and tools).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
        if self.backend == DbBackend::Postgres {
            let mut out = String::with_capacity(sql.len() + 16);
            let mut i = 0;
            for ch in sql.chars() {
                if ch == '?' {
                    i += 1;
                    out.push('$');
                    out.push_str(&i.to_string());
                } else {
                    out.push(ch);
                }
            }
            Statement::from_sql_and_values(self.backend, out, values)
        } else {
            Statement::from_sql_and_values(self.backend, sql, values)
        }
    }

    /// `column` is one of `items`: `column IN (?, ...)`, or on PostgreSQL `column = ANY(?)`
    /// with one array parameter, so the statement text is the same for any count (prepared
    /// once, planned for "a few rows").
    fn one_of<T: ToString>(&self, column: &str, items: &[T]) -> (String, Vec<Value>) {
        if self.backend == DbBackend::Postgres {
            let array = items.iter().map(|i| Value::String(Some(i.to_string()))).collect();
            (
                format!("{column} = ANY(?)"),
                vec![Value::Array(sea_orm::sea_query::ArrayType::String, Some(Box::new(array)))],
            )
        } else {
            let (list, values) = in_list(items);
            (format!("{column} IN ({list})"), values)
        }
    }

    fn lock(&self) -> &'static str {
        if self.backend == DbBackend::Sqlite { "" } else { " FOR UPDATE" }
    }

    async fn all(&self, c: &impl ConnectionTrait, sql: &str, v: Vec<Value>) -> Result<Vec<QueryResult>, StoreError> {
        c.query_all_raw(self.stmt(sql, v)).await.map_err(backend_err)
    }

    async fn one(&self, c: &impl ConnectionTrait, sql: &str, v: Vec<Value>) -> Result<Option<QueryResult>, StoreError> {
        c.query_one_raw(self.stmt(sql, v)).await.map_err(backend_err)
    }

    async fn exec(&self, c: &impl ConnectionTrait, sql: &str, v: Vec<Value>) -> Result<u64, StoreError> {
        c.execute_raw(self.stmt(sql, v)).await.map(|r| r.rows_affected()).map_err(backend_err)
    }

    async fn begin(&self) -> Result<DatabaseTransaction, StoreError> {
        // SQLite: take the write lock up front. MySQL: READ COMMITTED, so rows a locking scan
        // examines but rejects are unlocked at once (InnoDB's default keeps them locked).
        let options = TransactionOptions {
            sqlite_transaction_mode: (self.backend == DbBackend::Sqlite).then_some(SqliteTransactionMode::Immediate),
            isolation_level: (self.backend == DbBackend::MySql).then_some(IsolationLevel::ReadCommitted),
            ..Default::default()
        };
        self.db.begin_with_options(options).await.map_err(backend_err)
    }

    async fn insert_rows(
        &self,
        c: &impl ConnectionTrait,
        table: &str,
        columns: &str,
        rows: Vec<Vec<Value>>,
    ) -> Result<(), StoreError> {
        let width = columns.split(',').count();
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Vec<Value>> = rows.by_ref().take(CHUNK).collect();
            let tuples = vec![format!("({})", placeholders(width)); chunk.len()].join(", ");
            let sql = format!("INSERT INTO {table} ({columns}) VALUES {tuples}");
            self.exec(c, &sql, chunk.into_iter().flatten().collect()).await?;
        }
        Ok(())
    }

    // ----- loading -----

    async fn batch_row(
        &self,
        c: &impl ConnectionTrait,
        id: BatchId,
        lock: bool,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM maas_batches WHERE id = ?{}",
            rows::BATCH_HEAD_COLUMNS,
            if lock { self.lock() } else { "" }
        );
        match self.one(c, &sql, vec![s(id)]).await? {
            Some(row) => Ok(Some(self.batch_of(c, &row).await?)),
            None => Ok(None),
        }
    }

    /// A batch from a head row, its spec from the cache (specs never change) or read once.
    async fn batch_of(&self, c: &impl ConnectionTrait, row: &QueryResult) -> Result<BatchRecord, StoreError> {
        let id: String = col(row, "id")?;
        let cached = self.specs.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned();
        let spec = match cached {
            Some(spec) => spec,
            None => {
                let spec_row = self.one(c, "SELECT spec FROM maas_batches WHERE id = ?", vec![s(&id)]).await?;
                let spec = Arc::new(rows::spec(&spec_row.ok_or_else(|| StoreError::not_found("batch", &id))?)?);
                let mut cache = self.specs.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= SPEC_CACHE {
                    cache.clear();
                }
                cache.insert(id, spec.clone());
                spec
            }
        };
        rows::batch(row, spec)
    }

    async fn batches_of(
        &self,
        c: &impl ConnectionTrait,
        rows: Vec<QueryResult>,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.batch_of(c, row).await?);
        }
        Ok(out)
    }

    async fn run_row(&self, c: &impl ConnectionTrait, id: HostRunId) -> Result<HostRunRecord, StoreError> {
        let sql = format!("SELECT * FROM maas_host_runs WHERE id = ?{}", self.lock());
        let row = self.one(c, &sql, vec![s(id)]).await?.ok_or_else(|| StoreError::not_found("host run", id))?;
        rows::run(&row)
    }

    async fn job_row(&self, c: &impl ConnectionTrait, id: JobId, lock: bool) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT * FROM maas_jobs WHERE id = ?{}", if lock { self.lock() } else { "" });
        self.one(c, &sql, vec![s(id)]).await?.map(|r| rows::job(&r)).transpose()
    }

    async fn job_at(
        &self,
        c: &impl ConnectionTrait,
        run: HostRunId,
        position: u32,
    ) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT * FROM maas_jobs WHERE host_run_id = ? AND position = ?{}", self.lock());
        self.one(c, &sql, vec![s(run), n(position)]).await?.map(|r| rows::job(&r)).transpose()
    }

    /// Changes one job: locks its host run, the job and the next job; decides on a batch
    /// row read without a lock; only if the decision changes the batch (a host run ends or
    /// starts) locks the batch, re-reads it and decides again. So chain advances and retries,
    /// the bulk of all completions, never queue on their batch's row. `decide` returns
    /// `None` for "nothing to do". Returns the job as decided.
    async fn job_change(
        &self,
        c: &impl ConnectionTrait,
        id: JobId,
        now: Timestamp,
        pending: &mut Vec<NewEvent>,
        decide: impl Fn(JobContext) -> Result<Option<Effects>, TransitionError>,
    ) -> Result<Result<Option<JobRecord>, TransitionError>, StoreError> {
        let peek = self.job_row(c, id, false).await?.ok_or_else(|| StoreError::not_found("job", id))?;
        let seen = self
            .batch_row(c, peek.batch_id, false)
            .await?
            .ok_or_else(|| StoreError::not_found("batch", peek.batch_id))?;
        let host_run = self.run_row(c, peek.host_run_id).await?;
        let job = self.job_row(c, id, true).await?.ok_or_else(|| StoreError::not_found("job", id))?;
        let next = self.job_at(c, job.host_run_id, job.position + 1).await?;
        let ctx = JobContext { batch: seen.clone(), host_run: host_run.clone(), job: job.clone(), next: next.clone() };
        let mut fx = match decide(ctx) {
            Ok(Some(fx)) => fx,
            Ok(None) => return Ok(Ok(None)),
            Err(e) => return Ok(Err(e)),
        };
        if fx.changes_batch(&seen) {
            let batch = self
                .batch_row(c, peek.batch_id, true)
                .await?
                .ok_or_else(|| StoreError::not_found("batch", peek.batch_id))?;
            fx = match decide(JobContext { batch, host_run, job, next }) {
                Ok(Some(fx)) => fx,
                Ok(None) => return Ok(Ok(None)),
                Err(e) => return Ok(Err(e)),
            };
        } else {
            // Only `updated_at` would change: leave the batch row alone.
            fx.batch = None;
        }
        let decided = fx.jobs.first().cloned();
        self.apply(c, fx, now, pending).await?;
        Ok(Ok(decided))
    }

    // ----- writing -----

    async fn put_job(&self, c: &impl ConnectionTrait, j: &JobRecord) -> Result<(), StoreError> {
        let sql = format!("UPDATE maas_jobs SET {} WHERE id = ?", set_clause(rows::JOB_COLUMNS));
        self.exec(c, &sql, update_values(rows::job_values(j))).await.map(|_| ())
    }

    async fn put_run(&self, c: &impl ConnectionTrait, r: &HostRunRecord) -> Result<(), StoreError> {
        let sql = format!("UPDATE maas_host_runs SET {} WHERE id = ?", set_clause(rows::RUN_COLUMNS));
        self.exec(c, &sql, update_values(rows::run_values(r))).await.map(|_| ())
    }

    /// Writes a batch's mutable columns (the spec never changes after submission).
    async fn put_batch(&self, c: &impl ConnectionTrait, b: &BatchRecord) -> Result<(), StoreError> {
        let sql = format!("UPDATE maas_batches SET {} WHERE id = ?", rows::BATCH_STATE_SET);
        self.exec(c, &sql, rows::batch_state_values(b)).await.map(|_| ())
    }

    /// Overwrites many rows of `table` in one statement per chunk, each only if its `guard`
    /// columns still hold the values the caller read (its state, its attempt): `rows` are
    /// (all column values in `columns` order, the id first; the guard values). Returns how
    /// many rows were written.
    async fn set_rows(
        &self,
        c: &impl ConnectionTrait,
        table: &str,
        columns: &str,
        guard: &[&str],
        rows: Vec<(Vec<Value>, Vec<Value>)>,
    ) -> Result<u64, StoreError> {
        let columns: Vec<&str> = columns.split(',').map(str::trim).collect();
        let names: Vec<String> =
            columns.iter().map(|c| c.to_string()).chain(guard.iter().map(|g| format!("was_{g}"))).collect();
        let set =
            |prefix: &str| columns[1..].iter().map(|c| format!("{prefix}{c} = v.{c}")).collect::<Vec<_>>().join(", ");
        let guarded = guard.iter().map(|g| format!(" AND {table}.{g} = v.was_{g}")).collect::<String>();
        let width = names.len();
        if self.backend == DbBackend::Postgres {
            // One JSON parameter whatever the row count: one statement text (prepared once),
            // a small Bind, and nulls as they are.
            let Some((first, first_guard)) = rows.first() else { return Ok(0) };
            let types: Vec<String> = names
                .iter()
                .zip(first.iter().chain(first_guard))
                .map(|(name, v)| format!("{name} {}", rows::pg_type(v)))
                .collect();
            let mut records = Vec::with_capacity(rows.len());
            for (v, g) in &rows {
                let mut fields = serde_json::Map::with_capacity(width);
                for (name, value) in names.iter().zip(v.iter().chain(g)) {
                    fields.insert(name.clone(), rows::json_value(value)?);
                }
                records.push(serde_json::Value::Object(fields));
            }
            let sql = format!(
                "UPDATE {table} SET {} FROM json_to_recordset(CAST(? AS json)) AS v({}) WHERE {table}.id = v.id{guarded}",
                set(""),
                types.join(", ")
            );
            return self.exec(c, &sql, vec![s(serde_json::Value::Array(records))]).await;
        }
        let mut written = 0;
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<(Vec<Value>, Vec<Value>)> = rows.by_ref().take(CHUNK).collect();
            let k = chunk.len();
            let sql = if self.backend == DbBackend::MySql {
                // MariaDB has no column list on a CTE of VALUES: a derived table of SELECTs.
                let first = names.iter().map(|c| format!("? AS {c}")).collect::<Vec<_>>().join(", ");
                let rest = format!(" UNION ALL SELECT {}", placeholders(width)).repeat(k - 1);
                format!(
                    "UPDATE {table} JOIN (SELECT {first}{rest}) v ON {table}.id = v.id SET {} WHERE 1 = 1{guarded}",
                    set(&format!("{table}."))
                )
            } else {
                let tuples = vec![format!("({})", placeholders(width)); k].join(", ");
                format!(
                    "WITH v ({}) AS (VALUES {tuples}) UPDATE {table} SET {} FROM v WHERE {table}.id = v.id{guarded}",
                    names.join(", "),
                    set("")
                )
            };
            let values = chunk.into_iter().flat_map(|(mut v, g)| {
                v.extend(g);
                v
            });
            written += self.exec(c, &sql, values.collect()).await?;
        }
        Ok(written)
    }

    /// Appends events with seqs taken from the counter row, whose lock orders them by commit.
    async fn append_events(&self, c: &impl ConnectionTrait, events: Vec<NewEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let k = events.len() as i64;
        let row = if self.backend == DbBackend::MySql {
            self.exec(c, "UPDATE maas_outbox_seq SET seq = seq + ? WHERE id = 1", vec![n(k)]).await?;
            self.one(c, "SELECT seq FROM maas_outbox_seq WHERE id = 1", vec![]).await?
        } else {
            self.one(c, "UPDATE maas_outbox_seq SET seq = seq + ? WHERE id = 1 RETURNING seq", vec![n(k)]).await?
        };
        let last: i64 = row.map(|r| col(&r, "seq")).transpose()?.unwrap_or(k);
        let rows = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| vec![n(last - k + 1 + i as i64), s(e.batch_id), t(e.at), s(rows::to_json(&e.kind))])
            .collect();
        self.insert_rows(c, "maas_events", "seq, batch_id, at, kind", rows).await
    }

    /// `Effects::cancel_jobs_of`: the unfinished jobs of `runs` become cancelled now.
    async fn cancel_jobs_of(
        &self,
        c: &impl ConnectionTrait,
        runs: &[HostRunId],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        for ids in runs.chunks(CHUNK) {
            // maas-core's `cancel_unfinished`, as one statement.
            let sql = format!(
                "UPDATE maas_jobs SET state = ?, finished_at = ? WHERE host_run_id IN ({}) AND state IN ({})",
                placeholders(ids.len()),
                placeholders(machine::CANCELLABLE.len())
            );
            let mut v = vec![s(JobState::Cancelled.as_str()), t(now)];
            v.extend(ids.iter().map(s));
            v.extend(machine::CANCELLABLE.iter().map(|st| s(st.as_str())));
            self.exec(c, &sql, v).await?;
        }
        Ok(())
    }

    /// Writes a decision's effects through maas-core's [`ApplyEffects`] (which also starts
    /// the queued host runs the decision allows). Events go to `pending`: callers append
    /// them last, just before commit, so the outbox counter row (one lock every
    /// event-writing transaction takes) is always locked last and held only for the commit.
    async fn apply(
        &self,
        c: &impl ConnectionTrait,
        fx: Effects,
        now: Timestamp,
        pending: &mut Vec<NewEvent>,
    ) -> Result<(), StoreError> {
        let mut apply = ApplyEffects::new(fx, now, &self.rules);
        while let Some(write) = apply.next_write() {
            match write {
                EffectWrite::PutJobs(jobs) => {
                    for j in &jobs {
                        self.put_job(c, j).await?;
                    }
                }
                EffectWrite::PutHostRuns(runs) => {
                    for r in &runs {
                        self.put_run(c, r).await?;
                    }
                }
                EffectWrite::CancelUnfinishedJobsOf(runs) => self.cancel_jobs_of(c, &runs, now).await?,
                EffectWrite::ReleaseClaims(hosts) => self.release_claims(c, &hosts).await?,
                EffectWrite::AppendEvents(mut events) => pending.append(&mut events),
                EffectWrite::AppendAudit(entries) => self.insert_audit(c, &entries).await?,
                EffectWrite::PutBatch(batch) => self.put_batch(c, &batch).await?,
                EffectWrite::LoadQueued { batch, count } => {
                    let sql = format!(
                        "SELECT * FROM maas_host_runs WHERE batch_id = ? AND state = ? ORDER BY ordinal LIMIT ?{}",
                        self.lock()
                    );
                    let v = vec![s(batch), s(HostRunState::Queued.as_str()), n(count)];
                    let queued = self.all(c, &sql, v).await?;
                    let mut pairs = Vec::with_capacity(queued.len());
                    for row in &queued {
                        let run = rows::run(row)?;
                        let head = self
                            .job_at(c, run.id, 0)
                            .await?
                            .ok_or_else(|| StoreError::not_found("head job of", run.id))?;
                        pairs.push((run, head));
                    }
                    apply.queued_loaded(pairs)?;
                }
            }
        }
        Ok(())
    }

    /// Deletes the claims on `hosts` (chunked `IN` lists).
    async fn release_claims(&self, c: &impl ConnectionTrait, hosts: &[Hostname]) -> Result<(), StoreError> {
        for hosts in hosts.chunks(CHUNK) {
            let sql = format!("DELETE FROM maas_claims WHERE hostname IN ({})", placeholders(hosts.len()));
            self.exec(c, &sql, hosts.iter().map(s).collect()).await?;
        }
        Ok(())
    }

    /// Active claims on any of `hosts` (chunked `IN` lists).
    async fn claims_of(&self, c: &impl ConnectionTrait, hosts: &[Hostname]) -> Result<Vec<Claim>, StoreError> {
        let mut out = Vec::new();
        for chunk in hosts.chunks(CHUNK) {
            let sql = format!("SELECT * FROM maas_claims WHERE hostname IN ({})", placeholders(chunk.len()));
            for row in self.all(c, &sql, chunk.iter().map(s).collect()).await? {
                out.push(rows::claim(&row)?);
            }
        }
        Ok(out)
    }

    async fn conflicts(&self, c: &impl ConnectionTrait, hosts: &[Hostname]) -> Result<Vec<Conflict>, StoreError> {
        let mut out: Vec<Conflict> = self
            .claims_of(c, hosts)
            .await?
            .into_iter()
            .map(|claim| Conflict { host: claim.hostname, held_by: claim.batch_id })
            .collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        Ok(out)
    }

    async fn find_by_key(
        &self,
        c: &impl ConnectionTrait,
        submitter: &str,
        key: &str,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM maas_batches WHERE submitter = ? AND idempotency_key = ?",
            rows::BATCH_HEAD_COLUMNS
        );
        match self.one(c, &sql, vec![s(submitter), s(key)]).await? {
            Some(row) => Ok(Some(self.batch_of(c, &row).await?)),
            None => Ok(None),
        }
    }

    /// Appends audit entries (their ids come from the table's sequence).
    pub(crate) async fn insert_audit(
        &self,
        c: &impl ConnectionTrait,
        entries: &[AuditRecord],
    ) -> Result<(), StoreError> {
        self.insert_rows(
            c,
            "maas_audit_log",
            rows::AUDIT_INSERT_COLUMNS,
            entries.iter().map(rows::audit_values).collect(),
        )
        .await
    }

    /// Inserts every row of a new batch; fails on any unique violation (caller sorts it out).
    async fn insert_batch(&self, c: &impl ConnectionTrait, nb: &machine::NewBatch) -> Result<(), StoreError> {
        self.insert_rows(c, "maas_batches", rows::BATCH_COLUMNS, vec![rows::batch_values(&nb.batch)]).await?;
        let claims =
            nb.claims.iter().map(|cl| vec![s(&cl.hostname), s(cl.batch_id), s(cl.host_run_id), t(cl.since)]).collect();
        self.insert_rows(c, "maas_claims", "hostname, batch_id, host_run_id, since", claims).await?;
        self.insert_rows(c, "maas_host_runs", rows::RUN_COLUMNS, nb.host_runs.iter().map(rows::run_values).collect())
            .await?;
        self.insert_rows(c, "maas_jobs", rows::JOB_COLUMNS, nb.jobs.iter().map(rows::job_values).collect()).await?;
        self.insert_audit(c, std::slice::from_ref(&nb.audit)).await?;
        // Events last: the outbox counter row is locked only until the commit.
        self.append_events(c, nb.events.clone()).await
    }

    /// Inserts a row or updates it on a key conflict. In `update` expressions, `NEW(col)`
    /// stands for the value being inserted.
    async fn upsert(
        &self,
        c: &impl ConnectionTrait,
        table: &str,
        key: &str,
        columns: &[&str],
        values: Vec<Value>,
        update: &[(&str, String)],
    ) -> Result<(), StoreError> {
        let mysql = self.backend == DbBackend::MySql;
        let sets: Vec<String> = update
            .iter()
            .map(|(col, expr)| {
                let mut e = expr.clone();
                for c in columns {
                    let new = if mysql { format!("VALUES({c})") } else { format!("excluded.{c}") };
                    e = e.replace(&format!("NEW({c})"), &new);
                }
                format!("{col} = {e}")
            })
            .collect();
        let head = format!("INSERT INTO {table} ({}) VALUES ({})", columns.join(", "), placeholders(columns.len()));
        let sql = if mysql {
            format!("{head} ON DUPLICATE KEY UPDATE {}", sets.join(", "))
        } else {
            format!("{head} ON CONFLICT ({key}) DO UPDATE SET {}", sets.join(", "))
        };
        self.exec(c, &sql, values).await.map(|_| ())
    }

    async fn ticket_find(&self, kind: &str, batch: BatchId, host: &str) -> Result<Option<String>, StoreError> {
        let found = entity::tickets::Entity::find()
            .filter(entity::tickets::Column::Kind.eq(kind))
            .filter(entity::tickets::Column::BatchId.eq(batch.to_string()))
            .filter(entity::tickets::Column::Host.eq(host))
            .one(&self.db)
            .await
            .map_err(backend_err)?;
        Ok(found.map(|t| rows::ticket_id(t.id)))
    }

    fn greatest(&self) -> &'static str {
        if self.backend == DbBackend::Sqlite { "MAX" } else { "GREATEST" }
    }
}

fn site_entry(m: &mut BTreeMap<String, SiteActivity>, site: String) -> Result<&mut SiteActivity, StoreError> {
    let parsed: Site = site.parse().map_err(|e| rows::corrupt("site", e))?;
    Ok(m.entry(site).or_insert(SiteActivity::idle(parsed)))
}

fn in_list<T: ToString>(items: &[T]) -> (String, Vec<Value>) {
    (placeholders(items.len()), items.iter().map(|i| s(i.to_string())).collect())
}
