//! maas in one process: the engine on a store, a simulated fleet (BMCs and installers, in
//! real time), worker pools for every site, the leader singletons, and the `maas.v1`
//! service behind an in-process [`Client`] — the API a remote `maasd` serves, with the
//! same checks and answers, without a network, certificates or a server. It is for
//! rehearsing a rollout and for tests; Python's `maas.Engine` is this.

use std::sync::Arc;
use std::time::Duration;

use maas_core::id::IdGenerator;
use maas_core::names::{Hostname, Pool};
use maas_core::ports::inventory::Inventory;
use maas_core::ports::store::Store;
use maas_core::{Principal, StoreError};
use maas_engine::{Engine, OsTokens, SystemClock};
use maas_engine::{PoolConfig, Singletons, SingletonsHandle, WorkerConfig, WorkerPool};
use maas_sim::sim::fleet_hosts;
use maas_sim::{FaultPlan, SimFleet, SimInstaller};

use crate::client::{self, Client};
use crate::identity::Policy;
use crate::service::{Authentication, MaasService};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Sites `dc1`, `dc2`, ...
    pub sites: usize,
    /// Hosts per site: `sim000001.dc1`, ... in pool `web`, SKUs gen10 and gen11.
    pub hosts_per_site: usize,
    /// Workers per site.
    pub workers_per_site: usize,
    /// Who every request acts as (the embedded engine authorizes everything).
    pub user: String,
    /// BMC faults, and how long installs and wipes take and how often they fail.
    pub faults: FaultPlan,
    /// The seed BMC faults and install outcomes are drawn from (ids are not).
    pub seed: u64,
}

impl Default for EmbeddedConfig {
    /// One site of 100 hosts, 4 workers, no faults, installs of 2 to 5 seconds.
    fn default() -> Self {
        EmbeddedConfig {
            sites: 1,
            hosts_per_site: 100,
            workers_per_site: 4,
            user: "local".into(),
            faults: FaultPlan {
                install_min: Duration::from_secs(2),
                install_max: Duration::from_secs(5),
                ..FaultPlan::none()
            },
            seed: 1,
        }
    }
}

/// A running in-process maas. Call [`Embedded::shutdown`] to hand unfinished jobs back
/// before dropping it (a store on disk then resumes them when opened again).
pub struct Embedded {
    client: Client,
    engine: Engine,
    fleet: Arc<SimFleet>,
    pools: Vec<maas_engine::PoolHandle>,
    singletons: SingletonsHandle,
    installer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").field("pools", &self.pools.len()).finish_non_exhaustive()
    }
}

