//! Engine scenarios, one per promise of the facade, the workers and the singletons. Most
//! run on the deterministic simulator ([`Simulation`]) with invariants checked after every
//! round; pool supervision and shutdown run on the real tokio runtime and clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use maas_core::authz::{Grant, GroupPolicy, Principal};
use maas_core::host::{BmcEndpoint, HostState, StateChange};
use maas_core::machine::JobOutcome;
use maas_core::model::PauseReason;
use maas_core::ports::inventory::{HostFilter, Inventory};
use maas_core::ports::power::*;
use maas_core::ports::services::TicketKind;
use maas_core::ports::store::*;
use maas_core::validate::Problem;
use maas_core::*;
use maas_engine::*;
use maas_engine::{EngineError, PoolConfig, WorkerConfig, WorkerPool};
use maas_sim::sim::{SimConfig, Simulation, fleet_hosts};
use maas_sim::*;

const ROUND: Duration = Duration::from_secs(5);

fn reimage(hosts: &str) -> BatchRequest {
    BatchRequest::new(
        Action::Reimage { os: OsRelease::new("ubuntu-24.04").unwrap(), install_timeout_secs: None },
        [hosts],
    )
}

fn reboot(hosts: &str) -> BatchRequest {
    BatchRequest::new(Action::Reboot { soft: false }, [hosts])
}

async fn sim() -> Simulation {
    Simulation::new(SimConfig::scenario()).await
}

fn alice() -> Principal {
    Principal::new("alice", [])
}

async fn claims(sim: &Simulation) -> usize {
    sim.mem().expect("in-memory simulation").claims_snapshot().len()
}

#[tokio::test]
async fn a_batch_runs_from_submit_to_done_with_events_audit_and_per_host_status() {
    let mut sim = sim().await;
    let id = sim.submit_as("alice", reimage("sim[000001-000010].dc1")).await.unwrap();
    sim.round(ROUND).await.unwrap();
    let view = sim.engine().get_batch(id).await.unwrap();
    assert_eq!(view.hosts.len(), 10);
    assert!(view.hosts.iter().all(|h| h.state == HostRunState::Running && h.started_at.is_some()));
    sim.settle(ROUND, 1000).await.unwrap();
    let view = sim.engine().get_batch(id).await.unwrap();
    assert_eq!(view.batch.state, BatchState::Completed);
    assert!(view.hosts.iter().all(|h| h.state == HostRunState::Succeeded && h.step == Some(plan::StepKind::Release)));
    let events = sim.store().event_list(EventListParams { batch_id: Some(id), ..Default::default() }).await.unwrap();
    assert!(matches!(events.first().unwrap().kind, EventKind::BatchAccepted { .. }));
    assert!(matches!(events.last().unwrap().kind, EventKind::BatchCompleted { .. }));
    assert_eq!(events.iter().filter(|e| matches!(e.kind, EventKind::HostSucceeded { .. })).count(), 10);
    let audit = sim.engine().audit(&alice(), AuditFilter::default()).await.unwrap();
    assert_eq!((audit[0].principal.as_str(), audit[0].host_count), ("alice", 10));
    assert_eq!(audit[0].hosts, "sim[000001-000010].dc1");
    // The notifier got every event of the batch, in order.
    sim.round(ROUND).await.unwrap();
    let delivered: Vec<u64> = sim.notifier().delivered().iter().filter(|e| e.batch_id == id).map(|e| e.seq).collect();
    assert_eq!(delivered, events.iter().map(|e| e.seq).collect::<Vec<_>>());
}

