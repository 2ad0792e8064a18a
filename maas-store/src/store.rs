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

use async_trait::async_trait;
use maas_core::effects::{ApplyEffects, EffectWrite};
use maas_core::host::{Host, HostState};
use maas_core::id::{BatchId, HostRunId, JobId};
use maas_core::machine::{self, Effects, Expiry, JobContext, Rules, TransitionError};
use maas_core::model::*;
use maas_core::names::{Hostname, Pool, Site};
use maas_core::overlap::Conflict;
use maas_core::plan::StepKind;
use maas_core::policy::leader::{self, LeaderLease};
use maas_core::ports::inventory::{HostFilter, Inventory};
use maas_core::ports::services::Ticket;
use maas_core::ports::store::*;
use maas_core::time::Timestamp;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, IsolationLevel, QueryResult,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait, Value,
};

use crate::errors::{backend as backend_err, is_unique_violation, transient};
use crate::rows::{self, col, n, os, s, t};
use crate::{OpenError, OpenOptions, entity};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

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

    /// Inserts every row of a new batch; fails on any unique violation (caller sorts it out).
    async fn insert_batch(&self, c: &impl ConnectionTrait, nb: &machine::NewBatch) -> Result<(), StoreError> {
        self.insert_rows(c, "maas_batches", rows::BATCH_COLUMNS, vec![rows::batch_values(&nb.batch)]).await?;
        let claims =
            nb.claims.iter().map(|cl| vec![s(&cl.hostname), s(cl.batch_id), s(cl.host_run_id), t(cl.since)]).collect();
        self.insert_rows(c, "maas_claims", "hostname, batch_id, host_run_id, since", claims).await?;
        self.insert_rows(c, "maas_host_runs", rows::RUN_COLUMNS, nb.host_runs.iter().map(rows::run_values).collect())
            .await?;
        self.insert_rows(c, "maas_jobs", rows::JOB_COLUMNS, nb.jobs.iter().map(rows::job_values).collect()).await?;
        let a = &nb.audit;
        let audit = vec![
            t(a.at),
            s(&a.principal),
            s(a.batch_id),
            s(rows::to_json(&a.action)),
            n(a.host_count),
            s(&a.hosts),
            os(a.force_reason.as_ref()),
            os(a.comment.as_ref()),
        ];
        self.insert_rows(
            c,
            "maas_audit",
            "at, principal, batch_id, action, host_count, hosts, force_reason, comment",
            vec![audit],
        )
        .await?;
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

#[async_trait]
impl Store for SqlStore {
    async fn audit_list(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let mut q = entity::audit::Entity::find().order_by_desc(entity::audit::Column::Id);
        if limit > 0 {
            q = q.limit(limit as u64);
        }
        q.all(&self.db).await.map_err(backend_err)?.into_iter().map(rows::audit).collect()
    }

    async fn batch_cancel(&self, p: BatchCancelParams) -> Result<BatchRecord, StoreError> {
        write_txn!(self, c, {
            let batch =
                self.batch_row(c, p.batch_id, true).await?.ok_or_else(|| StoreError::not_found("batch", p.batch_id))?;
            let sql = format!(
                "SELECT * FROM maas_host_runs WHERE batch_id = ? AND state IN ('queued', 'running') ORDER BY ordinal{}",
                self.lock()
            );
            let mut runs = Vec::new();
            for row in self.all(c, &sql, vec![s(p.batch_id)]).await? {
                let run = rows::run(&row)?;
                let current = self.job_at(c, run.id, run.step).await?;
                runs.push((run, current));
            }
            let fx = machine::decide_cancel(batch, runs, &p.principal, &p.reason, p.now)?;
            let mut pending = Vec::new();
            self.apply(c, fx, p.now, &mut pending).await?;
            self.append_events(c, pending).await?;
            self.batch_row(c, p.batch_id, false).await?.ok_or_else(|| StoreError::not_found("batch", p.batch_id))
        })
    }

    async fn batch_find_by_key(&self, submitter: &str, key: &str) -> Result<Option<BatchRecord>, StoreError> {
        self.find_by_key(&self.db, submitter, key).await
    }

    async fn batch_get(&self, id: BatchId) -> Result<Option<BatchRecord>, StoreError> {
        self.batch_row(&self.db, id, false).await
    }

    async fn batch_list(&self, p: BatchListParams) -> Result<Vec<BatchRecord>, StoreError> {
        let mut sql = format!("SELECT {} FROM maas_batches WHERE 1 = 1", rows::BATCH_HEAD_COLUMNS);
        let mut v = Vec::new();
        if let Some(before) = p.before {
            sql.push_str(" AND id < ?");
            v.push(s(before));
        }
        if let Some(sub) = &p.submitter {
            sql.push_str(" AND submitter = ?");
            v.push(s(sub));
        }
        if !p.states.is_empty() {
            sql.push_str(&format!(" AND state IN ({})", placeholders(p.states.len())));
            v.extend(p.states.iter().map(|st| s(st.as_str())));
        }
        if let Some(a) = p.action {
            sql.push_str(" AND action = ?");
            v.push(s(rows::enum_str(&a)));
        }
        if let Some(from) = p.created_from {
            sql.push_str(" AND created_at >= ?");
            v.push(t(from));
        }
        if let Some(until) = p.created_until {
            sql.push_str(" AND created_at < ?");
            v.push(t(until));
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        v.push(n(if p.limit == 0 { 100 } else { p.limit as i64 }));
        let rows = self.all(&self.db, &sql, v).await?;
        self.batches_of(&self.db, rows).await
    }

    async fn batch_purge_finished(&self, p: PurgeParams) -> Result<PurgeReport, StoreError> {
        let limit = if p.limit == 0 { 100 } else { p.limit as i64 };
        let rows = self
            .all(
                &self.db,
                "SELECT id FROM maas_batches WHERE state IN ('completed', 'cancelled') AND finished_at < ? ORDER BY finished_at LIMIT ?",
                vec![t(p.finished_before), n(limit)],
            )
            .await?;
        let ids: Vec<String> = rows.iter().map(|r| col::<String>(r, "id")).collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(PurgeReport::default());
        }
        // Bounded transactions: a batch's host runs and their jobs go PURGE_RUNS host runs
        // at a time; its events and its row go last, so an interrupted purge leaves a
        // finished batch that the next purge picks up again.
        let mut report = PurgeReport::default();
        for id in &ids {
            loop {
                let chunk = self
                    .all(
                        &self.db,
                        "SELECT id FROM maas_host_runs WHERE batch_id = ? ORDER BY ordinal LIMIT ?",
                        vec![s(id), n(PURGE_RUNS as i64)],
                    )
                    .await?;
                if chunk.is_empty() {
                    break;
                }
                let runs: Vec<String> = chunk.iter().map(|r| col::<String>(r, "id")).collect::<Result<_, _>>()?;
                let (jobs, gone) = write_txn!(self, c, {
                    let (list, v) = in_list(&runs);
                    let jobs = self
                        .exec(c, &format!("DELETE FROM maas_jobs WHERE host_run_id IN ({list})"), v.clone())
                        .await?;
                    let gone = self.exec(c, &format!("DELETE FROM maas_host_runs WHERE id IN ({list})"), v).await?;
                    Ok((jobs, gone))
                })?;
                report.jobs += jobs as usize;
                report.host_runs += gone as usize;
            }
            let (events, batches) = write_txn!(self, c, {
                let events = self
                    .exec(
                        c,
                        "DELETE FROM maas_events WHERE batch_id = ? AND seq <= ?",
                        vec![s(id), n(p.events_through as i64)],
                    )
                    .await?;
                let batches = self.exec(c, "DELETE FROM maas_batches WHERE id = ?", vec![s(id)]).await?;
                Ok((events, batches))
            })?;
            report.events += events as usize;
            report.batches += batches as usize;
        }
        Ok(report)
    }

    async fn batch_set_paused(&self, p: BatchSetPausedParams) -> Result<BatchRecord, StoreError> {
        write_txn!(self, c, {
            let batch =
                self.batch_row(c, p.batch_id, true).await?.ok_or_else(|| StoreError::not_found("batch", p.batch_id))?;
            let fx = if p.paused {
                machine::decide_pause(batch, &p.principal, &p.reason, p.now)?
            } else {
                machine::decide_resume(batch, &p.principal, p.now)?
            };
            let mut pending = Vec::new();
            self.apply(c, fx, p.now, &mut pending).await?;
            self.append_events(c, pending).await?;
            self.batch_row(c, p.batch_id, false).await?.ok_or_else(|| StoreError::not_found("batch", p.batch_id))
        })
    }

    async fn batch_submit(&self, p: BatchSubmitParams) -> Result<BatchSubmitted, StoreError> {
        let nb = p.new_batch;
        let key = nb.batch.spec.idempotency_key.clone();
        let hosts: Vec<Hostname> = nb.claims.iter().map(|c| c.hostname.clone()).collect();
        for _ in 0..RETRIES {
            // The idempotent answer first: the same key always gets the same batch.
            if let Some(key) = &key
                && let Some(existing) = self.find_by_key(&self.db, &nb.batch.submitter, key).await?
            {
                if machine::idempotent_match(&existing, &nb.batch.spec) {
                    return Ok(BatchSubmitted { batch: existing, created: false });
                }
                return Err(StoreError::IdempotencyKeyReused { key: key.clone(), batch: existing.id });
            }
            let result: Result<(), StoreError> = write_txn!(self, c, { self.insert_batch(c, &nb).await });
            match result {
                Ok(()) => return Ok(BatchSubmitted { batch: nb.batch.clone(), created: true }),
                Err(e) if is_unique_violation(&e) => {
                    // Rolled back whole. Say who holds the hosts (or loop: the key's batch
                    // appeared, or the holders finished meanwhile).
                    let conflicts = self.conflicts(&self.db, &hosts).await?;
                    if !conflicts.is_empty() {
                        return Err(StoreError::Overlap { conflicts });
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Backend {
            message: "batch_submit kept racing other submitters; try again".into(),
            source: None,
        })
    }

    async fn claim_get_many(&self, hosts: &[Hostname]) -> Result<Vec<Claim>, StoreError> {
        self.claims_of(&self.db, hosts).await
    }

    async fn event_cursor_get(&self, consumer: &str) -> Result<u64, StoreError> {
        let row = self.one(&self.db, "SELECT seq FROM maas_cursors WHERE consumer = ?", vec![s(consumer)]).await?;
        Ok(row.map(|r| col::<i64>(&r, "seq")).transpose()?.unwrap_or(0) as u64)
    }

    async fn event_cursor_set(&self, consumer: &str, seq: u64) -> Result<(), StoreError> {
        let g = self.greatest();
        self.upsert(
            &self.db,
            "maas_cursors",
            "consumer",
            &["consumer", "seq"],
            vec![s(consumer), n(seq as i64)],
            &[("seq", format!("{g}(maas_cursors.seq, NEW(seq))"))],
        )
        .await
    }

    async fn event_list(&self, p: EventListParams) -> Result<Vec<Event>, StoreError> {
        let limit = if p.limit == 0 { 1000 } else { p.limit as i64 };
        let rows = match p.batch_id {
            Some(b) => {
                self.all(
                    &self.db,
                    "SELECT * FROM maas_events WHERE seq > ? AND batch_id = ? ORDER BY seq LIMIT ?",
                    vec![n(p.after as i64), s(b), n(limit)],
                )
                .await?
            }
            None => {
                self.all(
                    &self.db,
                    "SELECT * FROM maas_events WHERE seq > ? ORDER BY seq LIMIT ?",
                    vec![n(p.after as i64), n(limit)],
                )
                .await?
            }
        };
        rows.iter().map(rows::event).collect()
    }

    async fn host_run_flag_straggler(&self, p: StragglerFlagParams) -> Result<bool, StoreError> {
        write_txn!(self, c, {
            // A flag changes the host run only (no batch lock), in the completions' order:
            // host run, then job; its event is appended last.
            let run = self.run_row(c, p.host_run_id).await?;
            let Some(job) = self.job_at(c, run.id, p.position).await? else { return Ok(false) };
            match machine::decide_straggler(run, p.position, job.kind, p.now) {
                Some(fx) => {
                    let mut pending = Vec::new();
                    self.apply(c, fx, p.now, &mut pending).await?;
                    self.append_events(c, pending).await?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    async fn host_run_list(&self, p: HostRunListParams) -> Result<Vec<HostRunRecord>, StoreError> {
        let mut sql = String::from("SELECT * FROM maas_host_runs WHERE 1 = 1");
        let mut v = Vec::new();
        if let Some(b) = p.batch_id {
            sql.push_str(" AND batch_id = ?");
            v.push(s(b));
        }
        if !p.hostnames.is_empty() {
            sql.push_str(&format!(" AND hostname IN ({})", placeholders(p.hostnames.len())));
            v.extend(p.hostnames.iter().map(s));
        }
        if !p.states.is_empty() {
            sql.push_str(&format!(" AND state IN ({})", placeholders(p.states.len())));
            v.extend(p.states.iter().map(|st| s(st.as_str())));
        }
        sql.push_str(" ORDER BY batch_id, ordinal");
        self.all(&self.db, &sql, v).await?.iter().map(rows::run).collect()
    }

    async fn job_claim(&self, p: JobClaimParams) -> Result<Vec<JobRecord>, StoreError> {
        if p.kinds.is_empty() || p.limit == 0 {
            return Ok(Vec::new());
        }
        let grant = machine::LeaseGrant::new(&p.owner, p.now, p.lease);
        let kinds: Vec<&str> = p.kinds.iter().map(|k| k.as_str()).collect();
        let kind_list = placeholders(kinds.len());
        // What the lease writes (`LeaseGrant`), as SQL: owner, expiry, start, attempt + 1.
        let set = "state = ?, attempt = attempt + 1, lease_owner = ?, lease_expires_at = ?, started_at = ?";
        let set_values =
            || vec![s(machine::LeaseGrant::TO.as_str()), s(&grant.owner), t(grant.expires_at), t(grant.started_at)];
        // A literal, not a parameter: the partial claim index's predicate must be provable
        // from the statement text for a generic (cached) plan to use it.
        let from = machine::LeaseGrant::FROM.as_str();
        let mut filter = vec![s(&p.site)];
        filter.extend(kinds.iter().map(s));
        filter.push(t(p.now));
        filter.push(n(p.limit as i64));
        let mut jobs = match self.backend {
            // One statement: the fenced CTE picks and locks (skipping rows other claimers
            // hold), the UPDATE leases them and returns the leased rows.
            DbBackend::Postgres => {
                let sql = format!(
                    "WITH picked AS MATERIALIZED (\
                        SELECT id FROM maas_jobs WHERE state = '{from}' AND site = ? AND kind IN ({kind_list}) AND run_at <= ? \
                        ORDER BY queue_key, id LIMIT ? FOR UPDATE SKIP LOCKED) \
                     UPDATE maas_jobs SET {set} FROM picked WHERE maas_jobs.id = picked.id RETURNING maas_jobs.*"
                );
                let mut v = filter;
                v.extend(set_values());
                // Parameters in text order: the CTE's, then the SET's.
                self.all(&self.db, &sql, v).await?.iter().map(rows::job).collect::<Result<Vec<_>, _>>()?
            }
            // One statement under the database write lock (writers are serialised).
            DbBackend::Sqlite => {
                let sql = format!(
                    "UPDATE maas_jobs SET {set} WHERE id IN (\
                        SELECT id FROM maas_jobs WHERE state = '{from}' AND site = ? AND kind IN ({kind_list}) AND run_at <= ? \
                        ORDER BY queue_key, id LIMIT ?) RETURNING *"
                );
                let mut v = set_values();
                v.extend(filter);
                self.all(&self.db, &sql, v).await?.iter().map(rows::job).collect::<Result<Vec<_>, _>>()?
            }
            // MySQL/MariaDB have no UPDATE ... RETURNING: lock with SKIP LOCKED, lease the
            // locked ids in one UPDATE, and build the records from the rows read.
            _ => write_txn!(self, c, {
                let sql = format!(
                    "SELECT * FROM maas_jobs WHERE ready_site = ? AND kind IN ({kind_list}) AND run_at <= ? \
                     ORDER BY queue_key, id LIMIT ? FOR UPDATE SKIP LOCKED"
                );
                let mut picked = Vec::new();
                for row in self.all(c, &sql, filter.clone()).await? {
                    let mut job = rows::job(&row)?;
                    grant.apply(&mut job)?;
                    picked.push(job);
                }
                if !picked.is_empty() {
                    let (list, ids) = in_list(&picked.iter().map(|j| j.id).collect::<Vec<_>>());
                    let mut v = set_values();
                    v.extend(ids);
                    let sql = format!("UPDATE maas_jobs SET {set} WHERE id IN ({list}) AND state = '{from}'");
                    let leased = self.exec(c, &sql, v).await?;
                    if leased != picked.len() as u64 {
                        return Err(rows::corrupt("claim", format!("leased {leased} of {} locked jobs", picked.len())));
                    }
                }
                Ok(picked)
            })?,
        };
        // RETURNING promises no order: hand jobs out in queue-key order.
        jobs.sort_by_key(|j| (j.key, j.id));
        Ok(jobs)
    }

    async fn job_complete_many(
        &self,
        p: JobCompleteManyParams,
    ) -> Result<Vec<Result<(), TransitionError>>, StoreError> {
        // One group is one transaction (its statement locks rows in id order). A longer call
        // is split in host-run order (one unlocked read), so concurrent calls take the
        // groups' locks in one order and rarely deadlock (and retry when they do).
        let mut order: Vec<usize> = (0..p.completions.len()).collect();
        if p.completions.len() > COMPLETION_GROUP {
            let ids: Vec<JobId> = p.completions.iter().map(|c| c.job_id).collect();
            let mut run_of: BTreeMap<JobId, HostRunId> = BTreeMap::new();
            for chunk in ids.chunks(CHUNK) {
                let (list, v) = in_list(chunk);
                let sql = format!("SELECT id, host_run_id FROM maas_jobs WHERE id IN ({list})");
                for row in self.all(&self.db, &sql, v).await? {
                    run_of.insert(rows::job_id(&row, "id")?, HostRunId(rows::job_id(&row, "host_run_id")?.0));
                }
            }
            let mut keyed = Vec::with_capacity(order.len());
            for i in order {
                let id = p.completions[i].job_id;
                keyed.push((*run_of.get(&id).ok_or_else(|| StoreError::not_found("job", id))?, i));
            }
            keyed.sort();
            order = keyed.into_iter().map(|(_, i)| i).collect();
        }
        let mut results: Vec<Option<Result<(), TransitionError>>> = vec![None; p.completions.len()];
        for group in order.chunks(COMPLETION_GROUP) {
            let group: Vec<(usize, &JobCompletion)> = group.iter().map(|i| (*i, &p.completions[*i])).collect();
            let decided = write_txn!(self, c, { self.complete_group(c, &group, p.now).await })?;
            for (i, r) in decided {
                results[i] = Some(r);
            }
        }
        Ok(results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect())
    }

    async fn job_heartbeat_many(&self, p: JobHeartbeatManyParams) -> Result<Vec<JobId>, StoreError> {
        if p.job_ids.is_empty() {
            return Ok(Vec::new());
        }
        write_txn!(self, c, {
            let mut held = Vec::new();
            for chunk in p.job_ids.chunks(CHUNK) {
                let (list, ids) = in_list(chunk);
                let mut v = vec![t(p.now.plus(p.lease))];
                v.extend(ids.clone());
                v.push(s(&p.owner));
                self.exec(
                    c,
                    &format!("UPDATE maas_jobs SET lease_expires_at = ? WHERE id IN ({list}) AND state = 'running' AND lease_owner = ?"),
                    v,
                )
                .await?;
                let mut v = ids;
                v.push(s(&p.owner));
                for row in self
                    .all(
                        c,
                        &format!(
                            "SELECT id FROM maas_jobs WHERE id IN ({list}) AND state = 'running' AND lease_owner = ?"
                        ),
                        v,
                    )
                    .await?
                {
                    held.push(rows::job_id(&row, "id")?);
                }
            }
            let order: BTreeMap<JobId, usize> = p.job_ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
            held.sort_by_key(|id| order.get(id).copied().unwrap_or(usize::MAX));
            Ok(held)
        })
    }

    async fn job_list(&self, p: JobListParams) -> Result<Vec<JobRecord>, StoreError> {
        let mut sql =
            String::from("SELECT j.* FROM maas_jobs j JOIN maas_host_runs r ON r.id = j.host_run_id WHERE 1 = 1");
        let mut v = Vec::new();
        if let Some(b) = p.batch_id {
            // Through the host runs' index: jobs are indexed by chain, not by batch.
            sql.push_str(" AND r.batch_id = ?");
            v.push(s(b));
        }
        if let Some(r) = p.host_run_id {
            sql.push_str(" AND j.host_run_id = ?");
            v.push(s(r));
        }
        if !p.states.is_empty() {
            sql.push_str(&format!(" AND j.state IN ({})", placeholders(p.states.len())));
            v.extend(p.states.iter().map(|st| s(st.as_str())));
        }
        sql.push_str(" ORDER BY r.batch_id, r.ordinal, j.position");
        self.all(&self.db, &sql, v).await?.iter().map(rows::job).collect()
    }

    async fn job_release_many(&self, p: JobReleaseParams) -> Result<Vec<JobId>, StoreError> {
        write_txn!(self, c, {
            let mut released = Vec::new();
            for (id, attempt) in &p.jobs {
                let Some(job) = self.job_row(c, *id, true).await? else { continue };
                if let Ok(job) = machine::hand_back(job, &p.owner, *attempt, p.now) {
                    self.put_job(c, &job).await?;
                    released.push(*id);
                }
            }
            Ok(released)
        })
    }

    async fn job_rescue_expired(&self, p: JobRescueParams) -> Result<RescueReport, StoreError> {
        let limit = if p.limit == 0 { i64::MAX } else { p.limit as i64 };
        let mut report = RescueReport::default();
        // Candidates by an indexed range scan on maas-core's `Expiry` (state, deadline);
        // each is decided by `Expiry::decide` under its host run's lock, which re-checks it.
        for expiry in Expiry::ALL {
            let done = (report.retried.len() + report.failed.len() + report.wait_expired.len()) as i64;
            let column = expiry_column(expiry);
            let sql =
                format!("SELECT id FROM maas_jobs WHERE state = ? AND {column} <= ? ORDER BY {column}, id LIMIT ?");
            let due = self.all(&self.db, &sql, vec![s(expiry.state().as_str()), t(p.now), n(limit - done)]).await?;
            for row in due {
                let id = rows::job_id(&row, "id")?;
                let decided: Option<JobRecord> = write_txn!(self, c, {
                    let mut pending = Vec::new();
                    let decided = self
                        .job_change(c, id, p.now, &mut pending, |ctx| expiry.decide(ctx, p.now, &self.rules))
                        .await?;
                    self.append_events(c, pending).await?;
                    Ok(decided?)
                })?;
                match (expiry, decided) {
                    (_, None) => {}
                    (Expiry::Wait, Some(_)) => report.wait_expired.push(id),
                    (Expiry::Lease, Some(j)) if j.state == JobState::Failed => report.failed.push(id),
                    (Expiry::Lease, Some(_)) => report.retried.push(id),
                }
            }
        }
        Ok(report)
    }

    async fn job_resolve_wait(&self, p: JobResolveWaitParams) -> Result<JobRecord, StoreError> {
        write_txn!(self, c, {
            let row = self.one(c, "SELECT id FROM maas_jobs WHERE wait_token = ?", vec![s(&p.token)]).await?;
            let row = row.ok_or(TransitionError::WrongToken)?;
            let id = rows::job_id(&row, "id")?;
            let mut pending = Vec::new();
            self.job_change(c, id, p.now, &mut pending, |ctx| {
                machine::decide_wait_result(ctx, &p.token, p.outcome.clone(), p.now, &self.rules).map(Some)
            })
            .await??;
            self.append_events(c, pending).await?;
            self.job_row(c, id, false).await?.ok_or_else(|| StoreError::not_found("job", id))
        })
    }

    async fn leader_attempt_elect(&self, p: LeaderElectParams) -> Result<bool, StoreError> {
        let result = write_txn!(self, c, {
            let sql = format!("SELECT * FROM maas_leaders WHERE name = ?{}", self.lock());
            let current = match self.one(c, &sql, vec![s(&p.name)]).await? {
                Some(row) => Some(LeaderLease {
                    owner: col(&row, "owner")?,
                    expires_at: Timestamp::from_millis(col(&row, "expires_at")?),
                }),
                None => None,
            };
            // maas-core decides; the row is written as decided.
            let Some(lease) = leader::elect(current.as_ref(), &p.owner, p.now, p.ttl) else { return Ok(false) };
            let v = vec![s(&lease.owner), t(lease.expires_at), s(&p.name)];
            if current.is_some() {
                self.exec(c, "UPDATE maas_leaders SET owner = ?, expires_at = ? WHERE name = ?", v).await?;
            } else {
                self.exec(c, "INSERT INTO maas_leaders (owner, expires_at, name) VALUES (?, ?, ?)", v).await?;
            }
            Ok(true)
        });
        match result {
            // Another candidate inserted the row first: it leads.
            Err(e) if is_unique_violation(&e) => Ok(false),
            other => other,
        }
    }

    async fn leader_resign(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.exec(&self.db, "DELETE FROM maas_leaders WHERE name = ? AND owner = ?", vec![s(name), s(owner)])
            .await
            .map(|_| ())
    }

    async fn pool_kinds_get(&self, pool: &Pool) -> Result<Option<Vec<StepKind>>, StoreError> {
        let found =
            entity::pool_kinds::Entity::find_by_id(pool.to_string()).one(&self.db).await.map_err(backend_err)?;
        found.map(|m| rows::json_in("kinds", &m.kinds)).transpose()
    }

    async fn pool_kinds_set(&self, pool: &Pool, kinds: &[StepKind]) -> Result<(), StoreError> {
        self.upsert(
            &self.db,
            "maas_pool_kinds",
            "pool",
            &["pool", "kinds"],
            vec![s(pool), s(rows::to_json(&kinds))],
            &[("kinds", "NEW(kinds)".into())],
        )
        .await
    }

    async fn stats_active(&self) -> Result<Vec<SiteActivity>, StoreError> {
        let mut by_site: BTreeMap<String, SiteActivity> = BTreeMap::new();
        let runs = self
            .all(
                &self.db,
                "SELECT site, COUNT(*) AS n FROM maas_host_runs WHERE state = 'running' GROUP BY site",
                vec![],
            )
            .await?;
        for r in runs {
            site_entry(&mut by_site, col(&r, "site")?)?.hosts_in_flight = col::<i64>(&r, "n")? as u32;
        }
        let jobs = self
            .all(
                &self.db,
                "SELECT site, state, COUNT(*) AS n FROM maas_jobs WHERE state IN ('available', 'running', 'waiting') GROUP BY site, state",
                vec![],
            )
            .await?;
        for r in jobs {
            let state: String = col(&r, "state")?;
            let count = col::<i64>(&r, "n")? as u32;
            let e = site_entry(&mut by_site, col(&r, "site")?)?;
            match state.as_str() {
                "available" => e.jobs_queued = count,
                "running" => e.jobs_running = count,
                _ => e.jobs_waiting = count,
            }
        }
        Ok(by_site.into_values().collect())
    }

    async fn stats_queues(&self) -> Result<Vec<QueueDepth>, StoreError> {
        let rows = self
            .all(
                &self.db,
                "SELECT site, kind, COUNT(*) AS n, MIN(enqueued_at) AS oldest FROM maas_jobs \
                 WHERE state = 'available' GROUP BY site, kind",
                vec![],
            )
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let site: String = col(r, "site")?;
                let kind: String = col(r, "kind")?;
                Ok(QueueDepth {
                    site: site.parse().map_err(|e| rows::corrupt("site", e))?,
                    kind: StepKind::parse(&kind)
                        .ok_or_else(|| rows::corrupt("kind", format!("unknown step {kind:?}")))?,
                    queued: col::<i64>(r, "n")? as u32,
                    oldest_enqueued_at: col::<Option<i64>>(r, "oldest")?.map(Timestamp::from_millis),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by(|a, b| (&a.site, a.kind).cmp(&(&b.site, b.kind)));
        Ok(out)
    }

    async fn stats_host_runs(&self, p: StatsParams) -> Result<Vec<HostRunSample>, StoreError> {
        let mut sql = String::from(
            "SELECT r.*, b.action AS batch_action FROM maas_host_runs r JOIN maas_batches b ON b.id = r.batch_id \
             WHERE r.started_at IS NOT NULL AND r.finished_at IS NOT NULL",
        );
        let mut v = Vec::new();
        if let Some(from) = p.finished_from {
            sql.push_str(" AND r.finished_at >= ?");
            v.push(t(from));
        }
        if let Some(until) = p.finished_until {
            sql.push_str(" AND r.finished_at < ?");
            v.push(t(until));
        }
        sql.push_str(" ORDER BY r.finished_at, r.batch_id");
        let mut out = Vec::new();
        for row in self.all(&self.db, &sql, v).await? {
            let r = rows::run(&row)?;
            let action: String = col(&row, "batch_action")?;
            out.push(HostRunSample {
                batch_id: r.batch_id,
                action: serde_json::from_value(serde_json::Value::String(action))
                    .map_err(|e| rows::corrupt("action", e))?,
                site: r.site,
                sku: r.sku,
                state: r.state,
                started_at: r.started_at.unwrap_or_default(),
                finished_at: r.finished_at.unwrap_or_default(),
            });
        }
        Ok(out)
    }

    async fn stats_steps(&self, p: StatsParams) -> Result<Vec<StepSample>, StoreError> {
        let mut sql = String::from(
            "SELECT j.*, r.sku AS run_sku, b.action AS batch_action FROM maas_jobs j \
             JOIN maas_host_runs r ON r.id = j.host_run_id JOIN maas_batches b ON b.id = j.batch_id \
             WHERE j.state = 'succeeded' AND j.finished_at IS NOT NULL",
        );
        let mut v = Vec::new();
        if let Some(from) = p.finished_from {
            sql.push_str(" AND j.finished_at >= ?");
            v.push(t(from));
        }
        if let Some(until) = p.finished_until {
            sql.push_str(" AND j.finished_at < ?");
            v.push(t(until));
        }
        let mut out = Vec::new();
        for row in self.all(&self.db, &sql, v).await? {
            let j = rows::job(&row)?;
            let began = if j.kind.is_wait() { j.enqueued_at } else { j.started_at };
            let (Some(started_at), Some(finished_at)) = (began, j.finished_at) else { continue };
            let action: String = col(&row, "batch_action")?;
            let sku: String = col(&row, "run_sku")?;
            out.push(StepSample {
                batch_id: j.batch_id,
                action: serde_json::from_value(serde_json::Value::String(action))
                    .map_err(|e| rows::corrupt("action", e))?,
                kind: j.kind,
                site: j.site,
                sku: sku.parse().map_err(|e| rows::corrupt("sku", e))?,
                started_at,
                finished_at,
            });
        }
        out.sort_by_key(|s| (s.finished_at, s.batch_id, s.kind));
        Ok(out)
    }

    async fn ticket_open(&self, ticket: Ticket) -> Result<(String, bool), StoreError> {
        let host = ticket.host.as_ref().map(|h| h.to_string()).unwrap_or_default();
        let kind = rows::enum_str(&ticket.kind);
        if let Some(id) = self.ticket_find(&kind, ticket.batch_id, &host).await? {
            return Ok((id, false));
        }
        let inserted = self
            .exec(
                &self.db,
                "INSERT INTO maas_tickets (kind, batch_id, host, step, summary, at) VALUES (?, ?, ?, ?, ?, ?)",
                vec![
                    s(&kind),
                    s(ticket.batch_id),
                    s(&host),
                    os(ticket.step.map(|k| k.as_str())),
                    s(&ticket.summary),
                    t(ticket.at),
                ],
            )
            .await;
        match inserted {
            Ok(_) => Ok((
                self.ticket_find(&kind, ticket.batch_id, &host)
                    .await?
                    .ok_or_else(|| StoreError::not_found("ticket", &kind))?,
                true,
            )),
            Err(e) if is_unique_violation(&e) => Ok((
                self.ticket_find(&kind, ticket.batch_id, &host)
                    .await?
                    .ok_or_else(|| StoreError::not_found("ticket", &kind))?,
                false,
            )),
            Err(e) => Err(e),
        }
    }

    async fn ticket_list(&self, limit: usize) -> Result<Vec<TicketRecord>, StoreError> {
        let mut q = entity::tickets::Entity::find().order_by_desc(entity::tickets::Column::Id);
        if limit > 0 {
            q = q.limit(limit as u64);
        }
        q.all(&self.db).await.map_err(backend_err)?.into_iter().map(rows::ticket).collect()
    }

    async fn worker_heartbeat(&self, p: WorkerHeartbeatParams) -> Result<(), StoreError> {
        let g = self.greatest();
        self.upsert(
            &self.db,
            "maas_workers",
            "id",
            &["id", "site", "pool", "started_at", "last_heartbeat"],
            vec![s(&p.id), s(&p.site), s(&p.pool), t(p.now), t(p.now)],
            &[
                ("site", "NEW(site)".into()),
                ("pool", "NEW(pool)".into()),
                ("last_heartbeat", format!("{g}(maas_workers.last_heartbeat, NEW(last_heartbeat))")),
            ],
        )
        .await
    }

    async fn worker_list(&self, p: WorkerListParams) -> Result<Vec<WorkerRecord>, StoreError> {
        use entity::workers::{Column, Entity};
        let mut q = Entity::find().order_by_asc(Column::Id);
        if let Some(site) = &p.site {
            q = q.filter(Column::Site.eq(site.as_str()));
        }
        if let Some(since) = p.fresh_since {
            q = q.filter(Column::LastHeartbeat.gte(since.as_millis()));
        }
        q.all(&self.db).await.map_err(backend_err)?.into_iter().map(rows::worker).collect()
    }
}

#[async_trait]
impl Inventory for SqlStore {
    async fn host_get_many(&self, names: &[Hostname]) -> Result<Vec<Host>, StoreError> {
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(CHUNK) {
            let sql = format!("SELECT * FROM maas_hosts WHERE hostname IN ({})", placeholders(chunk.len()));
            for row in self.all(&self.db, &sql, chunk.iter().map(s).collect()).await? {
                out.push(rows::host(&row)?);
            }
        }
        Ok(out)
    }

    async fn host_list(&self, f: HostFilter) -> Result<Vec<Host>, StoreError> {
        let mut sql = String::from("SELECT * FROM maas_hosts WHERE 1 = 1");
        let mut v = Vec::new();
        if let Some(site) = &f.site {
            sql.push_str(" AND site = ?");
            v.push(s(site));
        }
        if let Some(pool) = &f.pool {
            sql.push_str(" AND pool = ?");
            v.push(s(pool));
        }
        if let Some(state) = f.state {
            sql.push_str(" AND state = ?");
            v.push(s(rows::enum_str(&state)));
        }
        if let Some(after) = &f.after {
            sql.push_str(" AND hostname > ?");
            v.push(s(after));
        }
        sql.push_str(" ORDER BY hostname LIMIT ?");
        v.push(n(if f.limit == 0 { i64::MAX } else { f.limit as i64 }));
        self.all(&self.db, &sql, v).await?.iter().map(rows::host).collect()
    }

    async fn host_upsert_many(&self, hosts: Vec<Host>) -> Result<usize, StoreError> {
        let count = hosts.len();
        write_txn!(self, c, {
            for chunk in hosts.chunks(CHUNK) {
                let names: Vec<Hostname> = chunk.iter().map(|h| h.hostname.clone()).collect();
                let (list, v) = in_list(&names);
                self.exec(c, &format!("DELETE FROM maas_hosts WHERE hostname IN ({list})"), v).await?;
                // Last write wins within one call too.
                let mut last: BTreeMap<&Hostname, &Host> = BTreeMap::new();
                for h in chunk {
                    last.insert(&h.hostname, h);
                }
                self.insert_rows(
                    c,
                    "maas_hosts",
                    rows::HOST_COLUMNS,
                    last.values().map(|h| rows::host_values(h)).collect(),
                )
                .await?;
            }
            Ok(count)
        })
    }

    async fn host_set_state(&self, name: &Hostname, state: HostState) -> Result<(), StoreError> {
        write_txn!(self, c, {
            if self.one(c, "SELECT hostname FROM maas_hosts WHERE hostname = ?", vec![s(name)]).await?.is_none() {
                return Err(StoreError::not_found("host", name));
            }
            self.exec(c, "UPDATE maas_hosts SET state = ? WHERE hostname = ?", vec![s(rows::enum_str(&state)), s(name)])
                .await
                .map(|_| ())
        })
    }
}
