//! `Inventory` for SQL: hosts by name, filtered lists, idempotent upserts, state changes.

use std::collections::BTreeMap;

use async_trait::async_trait;
use maas_core::host::{Host, StateChange};
use maas_core::names::Hostname;
use maas_core::ports::inventory::{HostFilter, Inventory};
use maas_core::ports::store::*;

use crate::errors::{backend as backend_err, transient};
use crate::rows::{self, n, s};

use super::*;

#[async_trait]
impl Inventory for SqlStore {
    async fn host_get_many(&self, names: &[Hostname]) -> Result<Vec<Host>, StoreError> {
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(CHUNK) {
            let sql = format!(
                "SELECT {} FROM maas_hosts WHERE hostname IN ({})",
                rows::HOST_COLUMNS,
                placeholders(chunk.len())
            );
            for row in self.all(&self.db, &sql, chunk.iter().map(s).collect()).await? {
                out.push(rows::host(&row)?);
            }
        }
        Ok(out)
    }

    async fn host_list(&self, f: HostFilter) -> Result<Vec<Host>, StoreError> {
        let mut sql = format!("SELECT {} FROM maas_hosts WHERE 1 = 1", rows::HOST_COLUMNS);
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
        if let Some(mac) = &f.mac {
            sql.push_str(" AND mac = ?");
            v.push(s(mac));
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
            // A MAC may name one host only: checked against the rows holding the import's
            // MACs, in the transaction (the unique index backs it up against a race).
            let macs: Vec<String> = hosts.iter().filter_map(|h| h.mac.map(|m| m.to_string())).collect();
            let mut holders = Vec::new();
            for chunk in macs.chunks(CHUNK) {
                let sql = format!(
                    "SELECT {} FROM maas_hosts WHERE mac IN ({})",
                    rows::HOST_COLUMNS,
                    placeholders(chunk.len())
                );
                for row in self.all(c, &sql, chunk.iter().map(s).collect()).await? {
                    holders.push(rows::host(&row)?);
                }
            }
            if let Some((mac, hosts)) = maas_core::host::duplicate_macs(&hosts, &holders).into_iter().next() {
                return Err(StoreError::DuplicateMac { mac, hosts });
            }
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

    async fn host_set_state(&self, name: &Hostname, change: StateChange) -> Result<(), StoreError> {
        write_txn!(self, c, {
            let sql = format!("SELECT {} FROM maas_hosts WHERE hostname = ?", rows::HOST_COLUMNS);
            let Some(row) = self.one(c, &sql, vec![s(name)]).await? else {
                return Err(StoreError::not_found("host", name));
            };
            let mut host = rows::host(&row)?;
            change.apply(&mut host);
            let values = vec![
                s(rows::enum_str(&host.state)),
                rows::os(host.allocated_to.as_ref()),
                rows::ot(host.state_since),
                s(name),
            ];
            let sql = "UPDATE maas_hosts SET state = ?, allocated_to = ?, state_since = ? WHERE hostname = ?";
            self.exec(c, sql, values).await.map(|_| ())
        })
    }
}