#[tokio::test]
async fn rejections_name_every_problem_and_write_nothing() {
    let mut sim = sim().await;
    let store = sim.store().clone();
    let change = |state| StateChange::to(state, Timestamp::from_millis(0));
    store.host_set_state(&Hostname::new("sim000003.dc1").unwrap(), change(HostState::Allocated)).await.unwrap();
    store.host_set_state(&Hostname::new("sim000004.dc1").unwrap(), change(HostState::Decommissioned)).await.unwrap();
    let holder = sim.submit_as("bob", reboot("sim[000005-000006].dc1")).await.unwrap();
    let before = claims(&sim).await;
    let mut req = reboot("sim[000001-000006].dc1");
    req.hosts.push("ghost.dc9".into());
    let err = sim.engine().submit(&alice(), &req).await.unwrap_err();
    let EngineError::Rejected(report) = err else { panic!("{err}") };
    assert_eq!(report.problems.len(), 5, "{report}");
    let text = report.to_string();
    for needle in [
        "sim000003.dc1 is in use",
        "sim000004.dc1 is decommissioned",
        "ghost.dc9 is not in the inventory",
        &format!("sim[000005-000006].dc1 are held by active batch {holder}"),
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert_eq!(claims(&sim).await, before, "a rejected batch leaves no claims");
    assert_eq!(sim.engine().list_batches(BatchListParams::default()).await.unwrap().len(), 1);
    sim.round(ROUND).await.unwrap();
}

#[tokio::test]
async fn permissions_are_checked_per_action_pool_and_site_and_force_needs_its_own_grant() {
    let store = Arc::new(MemStore::default());
    let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
    let mut hosts = fleet_hosts(&fleet, 2, 4);
    hosts[1].state = HostState::Allocated;
    store.host_upsert_many(hosts).await.unwrap();
    let g = |s: &str| Group::new(s).unwrap();
    let policy = GroupPolicy {
        grants: vec![Grant {
            group: g("sre"),
            actions: Some(vec![ActionKind::Reboot]),
            pools: Some(vec![Pool::new("web").unwrap()]),
            sites: Some(vec![Site::new("dc1").unwrap()]),
            force: false,
            admin: false,
            max_priority: None,
            audit: false,
        }],
        ..Default::default()
    };
    let clock = Arc::new(ManualClock::simulated(Timestamp::from_millis(1_000_000)));
    let engine = Engine::builder(store.clone(), store.clone(), fleet, clock.clone(), IdGenerator::new(clock, 3))
        .authorizer(Arc::new(policy))
        .build();
    let sre = Principal::new("sam", [g("sre")]);
    assert!(engine.submit(&sre, &reboot("sim000001.dc1")).await.is_ok());
    let err = engine.submit(&sre, &reboot("sim000001.dc2")).await.unwrap_err().to_string();
    assert!(err.contains("lacks permission: reboot on pool web in site dc2"), "{err}");
    let err = engine.submit(&sre, &BatchRequest::new(Action::PowerOff { soft: false }, ["sim000003.dc1"])).await;
    assert!(err.unwrap_err().to_string().contains("power_off on pool web in site dc1"));
    let mut forced = reboot("sim000002.dc1");
    forced.force = Some(ForceInUse { reason: "urgent kernel fix".into() });
    let err = engine.submit(&sre, &forced).await.unwrap_err().to_string();
    assert!(err.contains("force-in-use on pool web in site dc1"), "{err}");
    // Someone else may not cancel alice's... sam's batch without admin.
    let b = engine.list_batches(BatchListParams::default()).await.unwrap()[0].id;
    let err = engine.cancel_batch(&Principal::new("mallory", []), b, "no").await.unwrap_err();
    assert!(matches!(err, EngineError::Denied(_)), "{err}");
}

#[tokio::test]
async fn inventory_admin_needs_the_admin_grant_and_reads_need_none() {
    let store = Arc::new(MemStore::default());
    let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
    let hosts = fleet_hosts(&fleet, 1, 3);
    let g = |s: &str| Group::new(s).unwrap();
    let admin_grant = Grant::admin(g("ops"));
    let clock = Arc::new(ManualClock::simulated(Timestamp::from_millis(1_000_000)));
    let engine = Engine::builder(store.clone(), store.clone(), fleet, clock.clone(), IdGenerator::new(clock, 3))
        .authorizer(Arc::new(GroupPolicy { grants: vec![admin_grant], ..Default::default() }))
        .build();
    let (ops, sam) = (Principal::new("olga", [g("ops")]), Principal::new("sam", []));
    let err = engine.import_hosts(&sam, hosts.clone()).await.unwrap_err().to_string();
    assert!(err.contains("sam lacks permission: admin"), "{err}");
    assert!(engine.list_hosts(&sam, Default::default()).await.unwrap().is_empty(), "nothing was imported");
    assert_eq!(engine.import_hosts(&ops, hosts.clone()).await.unwrap(), 3);
    assert_eq!(engine.import_hosts(&ops, hosts.clone()).await.unwrap(), 3, "idempotent");
    assert_eq!(engine.list_hosts(&sam, Default::default()).await.unwrap().len(), 3);
    let name = hosts[0].hostname.clone();
    assert!(engine.set_host_state(&sam, &name, HostState::Defunct, None).await.is_err());
    engine.set_host_state(&ops, &name, HostState::Defunct, None).await.unwrap();
    let defunct = HostFilter { state: Some(HostState::Defunct), ..Default::default() };
    assert_eq!(engine.list_hosts(&sam, defunct).await.unwrap()[0].hostname, name);
    assert_eq!(engine.pool_kinds(&sam, &Pool::new("web").unwrap()).await.unwrap(), None);
}

#[tokio::test]
async fn a_host_allocated_after_acceptance_is_not_touched_unless_the_batch_was_forced() {
    let mut sim = sim().await;
    // Both batches wait for not_before, so the allocations land before any step runs.
    let later = sim.clock().now().plus(Duration::from_secs(60));
    let mut plain = reboot("sim000001.dc1");
    plain.not_before = Some(later);
    let mut forced = reboot("sim000002.dc1");
    forced.not_before = Some(later);
    forced.force = Some(ForceInUse { reason: "kernel fix, owner agreed".into() });
    let plain = sim.submit_as("alice", plain).await.unwrap();
    let forced = sim.submit_as("alice", forced).await.unwrap();
    let mut bmcs = Vec::new();
    for name in ["sim000001.dc1", "sim000002.dc1"] {
        let host = Hostname::new(name).unwrap();
        sim.engine().set_host_state(&alice(), &host, HostState::Allocated, Some("payments".into())).await.unwrap();
        let bmc = sim.store().host_get_many(&[host]).await.unwrap().remove(0).bmc;
        bmcs.push((sim.fleet().bmc(&bmc).unwrap().commands, bmc));
    }
    let allocated_at = sim.clock().now();
    sim.settle(ROUND, 1000).await.unwrap();
    let view = sim.engine().get_batch(plain).await.unwrap();
    let host = &view.hosts[0];
    assert_eq!(
        (view.batch.state, view.batch.counts.failed, host.state),
        (BatchState::Completed, 1, HostRunState::Failed)
    );
    let error = host.last_error.as_deref().unwrap_or_default();
    let expected = format!("sim000001.dc1 is allocated to payments since {allocated_at}");
    assert!(error.contains(&expected), "{error}");
    assert_eq!(host.step, Some(plan::StepKind::Preflight), "stopped at its first step");
    let (before, bmc) = &bmcs[0];
    assert_eq!(sim.fleet().bmc(bmc).unwrap().commands, *before, "the BMC got no command");
    // The forced batch acts on its allocated host, as its submitter asked.
    let view = sim.engine().get_batch(forced).await.unwrap();
    assert_eq!(view.batch.state, BatchState::Completed);
    let (before, bmc) = &bmcs[1];
    assert!(sim.fleet().bmc(bmc).unwrap().commands > *before, "the forced batch power-cycled it");
}

#[tokio::test]
async fn the_audit_records_every_mutating_call_and_only_its_readers_read_it() {
    let store = Arc::new(MemStore::default());
    let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
    let hosts = fleet_hosts(&fleet, 1, 3);
    let g = |s: &str| Group::new(s).unwrap();
    let auditors = Grant { audit: true, ..Grant::admin(g("auditors")) };
    let auditors = Grant { admin: false, actions: Some(vec![]), ..auditors };
    let sre = Grant { actions: Some(vec![ActionKind::Reboot]), admin: false, ..Grant::admin(g("sre")) };
    let policy = GroupPolicy { grants: vec![Grant::admin(g("ops")), auditors, sre], ..Default::default() };
    let clock = Arc::new(ManualClock::simulated(Timestamp::from_millis(1_000_000)));
    let engine = Engine::builder(store.clone(), store.clone(), fleet, clock.clone(), IdGenerator::new(clock, 3))
        .authorizer(Arc::new(policy))
        .build();
    let ops = Principal::new("olga", [g("ops")]);
    let sam = Principal::new("sam", [g("sre")]);
    let audrey = Principal::new("audrey", [g("auditors")]);
    let mallory = Principal::new("mallory", []);
    assert!(engine.import_hosts(&mallory, hosts.clone()).await.is_err());
    engine.import_hosts(&ops, hosts.clone()).await.unwrap();
    let h2 = hosts[2].hostname.clone();
    engine.set_host_state(&ops, &h2, HostState::Allocated, Some("payments".into())).await.unwrap();
    // A refused submission (in use), a forced one without the grant, then an accepted one.
    assert!(engine.submit(&sam, &reboot("sim[000001-000003].dc1")).await.is_err());
    let mut forced = reboot("sim000003.dc1");
    forced.force = Some(ForceInUse { reason: "kernel fix".into() });
    assert!(engine.submit(&sam, &forced).await.is_err());
    let batch = engine.submit(&sam, &reboot("sim[000001-000002].dc1")).await.unwrap().batch.id;
    assert!(engine.cancel_batch(&mallory, batch, "mine now").await.is_err());
    engine.pause_batch(&sam, batch, "look first").await.unwrap();
    engine.cancel_batch(&sam, batch, "wrong hosts").await.unwrap();
    assert!(engine.resume_batch(&sam, batch).await.is_err(), "a cancelled batch does not resume");
    engine.set_pool_kinds(&ops, &Pool::new("web").unwrap(), &[plan::StepKind::Preflight]).await.unwrap();

    // Only auditors (and admins) read the trail.
    for reader in [&sam, &mallory] {
        let err = engine.audit(reader, AuditFilter::default()).await.unwrap_err();
        assert!(err.to_string().contains("lacks permission: read the audit trail"), "{err}");
    }
    let trail = engine.audit(&audrey, AuditFilter::default()).await.unwrap();
    let lines: Vec<(String, &str, bool)> =
        trail.iter().map(|a| (a.principal.clone(), a.op.as_str(), a.accepted)).collect();
    let expected = [
        ("olga", "set_pool_kinds", true),
        ("sam", "resume", false),
        ("sam", "cancel", true),
        ("sam", "pause", true),
        ("mallory", "cancel", false),
        ("sam", "submit", true),
        ("sam", "submit", false),
        ("sam", "submit", false),
        ("olga", "set_host_state", true),
        ("olga", "import_hosts", true),
        ("mallory", "import_hosts", false),
    ];
    let expected: Vec<(String, &str, bool)> = expected.iter().map(|(p, o, a)| (p.to_string(), *o, *a)).collect();
    assert_eq!(lines, expected);
    let find = |i: usize| &trail[i];
    assert!(find(1).error.as_deref().unwrap().contains("cancelled"), "{:?}", find(1));
    assert_eq!(find(2).reason.as_deref(), Some("wrong hosts"));
    assert!(find(4).error.as_deref().unwrap().contains("mallory lacks permission: admin"), "{:?}", find(4));
    let forced_refusal = find(6);
    assert!(forced_refusal.forced && forced_refusal.reason.as_deref() == Some("kernel fix"), "{forced_refusal:?}");
    assert!(forced_refusal.error.as_deref().unwrap().contains("force-in-use"), "{forced_refusal:?}");
    assert!(find(7).error.as_deref().unwrap().contains("sim000003.dc1 is in use"), "{:?}", find(7));
    assert_eq!(find(8).summary, "state allocated to payments");
    assert_eq!(find(9).host_count, 3);
    // A host's trail: the calls that named it.
    let of_h2 = engine.audit(&audrey, AuditFilter { host: Some(h2.clone()), ..Default::default() }).await.unwrap();
    let ops_on_h2: Vec<&str> = of_h2.iter().map(|a| a.op.as_str()).collect();
    assert_eq!(ops_on_h2, ["submit", "submit", "set_host_state", "import_hosts", "import_hosts"]);
    // Admins read it too.
    assert_eq!(engine.audit(&ops, AuditFilter { limit: 2, ..Default::default() }).await.unwrap().len(), 2);
}

#[tokio::test]
async fn restricted_pools_are_read_only_by_their_groups() {
    let store = Arc::new(MemStore::default());
    let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
    let mut hosts = fleet_hosts(&fleet, 1, 4);
    for h in &mut hosts[2..] {
        h.pool = Pool::new("db").unwrap();
    }
    store.host_upsert_many(hosts).await.unwrap();
    let g = |s: &str| Group::new(s).unwrap();
    let pools = |p: &str| Grant { pools: Some(vec![Pool::new(p).unwrap()]), admin: false, ..Grant::admin(g(p)) };
    let policy = GroupPolicy {
        grants: vec![pools("web"), pools("db"), Grant::admin(g("ops"))],
        restricted_pools: vec![Pool::new("db").unwrap()],
    };
    let clock = Arc::new(ManualClock::simulated(Timestamp::from_millis(1_000_000)));
    let engine = Engine::builder(store.clone(), store.clone(), fleet, clock.clone(), IdGenerator::new(clock, 3))
        .authorizer(Arc::new(policy))
        .build();
    let (web, db, ops) =
        (Principal::new("wendy", [g("web")]), Principal::new("dave", [g("db")]), Principal::new("olga", [g("ops")]));
    let mallory = Principal::new("mallory", []);
    // Hidden batches before and after the readable one.
    let on_db = engine.submit(&db, &reboot("sim000003.dc1")).await.unwrap().batch.id;
    let on_web = engine.submit(&web, &reboot("sim[000001-000002].dc1")).await.unwrap().batch.id;
    let on_db2 = engine.submit(&db, &reboot("sim000004.dc1")).await.unwrap().batch.id;
    let ids = |v: Vec<BatchRecord>| v.into_iter().map(|b| b.id).collect::<Vec<_>>();
    let all = BatchListParams::default();
    for reader in [&mallory, &web] {
        assert_eq!(ids(engine.list_batches_as(reader, all.clone()).await.unwrap()), [on_web], "{}", reader.name);
        // A page of one still finds the readable batch behind the newer hidden one.
        let one = BatchListParams { limit: 1, ..Default::default() };
        assert_eq!(ids(engine.list_batches_as(reader, one).await.unwrap()), [on_web]);
        let err = engine.get_batch_as(reader, on_db).await.unwrap_err();
        assert!(err.to_string().contains("lacks permission: read pool db"), "{err}");
        let names: Vec<String> = engine
            .list_hosts(reader, HostFilter::default())
            .await
            .unwrap()
            .iter()
            .map(|h| h.hostname.to_string())
            .collect();
        assert_eq!(names, ["sim000001.dc1", "sim000002.dc1"]);
    }
    for reader in [&db, &ops] {
        assert_eq!(ids(engine.list_batches_as(reader, all.clone()).await.unwrap()), [on_db2, on_web, on_db]);
        assert_eq!(engine.get_batch_as(reader, on_db).await.unwrap().hosts.len(), 1);
        assert_eq!(engine.list_hosts(reader, HostFilter { limit: 3, ..Default::default() }).await.unwrap().len(), 3);
    }
    // Watching every batch (the hidden batch's events come first), mallory sees the web
    // batch's events only.
    let web_events =
        store.event_list(EventListParams { batch_id: Some(on_web), ..Default::default() }).await.unwrap().len();
    let seen: Vec<BatchId> = tokio::time::timeout(
        Duration::from_secs(5),
        engine
            .watch_as(&mallory, None, 0, Duration::from_millis(10))
            .take(web_events)
            .map(|e| e.unwrap().batch_id)
            .collect(),
    )
    .await
    .unwrap();
    assert!(seen.len() == web_events && seen.iter().all(|b| *b == on_web), "{seen:?}");
}

#[tokio::test]
async fn an_idempotency_key_names_its_batch_until_the_horizon_then_a_new_one() {
    let mut sim = sim().await;
    let horizon = sim.engine().config().idempotency_horizon;
    let mut req = reboot("sim000001.dc1");
    req.idempotency_key = Some("change-7".into());
    let first = sim.engine().submit(&alice(), &req).await.unwrap();
    sim.settle(ROUND, 1000).await.unwrap();
    let mut other = reboot("sim000002.dc1");
    other.idempotency_key = Some("change-7".into());
    let err = sim.engine().submit(&alice(), &other).await.unwrap_err();
    assert!(err.to_string().contains("change-7"), "within the horizon another spec is refused: {err}");
    sim.clock().advance(horizon + Duration::from_secs(1));
    let again = sim.engine().submit(&alice(), &other).await.unwrap();
    assert!(again.created && again.batch.id != first.batch.id, "past the horizon the key names a new batch");
    assert_eq!(sim.engine().submit(&alice(), &other).await.unwrap().batch.id, again.batch.id);
}

#[tokio::test]
async fn dry_run_reports_everything_and_writes_nothing() {
    let mut sim = sim().await;
    let holder = sim.submit_as("bob", reboot("sim000002.dc1")).await.unwrap();
    let allocated = StateChange::to(HostState::Allocated, sim.clock().now());
    sim.store().host_set_state(&Hostname::new("sim000003.dc1").unwrap(), allocated).await.unwrap();
    let events_before = sim.store().event_list(EventListParams::default()).await.unwrap().len();
    let report = sim.engine().dry_run(&alice(), &reimage("sim[000001-000004].dc1")).await.unwrap();
    assert!(!report.acceptable);
    assert_eq!(report.hosts.len(), 4);
    assert_eq!(report.hosts[1].held_by, Some(holder));
    assert_eq!(report.hosts[0].plan.len(), 7, "{:?}", report.hosts[0].plan);
    assert!(report.report.problems.iter().any(|p| matches!(p, Problem::InUse { .. })));
    assert!(
        report.report.problems.iter().any(|p| matches!(p, Problem::Conflict { held_by, .. } if *held_by == holder))
    );
    assert_eq!(sim.store().event_list(EventListParams::default()).await.unwrap().len(), events_before);
    assert_eq!(sim.engine().list_batches(BatchListParams::default()).await.unwrap().len(), 1);
    let ok = sim.engine().dry_run(&alice(), &reimage("sim[000010-000011].dc2")).await.unwrap();
    assert!(ok.acceptable && ok.report.problems.is_empty());
}

#[tokio::test]
async fn idempotency_key_returns_the_same_batch_and_refuses_another_spec() {
    let mut sim = sim().await;
    let mut req = reboot("sim[000001-000003].dc1");
    req.idempotency_key = Some("change-42".into());
    let first = sim.engine().submit(&alice(), &req).await.unwrap();
    let again = sim.engine().submit(&alice(), &req).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.batch.id, again.batch.id);
    assert!(again.warnings.iter().any(|w| w.contains("already names batch")));
    let mut other = req.clone();
    other.priority = PriorityClass::Urgent;
    let err = sim.engine().submit(&alice(), &other).await.unwrap_err().to_string();
    assert!(err.contains("idempotency key \"change-42\" already used by batch"), "{err}");
    // After the batch finished and someone else holds its hosts, a retry with the key still
    // gets the original answer, not an overlap error.
    sim.settle(ROUND, 1000).await.unwrap();
    sim.submit_as("bob", reboot("sim[000001-000003].dc1")).await.unwrap();
    let late = sim.engine().submit(&alice(), &req).await.unwrap();
    assert_eq!((late.batch.id, late.created, late.batch.state), (first.batch.id, false, BatchState::Completed));
}

