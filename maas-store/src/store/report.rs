//! `ReportStore` for SQL: batches, host runs and jobs, statistics, activity, tickets, the
//! audit trail and the worker registry, read-only.

use std::collections::BTreeMap;

use async_trait::async_trait;
use maas_core::id::BatchId;
use maas_core::model::*;
use maas_core::plan::StepKind;
use maas_core::ports::store::*;
use maas_core::time::Timestamp;

use crate::entity;
use crate::errors::backend as backend_err;
use crate::rows::{self, col, n, s, t};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::*;

#[async_trait]
impl ReportStore for SqlStore {
    async fn audit_list(&self, f: AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let mut sql = format!("SELECT id, {} FROM maas_audit_log WHERE 1 = 1", rows::AUDIT_INSERT_COLUMNS);
        let mut v = Vec::new();
        if let Some(p) = &f.principal {
            sql.push_str(" AND principal = ?");
            v.push(s(p));
        }
        if let Some(op) = f.op {
            sql.push_str(" AND op = ?");
            v.push(s(op.as_str()));
        }
        if let Some(b) = f.batch_id {
            sql.push_str(" AND batch_id = ?");
            v.push(s(b));
        }
        if let Some(from) = f.from {
            sql.push_str(" AND at >= ?");
            v.push(t(from));
        }
        if let Some(until) = f.until {
            sql.push_str(" AND at < ?");
            v.push(t(until));
        }
        // Entries keep hostlists (`web[001-100].dc1`), so a host is matched by
        // `AuditFilter::matches`; SQL narrows to entries holding the name's leading letters.
        if let Some(prefix) = f.host.as_ref().and_then(|h| literal_prefix(h.as_str())) {
            sql.push_str(" AND hosts LIKE ?");
            v.push(s(format!("%{prefix}%")));
        }
        let page = f.page_size();
        let scan = if f.host.is_some() { 500 } else { page };
        sql.push_str(" AND id < ? ORDER BY id DESC LIMIT ?");
        let mut out = Vec::new();
        let mut before = f.before_id.unwrap_or(i64::MAX as u64);
        loop {
            let mut values = v.clone();
            values.push(n(before.min(i64::MAX as u64) as i64));
            values.push(n(scan as i64));
            let found = self.all(&self.db, &sql, values).await?;
            let exhausted = found.len() < scan;
            for row in &found {
                let rec = rows::audit(row)?;
                before = rec.id;
                if f.matches(&rec) {
                    out.push(rec);
                    if out.len() == page {
                        return Ok(out);
                    }
                }
            }
            if exhausted {
                return Ok(out);
            }
        }
    }

    async fn rollup_list(&self, p: RollupListParams) -> Result<Vec<maas_core::rollup::Rollup>, StoreError> {
        let mut sql = format!("SELECT {} FROM maas_rollups WHERE 1 = 1", rows::ROLLUP_COLUMNS);
        let mut v = Vec::new();
        if let Some(from) = p.from {
            sql.push_str(" AND day >= ?");
            v.push(t(maas_core::rollup::day_of(from)));
        }
        if let Some(until) = p.until {
            sql.push_str(" AND day < ?");
            v.push(t(until));
        }
        sql.push_str(" ORDER BY day, action, site, sku, image, step");
        self.all(&self.db, &sql, v).await?.iter().map(rows::rollup).collect()
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
        if let Some(owner) = &p.lease_owner {
            sql.push_str(" AND j.lease_owner = ?");
            v.push(s(owner));
        }
        sql.push_str(" ORDER BY r.batch_id, r.ordinal, j.position");
        self.all(&self.db, &sql, v).await?.iter().map(rows::job).collect()
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
        if let Some(batch) = p.batch_id {
            sql.push_str(" AND r.batch_id = ?");
            v.push(s(batch));
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
        if let Some(batch) = p.batch_id {
            sql.push_str(" AND j.batch_id = ?");
            v.push(s(batch));
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

    async fn ticket_list(&self, limit: usize) -> Result<Vec<TicketRecord>, StoreError> {
        let mut q = entity::tickets::Entity::find().order_by_desc(entity::tickets::Column::Id);
        if limit > 0 {
            q = q.limit(limit as u64);
        }
        q.all(&self.db).await.map_err(backend_err)?.into_iter().map(rows::ticket).collect()
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

/// The letters a hostname starts with, when they are plain (letters, `-`, `.`): every
/// hostlist naming the host holds them literally.
fn literal_prefix(host: &str) -> Option<&str> {
    let end = host.find(|c: char| c.is_ascii_digit()).unwrap_or(host.len());
    let prefix = &host[..end];
    (!prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_alphabetic() || c == '-' || c == '.')).then_some(prefix)
}