impl Embedded {
    /// Starts everything on `store` (on the current tokio runtime). The simulated hosts
    /// the store does not have yet are added; hosts it has keep their state.
    pub async fn start<S: Store + Inventory + 'static>(
        store: Arc<S>,
        config: &EmbeddedConfig,
    ) -> Result<Self, StoreError> {
        let fleet = Arc::new(SimFleet::new(config.seed, config.faults));
        let hosts = fleet_hosts(&fleet, config.sites, config.hosts_per_site);
        let names: Vec<Hostname> = hosts.iter().map(|h| h.hostname.clone()).collect();
        let known: std::collections::HashSet<Hostname> =
            store.host_get_many(&names).await?.into_iter().map(|h| h.hostname).collect();
        let sites: std::collections::BTreeSet<_> = hosts.iter().map(|h| h.site.clone()).collect();
        let missing: Vec<_> = hosts.into_iter().filter(|h| !known.contains(&h.hostname)).collect();
        if !missing.is_empty() {
            store.host_upsert_many(missing).await?;
        }

        let installer = Arc::new(SimInstaller::new(fleet.clone()));
        let clock = Arc::new(SystemClock::new());
        let engine = Engine::builder(
            store.clone(),
            store,
            fleet.clone(),
            clock.clone(),
            // Ids and callback tokens must not repeat across engines on one store, so their
            // bits do not come from the (replayable) fault seed.
            IdGenerator::new(clock, OsTokens::seed()).with_tokens(Arc::new(OsTokens)),
        )
        .provisioner(installer.clone())
        .build();
        let installer = installer.start(engine.clone()).unwrap_or_else(|| unreachable!("a new installer starts once"));
        let pool = Pool::new("web").unwrap_or_else(|_| unreachable!("a valid pool name"));
        let pools = sites
            .into_iter()
            .map(|site| {
                WorkerPool::start(
                    &engine,
                    PoolConfig {
                        site,
                        pool: pool.clone(),
                        workers: config.workers_per_site,
                        worker: WorkerConfig { idle_poll: Duration::from_millis(100), ..WorkerConfig::default() },
                        restart_delay: Duration::from_millis(200),
                        instance: "embedded".into(),
                    },
                )
            })
            .collect();
        let singletons = Singletons::new(engine.clone(), "embedded").start(Duration::from_millis(200));
        let principal = Principal::new(config.user.clone(), []);
        let service = MaasService::new(engine.clone(), Arc::new(Policy::default()), Authentication::Fixed(principal));
        let client = client::in_process(service, 64 << 20);
        Ok(Embedded { client, engine, fleet, pools, singletons, installer })
    }

    /// A client of this engine's `maas.v1` service.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The engine itself.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The simulated fleet (BMC states; faults can be changed while it runs).
    pub fn fleet(&self) -> &Arc<SimFleet> {
        &self.fleet
    }

    /// Stops the workers (handing their unfinished jobs back), the singletons and the
    /// installers.
    pub async fn shutdown(self) {
        for pool in self.pools {
            pool.shutdown().await;
        }
        self.singletons.shutdown().await;
        self.installer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reimage_runs_to_completion_through_the_in_process_api() {
        let store = Arc::new(maas_sim::MemStore::new(maas_core::Rules::default()));
        let config = EmbeddedConfig {
            hosts_per_site: 6,
            faults: FaultPlan {
                install_min: Duration::from_millis(50),
                install_max: Duration::from_millis(200),
                ..FaultPlan::none()
            },
            ..EmbeddedConfig::default()
        };
        let maas = Embedded::start(store.clone(), &config).await.unwrap();
        let mut client = maas.client();
        let request = pb::SubmitBatchRequest {
            action: Some(client::action("reimage:ubuntu-24.04").unwrap()),
            hosts: vec!["sim[000001-000004].dc1".into()],
            ..Default::default()
        };
        let id = client.submit_batch(request.clone()).await.unwrap().into_inner().batch_id;
        // The same hosts again: refused with the conflicts as structured details.
        let refused = client.submit_batch(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        let conflicts = client::rejection(&refused).unwrap().conflicts;
        assert_eq!(conflicts.len(), 4);
        assert!(conflicts.iter().all(|c| c.batch_id == id));

        let watch = pb::WatchBatchRequest { batch_id: id.clone(), after: 0 };
        let mut events = client.watch_batch(watch).await.unwrap().into_inner();
        let mut kinds = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.message()).await.unwrap() {
            kinds.push(e.kind);
        }
        assert_eq!(kinds.iter().filter(|k| *k == "host_succeeded").count(), 4, "{kinds:?}");
        let batch =
            client.get_batch(pb::GetBatchRequest { batch_id: id, hostnames: vec![], steps: false }).await.unwrap();
        assert_eq!(batch.into_inner().state, "completed");
        // Hosts already in the store are not replaced when it is opened again.
        let h = Hostname::new("sim000006.dc1").unwrap();
        let defunct =
            maas_core::host::StateChange::to(maas_core::HostState::Defunct, maas_core::time::Timestamp::from_millis(0));
        store.host_set_state(&h, defunct).await.unwrap();
        maas.shutdown().await;
        let again = Embedded::start(store.clone(), &config).await.unwrap();
        assert_eq!(store.host_get_many(&[h]).await.unwrap()[0].state, maas_core::HostState::Defunct);
        again.shutdown().await;
    }
}