#[tokio::test]
async fn warnings_name_sites_without_live_workers_and_liveness_follows_heartbeats() {
    let mut sim = sim().await;
    sim.set_workers_alive(false);
    let s = sim.engine().submit(&alice(), &reboot("sim000001.dc2")).await.unwrap();
    assert!(s.warnings.iter().any(|w| w.contains("no live workers in site dc2")), "{:?}", s.warnings);
    sim.set_workers_alive(true);
    sim.round(ROUND).await.unwrap();
    let now = sim.clock().now();
    assert_eq!(sim.engine().live_sites(now).await.unwrap().len(), 2);
    let active = sim.engine().active_counts().await.unwrap();
    let dc2 = active.iter().find(|a| a.activity.site.as_str() == "dc2").unwrap();
    assert_eq!(dc2.live_workers, 2);
    // Three minutes without a heartbeat: the site is no longer live.
    sim.set_workers_alive(false);
    sim.clock().advance(Duration::from_secs(181));
    assert!(sim.engine().live_sites(sim.clock().now()).await.unwrap().is_empty());
}

/// An engine whose default is `console_check`, on 4 simulated hosts; sim000003's BMC does
/// not answer.
async fn console_engine(console_check: bool) -> (Engine, Arc<MemStore>) {
    let store = Arc::new(MemStore::default());
    let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
    let hosts = fleet_hosts(&fleet, 1, 4);
    fleet.set_reachable(&hosts[2].bmc, false);
    store.host_upsert_many(hosts).await.unwrap();
    let clock = Arc::new(ManualClock::simulated(Timestamp::from_millis(1_000_000)));
    let config = EngineConfig { console_check, ..EngineConfig::default() };
    let engine = Engine::builder(store.clone(), store.clone(), fleet, clock.clone(), IdGenerator::new(clock, 3))
        .config(config)
        .build();
    (engine, store)
}

