//! Reporting behaviours (`ReportStore`): lists, statistics, activity, tickets and the
//! worker registry, as readers see them.

use std::time::Duration;

use maas_core::action::Action;
use maas_core::machine::JobOutcome;
use maas_core::model::*;
use maas_core::names::{Hostname, Pool};
use maas_core::plan::StepKind;
use maas_core::ports::store::*;

use super::*;

/// Batches list newest first, filtered by submitter, state and action, and page by id.
pub async fn batch_list_filters_and_pages(t: Harness) {
    let hosts = t.add_hosts("dc1", 5).await;
    let mut ids = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let action = if i % 2 == 0 { reboot() } else { Action::PowerOn };
        ids.push(t.submit(std::slice::from_ref(host), action, |_| {}).await.unwrap().batch.id);
        t.clock.advance(Duration::from_secs(1));
    }
    let page1 = t.store.batch_list(BatchListParams { limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(page1.iter().map(|b| b.id).collect::<Vec<_>>(), vec![ids[4], ids[3]]);
    let page2 =
        t.store.batch_list(BatchListParams { limit: 2, before: Some(ids[3]), ..Default::default() }).await.unwrap();
    assert_eq!(page2.iter().map(|b| b.id).collect::<Vec<_>>(), vec![ids[2], ids[1]]);
    let reboots = t
        .store
        .batch_list(BatchListParams { action: Some(maas_core::action::ActionKind::Reboot), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(reboots.len(), 3);
    let theirs =
        t.store.batch_list(BatchListParams { submitter: Some("carol".into()), ..Default::default() }).await.unwrap();
    assert!(theirs.is_empty());
    let done = t
        .store
        .batch_list(BatchListParams { states: vec![BatchState::Completed], ..Default::default() })
        .await
        .unwrap();
    assert!(done.is_empty());
}

/// Finished host runs are reported for statistics within a time window.
pub async fn finished_host_runs_are_sampled_for_stats(t: Harness) {
    let hosts = t.add_hosts("dc1", 2).await;
    let start = t.now();
    t.submit(&hosts, Action::PowerOn, |_| {}).await.unwrap();
    t.clock.advance(Duration::from_secs(5));
    t.drain("dc1", 5).await;
    let s = t
        .store
        .stats_host_runs(StatsParams { finished_from: Some(start), finished_until: None, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(s.len(), 2);
    assert!(
        s.iter()
            .all(|x| x.state == HostRunState::Succeeded && x.finished_at.since(x.started_at) == Duration::from_secs(5))
    );
    let none = t
        .store
        .stats_host_runs(StatsParams {
            finished_from: Some(t.now().plus(Duration::from_secs(1))),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// Step samples cover succeeded steps in the window with the batch's action and the host's
/// SKU; activity counts what is in flight per site, queue depths what waits per site and kind.
pub async fn step_samples_and_site_activity(t: Harness) {
    let dc1 = t.add_hosts("dc1", 2).await;
    let dc2 = t.add_hosts("dc2", 1).await;
    let start = t.now();
    t.submit(&dc1, reboot(), |_| {}).await.unwrap();
    t.submit(&dc2, reboot(), |_| {}).await.unwrap();
    let running = t.claim("dc1", 1, "w").await;
    let active = t.store.stats_active().await.unwrap();
    let get = |s: &str| active.iter().find(|a| a.site.as_str() == s).cloned().unwrap();
    let (a1, a2) = (get("dc1"), get("dc2"));
    assert_eq!((a1.hosts_in_flight, a1.jobs_running, a1.jobs_queued, a1.jobs_waiting), (2, 1, 1, 0));
    assert_eq!((a2.hosts_in_flight, a2.jobs_running, a2.jobs_queued), (1, 0, 1));
    let queues = t.store.stats_queues().await.unwrap();
    let queues: Vec<_> = queues.iter().map(|q| (q.site.as_str(), q.kind, q.queued, q.oldest_enqueued_at)).collect();
    assert_eq!(queues, [("dc1", StepKind::Preflight, 1, Some(start)), ("dc2", StepKind::Preflight, 1, Some(start))]);
    t.clock.advance(Duration::from_secs(7));
    t.complete(&running[0], JobOutcome::Succeeded).await.unwrap();
    let samples = t
        .store
        .stats_steps(StatsParams { finished_from: Some(start), finished_until: None, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(samples.len(), 1);
    let s = &samples[0];
    assert_eq!(
        (s.kind, s.action, s.sku.as_str()),
        (StepKind::Preflight, maas_core::action::ActionKind::Reboot, "gen9")
    );
    assert_eq!(s.finished_at.since(s.started_at), Duration::from_secs(7));
    let later = StatsParams {
        finished_from: Some(t.now().plus(Duration::from_secs(1))),
        finished_until: None,
        ..Default::default()
    };
    assert!(t.store.stats_steps(later).await.unwrap().is_empty());
}

/// Tickets are idempotent per (kind, batch, host) and listed newest first.
pub async fn tickets_are_idempotent_and_listed_newest_first(t: Harness) {
    use maas_core::ports::services::{Ticket, TicketKind};
    let hosts = t.add_hosts("dc1", 1).await;
    let batch = t.submit(&hosts, reboot(), |_| {}).await.unwrap().batch;
    let ticket = |kind, host: Option<Hostname>| Ticket {
        kind,
        batch_id: batch.id,
        host,
        step: None,
        summary: "needs a human".into(),
        at: t.now(),
    };
    let (first, new) = t.store.ticket_open(ticket(TicketKind::WedgedHost, Some(hosts[0].clone()))).await.unwrap();
    assert!(new);
    let (again, new) = t.store.ticket_open(ticket(TicketKind::WedgedHost, Some(hosts[0].clone()))).await.unwrap();
    assert_eq!((again.as_str(), new), (first.as_str(), false));
    let (other, _) = t.store.ticket_open(ticket(TicketKind::FailureBudget, None)).await.unwrap();
    assert_ne!(other, first);
    let list = t.store.ticket_list(10).await.unwrap();
    assert_eq!(list.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![other, first]);
}

/// The pool -> kinds mapping and the worker registry round-trip; liveness by freshness.
pub async fn pool_kinds_and_worker_registry_round_trip(t: Harness) {
    let pool = Pool::new("build").unwrap();
    assert_eq!(t.store.pool_kinds_get(&pool).await.unwrap(), None);
    t.store.pool_kinds_set(&pool, &[StepKind::SetBootPxe, StepKind::AwaitInstall]).await.unwrap();
    t.store.pool_kinds_set(&pool, &[StepKind::SetBootPxe]).await.unwrap();
    assert_eq!(t.store.pool_kinds_get(&pool).await.unwrap(), Some(vec![StepKind::SetBootPxe]));
    let hb = |id: &str, s: &str, now| WorkerHeartbeatParams { id: id.into(), site: site(s), pool: pool.clone(), now };
    t.store.worker_heartbeat(hb("w1", "dc1", t.now())).await.unwrap();
    t.store.worker_heartbeat(hb("w2", "dc2", t.now())).await.unwrap();
    t.clock.advance(Duration::from_secs(200));
    t.store.worker_heartbeat(hb("w1", "dc1", t.now())).await.unwrap();
    let fresh = t
        .store
        .worker_list(WorkerListParams { site: None, fresh_since: Some(t.now().minus(Duration::from_secs(180))) })
        .await
        .unwrap();
    assert_eq!(fresh.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), vec!["w1"]);
    let dc2 = t.store.worker_list(WorkerListParams { site: Some(site("dc2")), fresh_since: None }).await.unwrap();
    assert_eq!(dc2.len(), 1);
    assert!(fresh[0].started_at < fresh[0].last_heartbeat);
}

/// The audit trail: a submission's entry commits with its batch, a cancel's and a pause's
/// and a resume's with the change (a refused one writes none), entries written alone are
/// appended, and lists filter by principal, operation, host, batch and time and page by id,
/// newest first.
pub async fn audit_entries_commit_with_their_change_and_filter_and_page(t: Harness) {
    let hosts = t.add_hosts("dc1", 4).await;
    let alice = maas_core::authz::Principal::new("alice", []);
    let first = t.submit(&hosts[..2], reboot(), |_| {}).await.unwrap().batch;
    t.clock.advance(Duration::from_secs(10));
    let second = t.submit(&hosts[2..], reboot(), |s| s.comment = Some("CHG-1".into())).await.unwrap().batch;
    let now = t.now();
    let pause = |paused| BatchSetPausedParams {
        batch_id: second.id,
        principal: alice.clone(),
        paused,
        reason: if paused { "look first".into() } else { String::new() },
        now,
    };
    t.store.batch_set_paused(pause(true)).await.unwrap();
    // A second pause is refused by the decision: no entry (the engine audits the refusal).
    assert!(t.store.batch_set_paused(pause(true)).await.is_err());
    t.store.batch_set_paused(pause(false)).await.unwrap();
    let cancel = BatchCancelParams { batch_id: first.id, principal: alice.clone(), reason: "wrong hosts".into(), now };
    t.store.batch_cancel(cancel).await.unwrap();
    t.clock.advance(Duration::from_secs(10));
    let mut refused = AuditRecord::new(AuditOp::SetHostState, "mallory", t.now()).on_hosts(&[hosts[3].as_str()]);
    refused.summary = "state allocated".into();
    t.store.audit_append(refused.refused("mallory lacks permission: admin")).await.unwrap();

    let all = t.store.audit_list(AuditFilter::default()).await.unwrap();
    let ops: Vec<(AuditOp, bool)> = all.iter().map(|a| (a.op, a.accepted)).collect();
    assert_eq!(
        ops,
        [
            (AuditOp::SetHostState, false),
            (AuditOp::Cancel, true),
            (AuditOp::Resume, true),
            (AuditOp::Pause, true),
            (AuditOp::Submit, true),
            (AuditOp::Submit, true),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first, ids increasing");
    assert_eq!(all[0].error.as_deref(), Some("mallory lacks permission: admin"));
    assert_eq!((all[1].reason.as_deref(), all[1].batch_id), (Some("wrong hosts"), Some(first.id)));
    assert_eq!(all[4].comment.as_deref(), Some("CHG-1"));
    let list = |f: AuditFilter| async { t.store.audit_list(f).await.unwrap() };
    let ids = |v: Vec<AuditRecord>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    // By principal, operation, batch.
    assert_eq!(list(AuditFilter { principal: Some("mallory".into()), ..Default::default() }).await.len(), 1);
    let cancels = list(AuditFilter { op: Some(AuditOp::Cancel), ..Default::default() }).await;
    assert_eq!(ids(cancels), [all[1].id]);
    let of_second = list(AuditFilter { batch_id: Some(second.id), ..Default::default() }).await;
    assert_eq!(ids(of_second), [all[2].id, all[3].id, all[4].id]);
    // By host: the submissions, pauses and cancels that named it, and the refused change.
    let of_host3 = list(AuditFilter { host: Some(hosts[3].clone()), ..Default::default() }).await;
    assert_eq!(ids(of_host3), [all[0].id, all[2].id, all[3].id, all[4].id]);
    let of_host0 = list(AuditFilter { host: Some(hosts[0].clone()), ..Default::default() }).await;
    assert_eq!(ids(of_host0), [all[1].id, all[5].id]);
    // By time: [from, until).
    let window = AuditFilter { from: Some(first.created_at), until: Some(second.created_at), ..Default::default() };
    assert_eq!(ids(list(window).await), [all[5].id]);
    // Paging by id.
    let page1 = list(AuditFilter { limit: 4, ..Default::default() }).await;
    assert_eq!(page1.len(), 4);
    let page2 = list(AuditFilter { limit: 4, before_id: Some(page1[3].id), ..Default::default() }).await;
    assert_eq!(ids(page2), [all[4].id, all[5].id]);
    let host_page =
        AuditFilter { host: Some(hosts[3].clone()), limit: 2, before_id: Some(all[0].id), ..Default::default() };
    assert_eq!(ids(list(host_page).await), [all[2].id, all[3].id]);
}