#[tokio::test]
async fn console_check_rejects_hosts_whose_bmc_does_not_answer() {
    let (engine, store) = console_engine(true).await;
    let err = engine.submit(&alice(), &reboot("sim[000001-000004].dc1")).await.unwrap_err().to_string();
    assert!(err.contains("sim000003.dc1: BMC console check failed"), "{err}");
    assert!(store.claims_snapshot().is_empty());
    assert!(engine.submit(&alice(), &reboot("sim[000001-000002].dc1")).await.is_ok());
}

/// A request asks for the console check (or declines it) whatever the engine's default.
#[tokio::test]
async fn a_request_chooses_its_console_check_over_the_default() {
    let (engine, store) = console_engine(false).await;
    let mut checked = reboot("sim[000001-000004].dc1");
    checked.console_check = Some(true);
    let err = engine.submit(&alice(), &checked).await.unwrap_err().to_string();
    assert!(err.contains("sim000003.dc1: BMC console check failed"), "{err}");
    assert!(store.claims_snapshot().is_empty());
    assert!(engine.submit(&alice(), &reboot("sim[000001-000004].dc1")).await.is_ok(), "the default: no check");

    let (engine, _) = console_engine(true).await;
    let mut unchecked = reboot("sim[000001-000004].dc1");
    unchecked.console_check = Some(false);
    assert!(engine.submit(&alice(), &unchecked).await.is_ok(), "declined despite the default");
}

#[tokio::test]
async fn cancel_ends_queued_hosts_at_once_and_lets_running_steps_finish() {
    let mut sim = sim().await;
    let mut req = reimage("sim[000001-000010].dc1");
    req.rollout.max_in_flight = 3;
    let id = sim.submit_as("alice", req).await.unwrap();
    sim.round(ROUND).await.unwrap();
    let b = sim.engine().cancel_batch(&alice(), id, "wrong rack").await.unwrap();
    assert_eq!(b.state, BatchState::Cancelling);
    assert_eq!(b.counts.cancelled, 7, "queued hosts end at once");
    sim.settle(ROUND, 1000).await.unwrap();
    let b = sim.engine().get_batch(id).await.unwrap().batch;
    assert_eq!(b.state, BatchState::Cancelled);
    assert_eq!(b.counts.cancelled + b.counts.succeeded + b.counts.failed, 10);
    assert_eq!(claims(&sim).await, 0);
}

#[tokio::test]
async fn pause_stops_new_hosts_and_resume_continues() {
    let mut sim = sim().await;
    let mut req = reboot("sim[000001-000012].dc1");
    req.rollout.max_in_flight = 4;
    let id = sim.submit_as("alice", req).await.unwrap();
    sim.engine().pause_batch(&alice(), id, "looking at graphs").await.unwrap();
    for _ in 0..20 {
        sim.round(ROUND).await.unwrap();
    }
    let b = sim.engine().get_batch(id).await.unwrap().batch;
    assert_eq!(b.state, BatchState::Paused);
    assert_eq!((b.counts.succeeded, b.counts.queued), (4, 8), "running hosts finish, no new ones start");
    sim.engine().resume_batch(&alice(), id).await.unwrap();
    sim.settle(ROUND, 1000).await.unwrap();
    assert_eq!(sim.engine().get_batch(id).await.unwrap().batch.counts.succeeded, 12);
}

#[tokio::test]
async fn over_budget_pauses_the_batch_and_raises_tickets_for_it_and_wedged_hosts() {
    let mut sim = sim().await;
    for i in 1..=4 {
        sim.set_install(&format!("sim{i:06}.dc1"), Duration::from_secs(60), false);
    }
    let mut req = reimage("sim[000001-000010].dc1");
    req.rollout = RolloutPolicy { max_in_flight: 5, failure_budget: 2 };
    let id = sim.submit_as("alice", req).await.unwrap();
    // A host whose BMC stops answering exhausts its retries: wedged.
    let wedged = Hostname::new("sim000005.dc1").unwrap();
    let bmc = sim.store().host_get_many(std::slice::from_ref(&wedged)).await.unwrap()[0].bmc.clone();
    sim.fleet().set_reachable(&bmc, false);
    for _ in 0..200 {
        sim.round(Duration::from_secs(30)).await.unwrap();
    }
    let b = sim.engine().get_batch(id).await.unwrap().batch;
    assert_eq!(b.state, BatchState::Paused, "{:?}", b.counts);
    assert!(matches!(b.pause_reason, Some(PauseReason::FailureBudget { budget: 2, .. })));
    assert!(b.counts.failed > 2 && b.counts.queued > 0, "{:?}", b.counts);
    let events = sim.store().event_list(EventListParams { batch_id: Some(id), ..Default::default() }).await.unwrap();
    let paused_at = events.iter().position(|e| matches!(e.kind, EventKind::BatchPaused { .. })).unwrap();
    assert!(
        !events[paused_at..].iter().any(|e| matches!(e.kind, EventKind::HostStarted { .. })),
        "no host starts after the pause"
    );
    let tickets = sim.engine().tickets(10).await.unwrap();
    assert!(tickets.iter().any(|(_, t)| t.kind == TicketKind::FailureBudget && t.batch_id == id));
    let w = tickets.iter().find(|(_, t)| t.kind == TicketKind::WedgedHost).expect("a wedged-host ticket");
    assert_eq!(w.1.host.as_ref(), Some(&wedged));
    assert!(
        w.1.summary.contains("sim000005.dc1 wedged at preflight") && w.1.summary.contains("no answer"),
        "{}",
        w.1.summary
    );
}

#[tokio::test]
async fn a_slow_host_is_flagged_as_a_straggler_and_ticketed() {
    let mut sim = sim().await;
    sim.set_install("sim000007.dc1", Duration::from_secs(5 * 3600), true);
    let id = sim.submit_as("alice", reimage("sim[000001-000008].dc1")).await.unwrap();
    // Peers install in 10-12 minutes; after 50 minutes the slow one is past 3 x their p95.
    for _ in 0..100 {
        sim.round(Duration::from_secs(30)).await.unwrap();
    }
    let view = sim.engine().get_batch(id).await.unwrap();
    let slow = view.hosts.iter().find(|h| h.hostname.as_str() == "sim000007.dc1").unwrap();
    assert!(slow.straggler, "{slow:?}");
    assert_eq!(view.hosts.iter().filter(|h| h.straggler).count(), 1);
    let tickets = sim.engine().tickets(10).await.unwrap();
    assert!(tickets.iter().any(|(_, t)| t.kind == TicketKind::Straggler && t.host == Some(slow.hostname.clone())));
    let events = sim.store().event_list(EventListParams { batch_id: Some(id), ..Default::default() }).await.unwrap();
    assert_eq!(events.iter().filter(|e| matches!(e.kind, EventKind::StragglerFlagged { .. })).count(), 1);
}

#[tokio::test]
async fn defunct_hosts_are_reclaimed_by_the_system_and_returned_to_their_pool() {
    let mut sim = sim().await;
    let h = Hostname::new("sim000020.dc2").unwrap();
    sim.engine().mark_defunct(&Principal::new("ops", []), &h).await.unwrap();
    for _ in 0..80 {
        sim.round(Duration::from_secs(30)).await.unwrap();
    }
    let batches = sim.engine().list_batches(BatchListParams::default()).await.unwrap();
    let reclaim = batches.iter().find(|b| b.submitter == "system:reclaim").expect("a reclaim batch");
    assert_eq!(reclaim.state, BatchState::Completed);
    assert_eq!(reclaim.spec.hosts, vec![h.clone()]);
    assert_eq!(sim.store().host_get_many(&[h]).await.unwrap()[0].state, HostState::Ready);
}

#[tokio::test]
async fn a_host_reclaim_keeps_failing_is_left_alone_with_a_ticket() {
    let mut sim = sim().await;
    let h = Hostname::new("sim000021.dc2").unwrap();
    sim.set_install(h.as_str(), Duration::from_secs(60), false);
    sim.engine().mark_defunct(&Principal::new("ops", []), &h).await.unwrap();
    // Reclaim runs every 10 minutes: about eleven rounds in 110 simulated minutes.
    for _ in 0..220 {
        sim.round(Duration::from_secs(30)).await.unwrap();
    }
    let batches = sim.engine().list_batches(BatchListParams::default()).await.unwrap();
    let tries: Vec<&BatchRecord> =
        batches.iter().filter(|b| b.submitter == "system:reclaim" && b.spec.hosts.contains(&h)).collect();
    let give_up_after = sim.engine().config().reclaim.as_ref().unwrap().give_up_after as usize;
    assert_eq!(tries.len(), give_up_after, "tried {give_up_after} times, then left alone");
    assert!(tries.iter().all(|b| b.counts.failed == 1));
    let tickets = sim.engine().tickets(50).await.unwrap();
    let given_up: Vec<_> = tickets.iter().filter(|(_, t)| t.kind == TicketKind::ReclaimGivenUp).collect();
    assert_eq!(given_up.len(), 1, "one ticket, however many rounds: {tickets:?}");
    assert_eq!(given_up[0].1.host.as_ref(), Some(&h));
    assert_eq!(sim.store().host_get_many(&[h]).await.unwrap()[0].state, HostState::Defunct);
}

#[tokio::test]
async fn pool_kinds_are_remapped_live_without_restarting_workers() {
    let mut sim = sim().await;
    let web = Pool::new("web").unwrap();
    // The pool now only runs preflight: reboots stop after their first step.
    sim.engine().set_pool_kinds(&Principal::new("admin", []), &web, &[plan::StepKind::Preflight]).await.unwrap();
    sim.clock().advance(Duration::from_secs(31));
    let id = sim.submit_as("alice", reboot("sim[000001-000004].dc1")).await.unwrap();
    for _ in 0..20 {
        sim.round(ROUND).await.unwrap();
    }
    let view = sim.engine().get_batch(id).await.unwrap();
    assert!(
        view.hosts
            .iter()
            .all(|h| h.step == Some(plan::StepKind::PowerCycle) && h.step_state == Some(JobState::Available))
    );
    sim.engine().set_pool_kinds(&Principal::new("admin", []), &web, &plan::StepKind::ALL).await.unwrap();
    sim.settle(ROUND, 1000).await.unwrap();
    assert_eq!(sim.engine().get_batch(id).await.unwrap().batch.state, BatchState::Completed);
}

#[tokio::test]
async fn eta_stats_and_the_live_watch_stream() {
    let mut sim = sim().await;
    let first = sim.submit_as("alice", reimage("sim[000001-000010].dc1")).await.unwrap();
    sim.settle(Duration::from_secs(30), 1000).await.unwrap();
    let stats = sim.engine().batch_stats(StatsParams::default()).await.unwrap();
    assert_eq!((stats.succeeded, stats.failed, stats.success_rate), (10, 0, Some(1.0)));
    let install = stats.steps.iter().find(|s| s.step == Some(plan::StepKind::AwaitInstall)).unwrap();
    assert!(
        install.durations.p50 >= Duration::from_secs(600) && install.durations.p95 <= Duration::from_secs(760),
        "{:?}",
        install.durations
    );
    assert!(!stats.host_runs.is_empty());
    let counters = sim.engine().counters();
    // Every step but the waits (the install and the first boot, resolved by callbacks) was
    // claimed and completed once.
    let count = |waits: bool| {
        let is_wait = |s: &&maas_engine::DurationStats| s.step.is_some_and(|k| k.is_wait());
        stats.steps.iter().filter(|s| is_wait(s) == waits).map(|s| s.durations.count as u64).sum::<u64>()
    };
    let claimed = count(false);
    assert_eq!(count(true), 20);
    assert!(counters.claims > 0, "{counters:?}");
    assert_eq!((counters.jobs_claimed, counters.jobs_completed, counters.completions_stale), (claimed, claimed, 0));
    assert!(sim.engine().queue_depths().await.unwrap().is_empty(), "nothing is queued once settled");
    let backlog = sim.engine().outbox_backlog().await.unwrap();
    assert!(backlog.iter().any(|b| b.consumer == "tickets"), "{backlog:?}");
    assert!(backlog.iter().all(|b| b.cursor > 0 && b.oldest_pending_at.is_none()), "caught up: {backlog:?}");
    // A second wave of 20 hosts, 10 at a time: about two install lengths.
    let mut req = reimage("sim[000001-000020].dc2");
    req.rollout.max_in_flight = 10;
    let id = sim.submit_as("alice", req).await.unwrap();
    let queues = sim.engine().queue_depths().await.unwrap();
    assert_eq!(
        queues.iter().map(|q| (q.site.as_str(), q.kind)).collect::<Vec<_>>(),
        [("dc2", plan::StepKind::Preflight)]
    );
    assert!(queues[0].queued >= 10 && queues[0].oldest_enqueued_at.is_some(), "{queues:?}");
    let backlog = sim.engine().outbox_backlog().await.unwrap();
    assert!(backlog.iter().all(|b| b.oldest_pending_at.is_some()), "the new batch's events wait: {backlog:?}");
    let eta = sim.engine().eta(id).await.unwrap().unwrap();
    assert!(eta.samples >= 60, "{eta:?}");
    assert!(eta.remaining >= Duration::from_secs(2 * 600) && eta.remaining <= Duration::from_secs(2 * 900), "{eta:?}");
    assert!(sim.engine().eta(first).await.unwrap().is_none(), "finished batches have no ETA");
    let mut watch = Box::pin(sim.engine().watch(Some(id), 0, Duration::from_secs(1)));
    sim.settle(Duration::from_secs(30), 1000).await.unwrap();
    let mut kinds = Vec::new();
    while let Some(e) = watch.next().await {
        kinds.push(e.unwrap().kind);
    }
    assert!(matches!(kinds.first(), Some(EventKind::BatchAccepted { .. })));
    assert!(matches!(kinds.last(), Some(EventKind::BatchCompleted { .. })), "the stream ends with the batch");
    assert_eq!(kinds.len(), 1 + 20 + 20 + 1);
}

#[tokio::test]
async fn list_batches_filters_and_pages() {
    let mut sim = sim().await;
    for i in 1..=5 {
        sim.submit_as(if i % 2 == 0 { "bob" } else { "alice" }, reboot(&format!("sim{i:06}.dc1"))).await.unwrap();
    }
    sim.submit_as("alice", BatchRequest::new(Action::PowerOn, ["sim000009.dc1"])).await.unwrap();
    let e = sim.engine();
    let by_alice =
        e.list_batches(BatchListParams { submitter: Some("alice".into()), ..Default::default() }).await.unwrap();
    assert_eq!(by_alice.len(), 4);
    let power_on =
        e.list_batches(BatchListParams { action: Some(ActionKind::PowerOn), ..Default::default() }).await.unwrap();
    assert_eq!(power_on.len(), 1);
    let page1 = e.list_batches(BatchListParams { limit: 4, ..Default::default() }).await.unwrap();
    let page2 =
        e.list_batches(BatchListParams { limit: 4, before: Some(page1[3].id), ..Default::default() }).await.unwrap();
    assert_eq!((page1.len(), page2.len()), (4, 2));
    assert!(page1.iter().all(|a| page2.iter().all(|b| b.id < a.id)));
}

#[tokio::test]
async fn callbacks_need_the_right_token() {
    let mut sim = sim().await;
    sim.submit_as("alice", reimage("sim000001.dc1")).await.unwrap();
    sim.round(ROUND).await.unwrap();
    let err = sim.engine().report_wait_result("forged-token", JobOutcome::Succeeded).await.unwrap_err();
    assert!(err.to_string().contains("callback token does not match"), "{err}");
    sim.settle(Duration::from_secs(30), 1000).await.unwrap();
}

/// A BMC driver that panics on its first call and then behaves, and can be slow.
#[derive(Debug)]
struct Flaky {
    inner: SimFleet,
    panics_left: AtomicUsize,
    delay: Duration,
}

#[async_trait]
impl PowerDriver for Flaky {
    async fn power_status(&self, bmc: &BmcEndpoint) -> Result<PowerState, PowerError> {
        self.inner.power_status(bmc).await
    }
    async fn power(&self, bmc: &BmcEndpoint, op: PowerOp) -> Result<PowerReport, PowerError> {
        self.inner.power(bmc, op).await
    }
    async fn set_boot_device(&self, bmc: &BmcEndpoint, device: BootDevice, persistent: bool) -> Result<(), PowerError> {
        self.inner.set_boot_device(bmc, device, persistent).await
    }
    async fn boot_device(&self, bmc: &BmcEndpoint) -> Result<BootDevice, PowerError> {
        self.inner.boot_device(bmc).await
    }
    async fn probe(&self, bmc: &BmcEndpoint) -> Result<ProbeReport, PowerError> {
        if self.panics_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            panic!("driver bug on {}", bmc.address);
        }
        tokio::time::sleep(self.delay).await;
        self.inner.probe(bmc).await
    }
    async fn insert_media(&self, bmc: &BmcEndpoint, image_url: &str) -> Result<(), PowerError> {
        self.inner.insert_media(bmc, image_url).await
    }
    async fn eject_media(&self, bmc: &BmcEndpoint) -> Result<(), PowerError> {
        self.inner.eject_media(bmc).await
    }
}

async fn real_engine(driver: Flaky, hosts: usize) -> (Engine, Arc<MemStore>) {
    let store = Arc::new(MemStore::default());
    let list = fleet_hosts(&driver.inner, 1, hosts);
    store.host_upsert_many(list).await.unwrap();
    let clock = Arc::new(SystemClock::new());
    let config = EngineConfig {
        lease: Duration::from_millis(600),
        intervals: SingletonIntervals { rescue: Duration::from_millis(50), ..Default::default() },
        verify: VerifyPolicy {
            interval: Duration::from_millis(10),
            deadline: Duration::from_millis(200),
            soft_deadline: Duration::from_millis(200),
        },
        ..EngineConfig::default()
    };
    let engine =
        Engine::builder(store.clone(), store.clone(), Arc::new(driver), clock.clone(), IdGenerator::new(clock, 5))
            .config(config)
            .rules(machine::Rules {
                retry: machine::RetryPolicy { base: Duration::from_millis(10), max: Duration::from_millis(50) },
                ..Default::default()
            })
            .build();
    (engine, store)
}

fn pool_config(workers: usize, grace: Duration) -> PoolConfig {
    PoolConfig {
        site: Site::new("dc1").unwrap(),
        pool: Pool::new("web").unwrap(),
        workers,
        worker: WorkerConfig {
            idle_poll: Duration::from_millis(10),
            flush_interval: Duration::from_millis(5),
            shutdown_grace: grace,
            ..Default::default()
        },
        restart_delay: Duration::from_millis(10),
        instance: "test".into(),
    }
}

/// A step whose driver panics fails that attempt (retryably, naming the panic) and its
/// worker keeps running every other step: the retry then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_step_fails_its_attempt_and_its_worker_keeps_running() {
    let driver =
        Flaky { inner: SimFleet::new(1, FaultPlan::none()), panics_left: AtomicUsize::new(1), delay: Duration::ZERO };
    let (engine, store) = real_engine(driver, 6).await;
    let pool = WorkerPool::start(&engine, pool_config(2, Duration::from_secs(1)));
    let mut singletons = Singletons::new(engine.clone(), "test");
    let id = engine.submit(&alice(), &reboot("sim[000001-000006].dc1")).await.unwrap().batch.id;
    let mut state = BatchState::Running;
    for _ in 0..300 {
        singletons.tick(engine.clock().now()).await;
        state = engine.get_batch(id).await.unwrap().batch.state;
        if state.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, BatchState::Completed);
    let jobs = store.job_list(JobListParams::default()).await.unwrap();
    let retried: Vec<_> = jobs.iter().filter(|j| j.attempt > 1).collect();
    assert_eq!(retried.len(), 1, "one attempt panicked");
    let error = retried[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("the step panicked: driver bug on 10.1.0."), "{error}");
    let report = pool.shutdown().await;
    assert_eq!(report.restarts, 0, "no worker crashed: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_unfinished_jobs_back_without_spending_an_attempt() {
    let driver = Flaky {
        inner: SimFleet::new(1, FaultPlan::none()),
        panics_left: AtomicUsize::new(0),
        delay: Duration::from_secs(30),
    };
    let (engine, store) = real_engine(driver, 2).await;
    let pool = WorkerPool::start(&engine, pool_config(1, Duration::from_millis(100)));
    engine.submit(&alice(), &reboot("sim[000001-000002].dc1")).await.unwrap();
    for _ in 0..100 {
        if store.jobs_snapshot().iter().any(|j| j.state == JobState::Running) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = pool.shutdown().await;
    assert_eq!(report.restarts, 0);
    let heads: Vec<JobRecord> = store.jobs_snapshot().into_iter().filter(|j| j.position == 0).collect();
    assert_eq!(heads.len(), 2);
    for j in heads {
        assert_eq!(j.state, JobState::Available, "handed back: {j:?}");
        assert_eq!((j.attempt, j.max_attempts), (1, plan::StepKind::Preflight.default_max_attempts() + 1));
        assert!(j.lease_owner.is_none());
    }
}

/// A notifier that always fails, counting its attempts.
struct Down(Arc<AtomicUsize>);

#[async_trait]
impl maas_core::ports::services::Notifier for Down {
    async fn deliver(&self, _: &[model::Event]) -> Result<(), maas_core::ports::services::NotifyError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(maas_core::ports::services::NotifyError::Unreachable {
            receiver: "flaky".into(),
            cause: "connection refused".into(),
        })
    }
}

#[tokio::test]
async fn a_failing_notifier_is_retried_with_doubling_backoff_and_does_not_hold_back_others() {
    use maas_core::policy::leader::{NOTIFY_BACKOFF_MAX, notify_backoff};
    let base = Duration::from_secs(1);
    assert_eq!([1, 2, 3, 4].map(|f| notify_backoff(f, base).as_secs()), [1, 2, 4, 8]);
    assert_eq!(notify_backoff(40, base), NOTIFY_BACKOFF_MAX);

    let store = Arc::new(MemStore::default());
    let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
    store.host_upsert_many(fleet_hosts(&fleet, 1, 2)).await.unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    let attempts = Arc::new(AtomicUsize::new(0));
    let engine =
        Engine::builder(store.clone(), store.clone(), fleet, clock.clone(), IdGenerator::new(clock.clone(), 5))
            .notifier("down", Arc::new(Down(attempts.clone())))
            .build();
    engine.submit(&alice(), &reboot("sim000001.dc1")).await.unwrap();
    let singletons = Singletons::new(engine.clone(), "leader");
    // Try every 100 ms for 20 s: attempts at 0, 1, 3, 7 and 15 s.
    let mut at = Vec::new();
    for tick in 0..200 {
        let before = attempts.load(Ordering::SeqCst);
        let result = singletons.deliver_outbox().await;
        if attempts.load(Ordering::SeqCst) > before {
            let e = result.unwrap_err().to_string();
            assert!(e.contains("down: notifier: flaky unreachable: connection refused (failure"), "{e}");
            at.push(tick * 100);
        } else {
            assert!(result.is_ok(), "a waiting notifier is not an error");
        }
        clock.advance(Duration::from_millis(100));
    }
    assert_eq!(at, [0, 1_000, 3_000, 7_000, 15_000]);
    // The ticket consumer was not held back by the failing notifier.
    let backlog = engine.outbox_backlog().await.unwrap();
    let pending = |c: &str| backlog.iter().find(|b| b.consumer == c).unwrap().oldest_pending_at;
    assert!(pending("notify:down").is_some() && pending("tickets").is_none(), "{backlog:?}");
}

#[tokio::test]
async fn virtual_media_is_ejected_on_every_exit_path() {
    let mut sim = sim().await;
    let names: Vec<Hostname> =
        ["sim000001.dc1", "sim000002.dc1", "sim000003.dc1"].iter().map(|n| Hostname::new(n).unwrap()).collect();
    // Three hosts boot by virtual media (their BMCs speak Redfish).
    let mut hosts = sim.store().host_get_many(&names).await.unwrap();
    for h in &mut hosts {
        h.bmc.protocol = maas_core::host::BmcProtocol::Redfish;
        h.boot_method = maas_core::host::BootMethod::VirtualMedia;
    }
    sim.engine().import_hosts(&Principal::new("olga", []), hosts.clone()).await.unwrap();
    sim.set_install("sim000002.dc1", Duration::from_secs(60), false);
    sim.set_install("sim000003.dc1", Duration::from_secs(36_000), true);
    let succeeds = sim.submit_as("alice", reimage("sim000001.dc1")).await.unwrap();
    let fails = sim.submit_as("alice", reimage("sim000002.dc1")).await.unwrap();
    let cancelled = sim.submit_as("alice", reimage("sim000003.dc1")).await.unwrap();
    let media = |sim: &Simulation, i: usize| sim.fleet().bmc(&hosts[i].bmc).unwrap();
    for _ in 0..200 {
        if media(&sim, 2).media.is_some() {
            break;
        }
        sim.round(ROUND).await.unwrap();
    }
    assert_eq!(media(&sim, 2).media.as_deref(), Some("http://boot.sim/images/ubuntu-24.04/iso"));
    // Cancelled while its installer runs: the fence ejects before it powers off.
    sim.engine().cancel_batch(&alice(), cancelled, "wrong image").await.unwrap();
    sim.settle(ROUND, 2000).await.unwrap();
    // Two more rounds: the outbox's ejector sees the failed host's end.
    sim.round(ROUND).await.unwrap();
    sim.round(ROUND).await.unwrap();
    for (id, state, (succeeded, failed, cancelled_hosts)) in
        [(succeeds, BatchState::Completed, (1, 0, 0)), (fails, BatchState::Completed, (0, 1, 0))]
    {
        let b = sim.engine().get_batch(id).await.unwrap().batch;
        assert_eq!(
            (b.state, b.counts.succeeded, b.counts.failed, b.counts.cancelled),
            (state, succeeded, failed, cancelled_hosts)
        );
    }
    assert_eq!(sim.engine().get_batch(cancelled).await.unwrap().batch.state, BatchState::Cancelled);
    for (i, name) in names.iter().enumerate() {
        let bmc = media(&sim, i);
        assert_eq!((bmc.media.as_deref(), bmc.media_inserts), (None, 1), "{name}: {bmc:?}");
    }
    assert_eq!(media(&sim, 0).boot, BootDevice::Disk, "the reimaged host boots its disk");
}

#[tokio::test]
async fn a_late_eject_leaves_the_drive_of_a_host_that_runs_again() {
    use maas_core::ports::services::Notifier;
    let mut sim = sim().await;
    let name = Hostname::new("sim000004.dc1").unwrap();
    let mut host = sim.store().host_get_many(std::slice::from_ref(&name)).await.unwrap().remove(0);
    host.bmc.protocol = maas_core::host::BmcProtocol::Redfish;
    host.boot_method = maas_core::host::BootMethod::VirtualMedia;
    sim.engine().import_hosts(&Principal::new("olga", []), vec![host.clone()]).await.unwrap();
    // The host runs again (a batch holds it) with its ISO in the drive, when the failure
    // event of its previous run reaches an ejector (late, or a new consumer's first pass).
    let mut again = reimage("sim000004.dc1");
    again.not_before = Some(sim.clock().now().plus(Duration::from_secs(3600)));
    let batch = sim.submit_as("alice", again).await.unwrap();
    sim.fleet().insert_media(&host.bmc, "http://boot.sim/images/ubuntu-24.04/iso").await.unwrap();
    let store: Arc<dyn maas_sim::sim::SimBackend> = sim.store().clone();
    let ejector = maas_engine::media::MediaEjector::new(sim.fleet().clone(), store.clone(), store);
    let failed = Event {
        seq: 1,
        batch_id: BatchId(uuid::Uuid::from_u128(1)),
        at: sim.clock().now(),
        kind: EventKind::HostFailed {
            host: name.clone(),
            step: plan::StepKind::AwaitInstall,
            error: "x".into(),
            wedged: false,
        },
    };
    ejector.deliver(std::slice::from_ref(&failed)).await.unwrap();
    assert!(sim.fleet().bmc(&host.bmc).unwrap().media.is_some(), "the current run's ISO was ejected");
    // Once nothing holds the host, the same event ejects.
    sim.engine().cancel_batch(&alice(), batch, "not now").await.unwrap();
    sim.settle(ROUND, 100).await.unwrap();
    ejector.deliver(std::slice::from_ref(&failed)).await.unwrap();
    assert_eq!(sim.fleet().bmc(&host.bmc).unwrap().media, None);
}

/// An inventory whose host reads fail (the database is away) a given number of times.
struct AwayInventory {
    inner: Arc<MemStore>,
    failures_left: AtomicUsize,
    reads: AtomicUsize,
}

#[async_trait]
impl Inventory for AwayInventory {
    async fn host_get_many(&self, names: &[Hostname]) -> Result<Vec<Host>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(StoreError::Backend { message: "connection refused".into(), source: None });
        }
        self.inner.host_get_many(names).await
    }
    async fn host_list(&self, filter: HostFilter) -> Result<Vec<Host>, StoreError> {
        self.inner.host_list(filter).await
    }
    async fn host_upsert_many(&self, hosts: Vec<Host>) -> Result<usize, StoreError> {
        self.inner.host_upsert_many(hosts).await
    }
    async fn host_set_state(&self, name: &Hostname, change: StateChange) -> Result<(), StoreError> {
        self.inner.host_set_state(name, change).await
    }
}

/// A job claimed just before the database went away (its worker could not look its host
/// up) waits for the database instead of spending its attempt, for up to half a lease;
/// past that it fails its attempt retryably, naming the store's error.
#[tokio::test]
async fn a_step_whose_host_cannot_be_read_waits_for_the_store_up_to_half_a_lease() {
    for (failures, succeeds) in [(4, true), (1_000, false)] {
        let store = Arc::new(MemStore::default());
        let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
        store.host_upsert_many(fleet_hosts(&fleet, 1, 1)).await.unwrap();
        let inventory = Arc::new(AwayInventory { inner: store.clone(), failures_left: 0.into(), reads: 0.into() });
        let clock = Arc::new(ManualClock::simulated(Timestamp::from_millis(1_000_000)));
        let engine =
            Engine::builder(store.clone(), inventory.clone(), fleet, clock.clone(), IdGenerator::new(clock, 3)).build();
        engine.submit(&alice(), &reboot("sim000001.dc1")).await.unwrap();
        // The database goes away now.
        inventory.failures_left.store(failures, Ordering::SeqCst);
        inventory.reads.store(0, Ordering::SeqCst);
        let now = engine.clock().now();
        let claim = JobClaimParams {
            site: Site::new("dc1").unwrap(),
            kinds: maas_core::plan::StepKind::ALL.to_vec(),
            limit: 1,
            owner: "w1".into(),
            now,
            lease: engine.config().lease,
        };
        let job = store.job_claim(claim).await.unwrap().pop().expect("the preflight is claimable");
        let worker = WorkerConfig::default();
        let outcome = engine.run_step(&job, &worker).await;
        let reads = inventory.reads.load(Ordering::SeqCst);
        if succeeds {
            assert_eq!(outcome, JobOutcome::Succeeded, "ran once the store answered");
            assert_eq!(reads, failures + 1);
        } else {
            let JobOutcome::Failed { error, retryable } = outcome else { panic!("{outcome:?}") };
            assert!(retryable && error.contains("connection refused"), "{error}");
            // 250 ms doubling to 10 s within 30 s (half the default lease of 60 s).
            let mut waited = Duration::ZERO;
            let mut n = 0;
            while let Some(w) = worker.step_read_wait(n + 1, waited, engine.config().lease) {
                (waited, n) = (waited + w, n + 1);
            }
            assert_eq!(reads, n as usize + 1, "gave up after {waited:?}");
            assert!(waited <= Duration::from_secs(30) && waited >= Duration::from_secs(20), "{waited:?}");
        }
    }
}

/// A reimage's `set_boot_pxe` step reads its chain (for the installer's callback token).
/// While the database is away it waits for it, as the host read does, instead of spending
/// its attempt: the batch completes with every job on its first attempt.
#[tokio::test]
async fn a_step_that_cannot_read_its_chain_waits_for_the_store() {
    let mut sim = sim().await;
    let id = sim.submit_as("alice", reimage("sim000001.dc1")).await.unwrap();
    let mem = sim.mem().expect("in-memory simulation").clone();
    mem.fail_chain_reads(3);
    sim.settle(ROUND, 1000).await.unwrap();
    assert_eq!(mem.chain_reads_failing(), 0, "the step met the outage");
    let view = sim.engine().get_batch(id).await.unwrap();
    assert_eq!((view.batch.state, view.batch.counts.succeeded), (BatchState::Completed, 1));
    let again: Vec<_> = mem.jobs_snapshot().into_iter().filter(|j| j.attempt > 1).map(|j| j.kind).collect();
    assert!(again.is_empty(), "attempts spent on the outage: {again:?}");
}
