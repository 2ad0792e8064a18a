//! Integration tests against a real `maasd` process on a loopback port, with certificates
//! generated for the test: submit -> watch -> complete, overlap rejection with structured
//! details, dry run, cancel, and the refusals (no certificate, another CA's certificate,
//! no permission, plaintext on a non-loopback address) that change nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod private_db;
mod support;

use futures::StreamExt;
use maas_grpc::devcerts::{DevCa, write_dev_certs};
use maas_grpc::pb::maas_client::MaasClient;
use maas_grpc::pb::{self, action::Kind};
use maas_grpc::tls::TlsFiles;
use private_db::{PrivateDb, PrivateMariadb, PrivatePostgres};
use support::*;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_complete_overlap_dry_run_and_cancel() {
    let d = start("flow");
    let mut alice = client(&d, "alice").await;

    // submit -> watch -> complete
    let id = alice.submit_batch(reboot("sim[000001-000005].dc1")).await.unwrap().into_inner().batch_id;
    let mut events =
        alice.watch_batch(pb::WatchBatchRequest { batch_id: id.clone(), after: 0 }).await.unwrap().into_inner();
    let mut kinds = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(30), events.next()).await.expect("events keep coming")
    {
        kinds.push(e.unwrap().kind);
    }
    assert_eq!(kinds.first().map(String::as_str), Some("batch_accepted"));
    assert_eq!(kinds.last().map(String::as_str), Some("batch_completed"));
    assert_eq!(kinds.iter().filter(|k| *k == "host_succeeded").count(), 5);
    let b = alice
        .get_batch(pb::GetBatchRequest { batch_id: id, hostnames: vec![], steps: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((b.state.as_str(), b.counts.unwrap().succeeded, b.hosts.len()), ("completed", 5, 5));

    // A batch that starts in an hour holds its hosts without running (so nothing races
    // it), and an overlapping batch is refused with every conflicting host and its holder
    // in the status details.
    let mut held = reimage("sim[000010-000014].dc1");
    held.not_before_ms = Some(now_ms() + 3_600_000);
    let holder = alice.submit_batch(held).await.unwrap().into_inner().batch_id;
    let before = batch_count(&mut alice).await;
    let err = alice.submit_batch(reboot("sim[000012-000016].dc1")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let rejection = maas_grpc::client::rejection(&err).expect("structured details");
    let mut conflicts: Vec<(String, String)> =
        rejection.conflicts.iter().map(|c| (c.hostname.clone(), c.batch_id.clone())).collect();
    conflicts.sort();
    assert_eq!(
        conflicts,
        ["sim000012.dc1", "sim000013.dc1", "sim000014.dc1"].map(|h| (h.to_string(), holder.clone())).to_vec()
    );
    assert_eq!(batch_count(&mut alice).await, before, "nothing was written");

    // Dry run: the plan and the problems, nothing written.
    let mut dry = reboot("sim[000014-000015].dc1,ghost.dc1");
    dry.dry_run = true;
    let report = alice.submit_batch(dry).await.unwrap().into_inner();
    assert!(!report.acceptable);
    assert_eq!(report.plan, ["preflight", "power_cycle", "verify"]);
    let problems = report.problems.unwrap();
    assert_eq!(problems.unknown_hosts, ["ghost.dc1"]);
    assert_eq!(problems.conflicts.len(), 1);
    assert_eq!(batch_count(&mut alice).await, before);

    // Cancel frees the hosts.
    let cancelled = alice
        .cancel_batch(pb::CancelBatchRequest { batch_id: holder.clone(), reason: "change window over".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(cancelled.state == "cancelling" || cancelled.state == "cancelled", "{cancelled:?}");
    let mut state = String::new();
    for _ in 0..100 {
        state = alice
            .get_batch(pb::GetBatchRequest { batch_id: holder.clone(), hostnames: vec![], steps: false })
            .await
            .unwrap()
            .into_inner()
            .state;
        if state == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "cancelled");
    alice.submit_batch(reboot("sim[000012-000016].dc1")).await.expect("the hosts are free again");
}

/// A priority above normal needs a grant (`max_priority` in the policy; admins have every
/// class): alice, granted none, is refused PERMISSION_DENIED naming what she is granted,
/// and nothing is written; olga, an admin, submits urgent work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_above_the_grant_are_permission_denied() {
    let d = start("priority");
    let mut alice = client(&d, "alice").await;
    let before = batch_count(&mut alice).await;
    let mut urgent = reboot("sim000001.dc1");
    urgent.priority = pb::Priority::Urgent as i32;
    let err = alice.submit_batch(urgent.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("alice lacks permission: priority urgent; the policy grants alice priorities up to normal"),
        "{}",
        err.message()
    );
    assert_eq!(batch_count(&mut alice).await, before, "nothing was written");
    let mut olga = client(&d, "olga").await;
    olga.submit_batch(urgent).await.expect("an admin may submit urgent work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_callers_change_nothing() {
    let d = start("refusals");
    let mut alice = client(&d, "alice").await;
    let before = batch_count(&mut alice).await;

    // No client certificate: the handshake or the first RPC fails.
    let ca = d.dir.join("certs/ca.pem");
    let anonymous = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(&ca).unwrap()))
        .domain_name("localhost");
    match client_with(d.port, anonymous).await {
        Err(_) => {}
        Ok(mut c) => {
            let err = c.submit_batch(reboot("sim000001.dc1")).await.unwrap_err();
            assert!(
                matches!(
                    err.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unauthenticated
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                ),
                "{err:?}"
            );
        }
    }

    // A certificate from another CA.
    let other = std::env::temp_dir().join(format!("maasd-other-ca-{}", std::process::id()));
    let ca2 = DevCa::new("someone else's CA").unwrap();
    let (cert, key) = ca2.client("alice", None).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("alice.pem"), cert).unwrap();
    std::fs::write(other.join("alice-key.pem"), key).unwrap();
    let forged = TlsFiles { cert: other.join("alice.pem"), key: other.join("alice-key.pem"), ca: Some(ca.clone()) }
        .client("localhost")
        .unwrap();
    match client_with(d.port, forged).await {
        Err(_) => {}
        Ok(mut c) => {
            assert!(c.submit_batch(reboot("sim000001.dc1")).await.is_err(), "another CA's certificate is refused")
        }
    }
    let _ = std::fs::remove_dir_all(&other);

    // A valid certificate without permission for the pool: PERMISSION_DENIED, naming the
    // permission host by host.
    let mut bob = client(&d, "bob").await;
    let err = bob.submit_batch(reboot("sim[000001-000003].dc1")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let rejection = maas_grpc::client::rejection(&err).unwrap();
    assert_eq!(rejection.unauthorized.len(), 3);
    assert!(rejection.unauthorized[0].contains("bob lacks permission: reboot on pool web"), "{rejection:?}");

    assert_eq!(batch_count(&mut alice).await, before, "no refused request wrote anything");
}

#[test]
fn plaintext_on_a_non_loopback_address_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_maasd"))
        .args(["--plaintext", "--listen", "0.0.0.0:0", "--db", "sqlite://unused.db", "--metrics-listen", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("plaintext is refused on 0.0.0.0:0"), "{stderr}");
    assert!(!Path::new("unused.db").exists(), "refused before opening anything");
}

#[test]
fn missing_certificates_fail_at_startup_with_the_file_named() {
    let dir = std::env::temp_dir().join(format!("maasd-nocerts-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_maasd"))
        .arg("--certs")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0", "--db", "sqlite://unused.db", "--metrics-listen", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.pem") && stderr.contains("maasctl dev-certs"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_pool_kinds_counts_and_tickets() {
    let d = start("inventory");
    let (mut alice, mut olga) = (client(&d, "alice").await, client(&d, "olga").await);
    let dc2 = || pb::ListHostsRequest { site: "dc2".into(), ..Default::default() };

    // Only admins import; a bad record is named and nothing is written.
    let import = pb::ImportHostsRequest { hosts: vec![host("db1.dc2", "db"), host("db2.dc2", "db")] };
    let err = alice.import_hosts(import.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("admin"), "{err:?}");
    let mut bad = import.clone();
    bad.hosts[1].hostname = "Not A Host!".into();
    let err = olga.import_hosts(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("hosts[1].hostname"), "{err:?}");
    assert!(alice.list_hosts(dc2()).await.unwrap().into_inner().hosts.is_empty());
    assert_eq!(olga.import_hosts(import.clone()).await.unwrap().into_inner().written, 2);
    assert_eq!(olga.import_hosts(import).await.unwrap().into_inner().written, 2, "idempotent");
    let hosts = alice.list_hosts(dc2()).await.unwrap().into_inner().hosts;
    assert_eq!(hosts.iter().map(|h| h.hostname.as_str()).collect::<Vec<_>>(), ["db1.dc2", "db2.dc2"]);
    assert_eq!((hosts[0].state.as_str(), hosts[0].bmc_port), ("ready", 623));

    olga.set_host_state(pb::SetHostStateRequest {
        hostname: "db2.dc2".into(),
        state: "defunct".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let defunct = pb::ListHostsRequest { state: "defunct".into(), ..Default::default() };
    assert_eq!(alice.list_hosts(defunct).await.unwrap().into_inner().hosts.len(), 1);
    let err = alice
        .set_host_state(pb::SetHostStateRequest {
            hostname: "db1.dc2".into(),
            state: "gone".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(err.unwrap_err().code(), tonic::Code::InvalidArgument);

    // Pool kinds: every kind until an admin narrows them.
    let web = pb::PoolRef { pool: "web".into() };
    assert!(alice.get_pool_kinds(web.clone()).await.unwrap().into_inner().all);
    let narrowed =
        pb::PoolKinds { pool: "web".into(), kinds: vec!["preflight".into(), "power_cycle".into()], all: false };
    assert_eq!(alice.set_pool_kinds(narrowed.clone()).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    let set = olga.set_pool_kinds(narrowed).await.unwrap().into_inner();
    assert_eq!((set.all, set.kinds), (false, vec!["preflight".to_string(), "power_cycle".to_string()]));

    // Counts and tickets answer (maasd's workers heartbeat into the registry).
    let mut live = 0;
    for _ in 0..50 {
        let sites = alice.active_counts(pb::ActiveCountsRequest {}).await.unwrap().into_inner().sites;
        live = sites.iter().find(|s| s.site == "dc1").map_or(0, |s| s.live_workers);
        if live > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(live, 2, "maasd runs 2 workers in dc1/web");
    assert!(alice.list_tickets(pb::ListTicketsRequest { limit: 10 }).await.unwrap().into_inner().tickets.is_empty());
}

/// GET `path` on 127.0.0.1:`port` over plain HTTP/1.1: (status code, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, body.to_string())
}

/// `/readyz` asks the store: once maasd's database is gone (dropped under it, on
/// PostgreSQL and MariaDB) it answers 503 "store unavailable" within its 2 s bound, while
/// `/healthz` still answers (the process is alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_store_that_does_not_answer() {
    use sea_orm::ConnectionTrait;
    for (tag, server, drop) in [
        ("pg", "MAAS_TEST_POSTGRES_URL", "DROP DATABASE {} WITH (FORCE)"),
        ("my", "MAAS_TEST_MYSQL_URL", "DROP DATABASE {}"),
    ] {
        let d = start_on(&format!("readyz-{tag}"), server, &[]).await;
        assert_eq!(http_get(d.metrics_port, "/readyz"), (200, "ready".to_string()));
        let admin = sea_orm::Database::connect(&std::env::var(server).unwrap()).await.unwrap();
        let name = d.db.rsplit('/').next().unwrap().to_string();
        admin.execute_unprepared(&drop.replace("{}", &name)).await.unwrap();
        let (code, body) = http_get(d.metrics_port, "/readyz");
        assert_eq!((code, body.as_str()), (503, "store unavailable"), "{tag}");
        assert_eq!(http_get(d.metrics_port, "/healthz").0, 200, "{tag}: the process still answers");
    }
}

/// Checks the Prometheus text exposition format line by line; returns the samples as
/// (name, labels, value).
fn parse_exposition(text: &str) -> Vec<(String, String, f64)> {
    let name_ok = |n: &str| {
        let mut c = n.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    };
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(matches!(kind, "HELP" | "TYPE"), "unknown comment: {line}");
            assert!(name_ok(name), "bad metric name in: {line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or("");
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&t), "bad type: {line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                for pair in l.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label in: {line}"));
                    assert!(name_ok(k), "bad label name in: {line}");
                    assert!(!v.contains('\n'));
                }
                (n, l.to_string())
            }
            None => (series, String::new()),
        };
        assert!(name_ok(name), "bad metric name in: {line}");
        samples.push((name.to_string(), labels, value));
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrape_as_prometheus_exposition_format() {
    let d = start("metrics");
    assert_eq!(http_get(d.metrics_port, "/healthz").0, 200);
    assert_eq!(http_get(d.metrics_port, "/readyz").0, 200);
    let (mut alice, mut olga) = (client(&d, "alice").await, client(&d, "olga").await);
    let id = alice.submit_batch(reboot("sim[000001-000004].dc1")).await.unwrap().into_inner().batch_id;
    let mut events = alice.watch_batch(pb::WatchBatchRequest { batch_id: id, after: 0 }).await.unwrap().into_inner();
    while tokio::time::timeout(Duration::from_secs(30), events.next()).await.expect("events").is_some() {}
    // A host in dc2, where no worker runs: its first step stays queued.
    olga.import_hosts(pb::ImportHostsRequest { hosts: vec![host("web9.dc2", "web")] }).await.unwrap();
    let queued = alice.submit_batch(reboot("web9.dc2")).await.unwrap().into_inner();
    assert!(queued.warnings.iter().any(|w| w.contains("dc2")), "{:?}", queued.warnings);

    // BatchStats: the finished batch's hosts and their durations.
    let stats = alice.batch_stats(pb::BatchStatsRequest::default()).await.unwrap().into_inner();
    assert_eq!((stats.succeeded, stats.failed, stats.success_rate), (4, 0, Some(1.0)));
    assert_eq!(stats.batches_by_state.get("completed"), Some(&1));
    assert_eq!(stats.batches_by_state.get("running"), Some(&1));
    // By SKU: the simulated hosts alternate gen11 and gen10.
    let runs: Vec<(&str, &str, &str, u32)> = stats
        .host_runs
        .iter()
        .map(|r| (r.action.as_str(), r.site.as_str(), r.sku.as_str(), r.durations.as_ref().unwrap().count))
        .collect();
    assert_eq!(runs, [("reboot", "dc1", "gen10", 2), ("reboot", "dc1", "gen11", 2)]);
    let steps: Vec<&str> = stats.steps.iter().map(|s| s.step.as_str()).collect();
    assert!(steps.contains(&"power_cycle") && steps.contains(&"verify"), "{steps:?}");
    let later = pb::BatchStatsRequest { from_ms: Some(i64::MAX / 2), until_ms: None, ..Default::default() };
    assert_eq!(alice.batch_stats(later).await.unwrap().into_inner().succeeded, 0, "the window filters");
    // The outbox reaches the metrics notifier, and the gauges refresh, within seconds.
    let value = |samples: &[(String, String, f64)], name: &str, label: &str| {
        samples.iter().find(|(n, l, _)| n == name && l.contains(label)).map(|s| s.2)
    };
    let mut samples = Vec::new();
    for _ in 0..100 {
        let (code, body) = http_get(d.metrics_port, "/metrics");
        assert_eq!(code, 200);
        samples = parse_exposition(&body);
        if value(&samples, "maas_host_runs_total", "outcome=\"succeeded\"") == Some(4.0)
            && value(&samples, "maas_live_workers", "site=\"dc1\"") == Some(2.0)
            && value(&samples, "maas_queue_depth", "site=\"dc2\"") == Some(1.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sum = |name: &str, label: &str| -> f64 {
        samples.iter().filter(|(n, l, _)| n == name && l.contains(label)).map(|s| s.2).sum()
    };
    let value = |name: &str, label: &str| {
        value(&samples, name, label).unwrap_or_else(|| panic!("{name}{{{label}}} missing from the scrape"))
    };
    assert_eq!(value("maas_host_runs_total", "outcome=\"succeeded\""), 4.0);
    assert_eq!(
        value("maas_host_run_seconds_count", "action=\"reboot\",sku=\"gen10\",site=\"dc1\",outcome=\"succeeded\""),
        2.0
    );
    assert_eq!(sum("maas_host_run_seconds_count", "outcome=\"succeeded\""), 4.0);
    assert_eq!(sum("maas_step_seconds_count", "step=\"power_cycle\""), 4.0);
    assert_eq!(value("maas_batches_accepted_total", "action=\"reboot\""), 2.0);
    assert_eq!(value("maas_batches", "state=\"running\",action=\"reboot\""), 1.0);
    assert_eq!(value("maas_live_workers", "site=\"dc1\""), 2.0);
    assert_eq!(value("maas_queue_depth", "site=\"dc2\",kind=\"preflight\""), 1.0);
    assert!(value("maas_queue_oldest_seconds", "site=\"dc2\",kind=\"preflight\"") >= 0.0);
    // 4 hosts x 3 steps, claimed and completed by this process's workers.
    assert_eq!(value("maas_jobs_claimed_total", ""), 12.0);
    assert_eq!(value("maas_jobs_completed_total", ""), 12.0);
    assert!(value("maas_claims_total", "") >= 1.0);
    assert_eq!(value("maas_lease_rescues_total", "outcome=\"retried\""), 0.0);
    assert!(value("maas_rpc_total", "method=\"maas.v1.Maas/SubmitBatch\",code=\"Ok\"") >= 2.0);
    assert!(value("maas_rpc_seconds_count", "method=\"maas.v1.Maas/BatchStats\"") >= 2.0);
    // preflight probes, the cycle, and verify's status polls, against the simulated BMCs.
    assert!(value("maas_bmc_command_seconds_count", "op=\"power\"") >= 4.0);
    assert!(value("maas_outbox_lag_seconds", "consumer=\"tickets\"") >= 0.0);

    // Every metric the Grafana dashboard queries is exported (those counting rare events
    // appear with their first event).
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../deploy/grafana/maas-dashboard.json")).unwrap();
    let rare = ["maas_bmc_errors_total", "maas_stragglers_total"];
    let mut queried = std::collections::BTreeSet::new();
    for target in dashboard["panels"].as_array().unwrap().iter().flat_map(|p| p["targets"].as_array().unwrap()) {
        let expr = target["expr"].as_str().unwrap();
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("maas_")) {
            queried.insert(word.to_string());
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");
    for name in queried.iter().filter(|n| !rare.contains(&n.as_str())) {
        assert!(samples.iter().any(|(n, _, _)| n == name), "the dashboard queries {name}, which is not exported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_limits_and_oversize_requests() {
    let dir = std::env::temp_dir().join(format!("maasd-test-limits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_dev_certs(&dir.join("certs"), &["alice"]).unwrap();
    std::fs::write(dir.join("policy.json"), POLICY).unwrap();

    // A typo in the file is refused at startup, naming the key.
    std::fs::write(dir.join("bad.toml"), "[limits]\nmax_batch_host = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_maasd")).arg("--config").arg(dir.join("bad.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_batch_host") && stderr.contains("bad.toml"), "{stderr}");

    // The file sets the limits; flags (the listen address, the store) override it.
    let toml = "sim_hosts = 40\nlisten = \"127.0.0.1:1\"\n\
                [limits]\nmax_batch_hosts = 3\nexpansion_cap = 10\nmax_message_bytes = 2048\n\
                [log]\nformat = \"json\"\n";
    std::fs::write(dir.join("maasd.toml"), toml).unwrap();
    let d = spawn(&dir, "limits", &["--config".into(), dir.join("maasd.toml").display().to_string()]);
    let mut alice = client(&d, "alice").await;

    let err = alice.submit_batch(reboot("sim[000001-000005].dc1")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("the batch has 5 hosts; the limit is 3"), "{err:?}");
    let err = alice.submit_batch(reboot("sim[000001-000020].dc1")).await.unwrap_err();
    assert!(err.message().contains("expands to 20 names; the limit is 10"), "{err:?}");
    let mut huge = reboot("sim000001.dc1");
    huge.comment = "x".repeat(4096);
    let err = alice.submit_batch(huge).await.unwrap_err();
    assert!(
        matches!(err.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted),
        "an oversize message is refused by size: {err:?}"
    );
    assert!(err.message().contains("too large") && err.message().contains("2048"), "{err:?}");
    assert_eq!(batch_count(&mut alice).await, 0, "nothing was written");
    alice.submit_batch(reboot("sim[000001-000003].dc1")).await.expect("within the limits");

    // Logs are JSON lines, as configured.
    let log = std::fs::read_to_string(dir.join("maasd.log")).unwrap();
    let line = log.lines().find(|l| l.contains("serving maas.v1") && l.starts_with('{')).expect("a JSON log line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["security"], "mTLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_submitter_webhook_gets_only_that_submitters_batches() {
    const SECRET: &[u8] = b"team-hook-secret";
    let (team_port, team) = receiver(SECRET);
    let (all_port, everyone) = receiver(SECRET);
    let dir = std::env::temp_dir().join(format!("maasd-test-teamhook-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_dev_certs(&dir.join("certs"), &["alice", "carol"]).unwrap();
    std::fs::write(
        dir.join("policy.json"),
        r#"{"members": {"alice": ["web-sre"], "carol": ["web-sre"]}, "grants": [{"group": "web-sre", "pools": ["web"]}]}"#,
    )
    .unwrap();
    std::fs::write(dir.join("hook.secret"), SECRET).unwrap();
    let secret = dir.join("hook.secret").display().to_string();
    let toml = format!(
        "sim_hosts = 40\n\
         [[webhooks]]\nurl = \"http://127.0.0.1:{team_port}/alice\"\nsecret_file = \"{secret}\"\nsubmitters = [\"alice\"]\n\
         [[webhooks]]\nurl = \"http://127.0.0.1:{all_port}/all\"\nsecret_file = \"{secret}\"\n"
    );
    std::fs::write(dir.join("maasd.toml"), toml).unwrap();
    let d = spawn(&dir, "teamhook", &["--config".into(), dir.join("maasd.toml").display().to_string()]);
    let (mut alice, mut carol) = (client(&d, "alice").await, client(&d, "carol").await);
    let finish = |c: &mut MaasClient<Channel>, id: String| {
        let mut c = c.clone();
        async move {
            let mut events =
                c.watch_batch(pb::WatchBatchRequest { batch_id: id, after: 0 }).await.unwrap().into_inner();
            while tokio::time::timeout(Duration::from_secs(30), events.next()).await.expect("events").is_some() {}
        }
    };
    // Carol's batch first, then alice's: the outbox delivers in order, so once the team hook
    // has alice's last event it has been offered all of carol's.
    let carols = carol.submit_batch(reboot("sim[000001-000002].dc1")).await.unwrap().into_inner().batch_id;
    finish(&mut carol, carols.clone()).await;
    let alices = alice.submit_batch(reboot("sim[000003-000004].dc1")).await.unwrap().into_inner().batch_id;
    finish(&mut alice, alices.clone()).await;
    let done =
        |seen: &Deliveries, id: &str| seen.lock().unwrap().iter().any(|(_, b, k)| b == id && k == "batch_completed");
    for _ in 0..300 {
        if done(&team, &alices) && done(&everyone, &alices) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done(&team, &alices), "the team hook sees alice's batch: {:?}", team.lock().unwrap());
    assert!(done(&everyone, &carols) && done(&everyone, &alices), "the global hook sees both");
    let batches: std::collections::BTreeSet<String> = team.lock().unwrap().iter().map(|(_, b, _)| b.clone()).collect();
    assert_eq!(batches, [alices].into(), "the team hook never sees carol's batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ipmi_configured_maasd_drives_real_bmcs() {
    let bmcs = maas_ipmi::harness::SimFleet::start_local(2).expect("ipmi_sim (./scripts/test installs openipmi)");
    let dir = std::env::temp_dir().join(format!("maasd-test-ipmi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_dev_certs(&dir.join("certs"), &["alice", "olga"]).unwrap();
    std::fs::write(dir.join("policy.json"), POLICY).unwrap();
    let (user, password) = (maas_ipmi::harness::USER, maas_ipmi::harness::PASSWORD);
    std::fs::write(dir.join("bmc-secrets"), format!("lab {user} {password}\n")).unwrap();
    let toml = format!("[ipmi]\nsecrets_file = \"{}\"\ndeadline_secs = 10\n", dir.join("bmc-secrets").display());
    std::fs::write(dir.join("maasd.toml"), toml).unwrap();
    let d = spawn(&dir, "ipmi", &["--config".into(), dir.join("maasd.toml").display().to_string()]);
    let (mut alice, mut olga) = (client(&d, "alice").await, client(&d, "olga").await);
    let hosts = bmcs
        .bmcs
        .iter()
        .enumerate()
        .map(|(i, b)| pb::Host {
            hostname: format!("lab{i}.dc1"),
            site: "dc1".into(),
            pool: "web".into(),
            sku: "gen10".into(),
            bmc_address: b.address.clone(),
            bmc_port: u32::from(b.port),
            credentials_ref: "lab".into(),
            ..Default::default()
        })
        .collect();
    olga.import_hosts(pb::ImportHostsRequest { hosts }).await.unwrap();
    let power_on = pb::SubmitBatchRequest {
        action: Some(pb::Action { kind: Some(Kind::PowerOn(pb::action::PowerOn {})) }),
        hosts: vec!["lab[0-1].dc1".into()],
        ..Default::default()
    };
    let id = alice.submit_batch(power_on).await.unwrap().into_inner().batch_id;
    let mut events =
        alice.watch_batch(pb::WatchBatchRequest { batch_id: id.clone(), after: 0 }).await.unwrap().into_inner();
    while tokio::time::timeout(Duration::from_secs(60), events.next()).await.expect("events").is_some() {}
    let b = alice
        .get_batch(pb::GetBatchRequest { batch_id: id, hostnames: vec![], steps: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((b.state.as_str(), b.counts.unwrap().succeeded), ("completed", 2), "{b:?}");
    for bmc in &bmcs.bmcs {
        assert!(bmc.recorded_power(), "the simulator recorded power on: {:?}", bmc.calls());
        assert!(bmc.calls().iter().any(|c| c == "set power 1"), "{:?}", bmc.calls());
    }
    println!("maasd powered on 2 ipmi_sim BMCs over IPMI: {:?}", bmcs.bmcs[0].calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redfish_and_ipmi_configured_maasd_drives_a_mixed_fleet() {
    let bmcs = maas_ipmi::harness::SimFleet::start_local(1).expect("ipmi_sim (./scripts/test installs openipmi)");
    let dir = std::env::temp_dir().join(format!("maasd-test-redfish-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = maas_redfish::harness::BmcPki::new(&dir.join("bmc-pki")).unwrap();
    let sushy = maas_redfish::harness::Sushy::start(&pki, 1, true).unwrap_or_else(|e| panic!("{e}"));
    write_dev_certs(&dir.join("certs"), &["alice", "olga"]).unwrap();
    std::fs::write(dir.join("policy.json"), POLICY).unwrap();
    let (user, password) = (maas_ipmi::harness::USER, maas_ipmi::harness::PASSWORD);
    let (rf_user, rf_password) = (maas_redfish::harness::USER, maas_redfish::harness::PASSWORD);
    std::fs::write(dir.join("bmc-secrets"), format!("lab {user} {password}\nrf {rf_user} {rf_password}\n")).unwrap();
    let toml = format!(
        "[ipmi]\nsecrets_file = \"{secrets}\"\ndeadline_secs = 10\n\n[redfish]\nca_file = \"{ca}\"\n\
         deadline_secs = 40\nconsole_check = true\n",
        secrets = dir.join("bmc-secrets").display(),
        ca = pki.ca_file.display()
    );
    std::fs::write(dir.join("maasd.toml"), toml).unwrap();
    let d = spawn(&dir, "redfish", &["--config".into(), dir.join("maasd.toml").display().to_string()]);
    // The CSV import carries the protocol columns; a bad combination is refused whole,
    // naming the host, and nothing is written.
    let csv = dir.join("hosts.csv");
    let header = "hostname,site,pool,sku,bmc_address,bmc_port,credentials_ref,bmc_protocol,bmc_tls,boot_method\n";
    std::fs::write(
        &csv,
        format!(
            "{header}ipmi0.dc1,dc1,web,gen10,{},{},lab,ipmi,,network\nrf0.dc1,dc1,web,gen11,127.0.0.1,{},rf,redfish,,network\n\
             bad0.dc1,dc1,web,gen10,10.0.0.9,623,lab,ipmi,insecure,network\n",
            bmcs.bmcs[0].address, bmcs.bmcs[0].port, sushy.port
        ),
    )
    .unwrap();
    let (code, _, err) = maasctl(&d, "olga", &["hosts", "import", csv.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bad0.dc1") && err.contains("IPMI has no TLS"), "{err}");
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(&csv, text.lines().take(3).collect::<Vec<_>>().join("\n")).unwrap();
    let (code, _, err) = maasctl(&d, "olga", &["hosts", "import", csv.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = maasctl(&d, "olga", &["--json", "hosts", "list"]);
    assert!(out.contains("\"bmc_protocol\":\"redfish\""), "{out}");
    let mut alice = client(&d, "alice").await;
    let power_on = pb::SubmitBatchRequest {
        action: Some(pb::Action { kind: Some(Kind::PowerOn(pb::action::PowerOn {})) }),
        hosts: vec!["ipmi0.dc1".into(), "rf0.dc1".into()],
        ..Default::default()
    };
    let id = alice.submit_batch(power_on).await.unwrap().into_inner().batch_id;
    let mut events =
        alice.watch_batch(pb::WatchBatchRequest { batch_id: id.clone(), after: 0 }).await.unwrap().into_inner();
    while tokio::time::timeout(Duration::from_secs(90), events.next()).await.expect("events").is_some() {}
    let b = alice
        .get_batch(pb::GetBatchRequest { batch_id: id, hostnames: vec![], steps: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((b.state.as_str(), b.counts.unwrap().succeeded), ("completed", 2), "{b:?}");
    assert!(bmcs.bmcs[0].recorded_power());
    assert!(sushy.log_text().contains("Actions/ComputerSystem.Reset"), "the Redfish host was reset");
    println!("maasd powered on a mixed fleet: 1 ipmi_sim BMC, 1 sushy-emulator system");
}

/// What the receiver saw: (seq, batch id, kind) per event delivered.
type Deliveries = std::sync::Arc<std::sync::Mutex<Vec<(u64, String, String)>>>;

/// A webhook receiver on loopback: checks every delivery's HMAC signature and records
/// (seq, batch id, kind); answers 200. Runs for at most two minutes.
fn receiver(secret: &'static [u8]) -> (u16, Deliveries) {
    receiver_on(secret, None)
}

/// [`receiver`] over TLS with `tls` (a delivery whose handshake fails records nothing).
fn receiver_on(secret: &'static [u8], tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> (u16, Deliveries) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let seen: Deliveries = Default::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        let until = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < until {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = match &tls {
                Some(config) => {
                    let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                    serve_delivery(rustls::StreamOwned::new(conn, stream), secret, &record)
                }
                None => serve_delivery(stream, secret, &record),
            };
        }
    });
    (port, seen)
}

/// Reads one POST, checks its signature, records its events and answers 200.
fn serve_delivery(
    stream: impl std::io::Read + std::io::Write,
    secret: &[u8],
    record: &Deliveries,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(stream);
    let (mut length, mut signature) = (0usize, String::new());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if lower.starts_with("x-maas-signature:") {
            signature = line.split_once(':').unwrap().1.trim().to_string();
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    assert_eq!(signature, maas_grpc::webhook::signature(secret, &body), "every delivery is signed");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    if let Some(text) = v["text"].as_str() {
        // A chat message: one line per notable event, recorded as (0, "text", line).
        for line in text.lines().filter(|l| !l.is_empty()) {
            record.lock().unwrap().push((0, "text".into(), line.to_string()));
        }
    }
    for e in v.as_array().into_iter().flatten() {
        let kind = e["kind"]["event"].as_str().unwrap_or_default().to_string();
        record.lock().unwrap().push((e["seq"].as_u64().unwrap(), e["batch_id"].as_str().unwrap().to_string(), kind));
    }
    reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    reader.get_mut().flush()
}

/// A TLS server configuration for a receiver with the certificate `cert_pem` and its key.
fn tls_server(cert_pem: &str, key_pem: &str) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs.unwrap(), key)
        .unwrap();
    std::sync::Arc::new(config)
}

/// Webhooks over HTTPS: a receiver whose certificate comes from its own CA gets every event
/// of a batch, signed, once maasd is given that CA (`ca_file`); a receiver whose certificate
/// that CA did not sign gets nothing (the delivery is refused and retried, never sent
/// unchecked); plain http to a host off the machine is refused at startup, naming the
/// webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhooks_check_the_receivers_certificate() {
    const SECRET: &[u8] = b"https-hook-secret";
    let hooks_ca = DevCa::new("hooks CA").unwrap();
    let (cert, key) = hooks_ca.server(&[]).unwrap();
    let (good_port, good) = receiver_on(SECRET, Some(tls_server(&cert, &key)));
    let impostor = DevCa::new("impostor CA").unwrap();
    let (cert, key) = impostor.server(&[]).unwrap();
    let (bad_port, bad) = receiver_on(SECRET, Some(tls_server(&cert, &key)));
    let dir = test_dir("httpshook");
    std::fs::write(dir.join("hook.secret"), SECRET).unwrap();
    std::fs::write(dir.join("hooks-ca.pem"), hooks_ca.cert_pem()).unwrap();
    let (secret, ca) = (dir.join("hook.secret").display().to_string(), dir.join("hooks-ca.pem").display().to_string());
    let hook = |port: u16, path: &str| {
        format!(
            "[[webhooks]]\nurl = \"https://localhost:{port}/{path}\"\nsecret_file = \"{secret}\"\nca_file = \"{ca}\"\n"
        )
    };
    let toml = format!("sim_hosts = 40\n{}{}", hook(good_port, "good"), hook(bad_port, "impostor"));
    std::fs::write(dir.join("maasd.toml"), toml).unwrap();
    let d = spawn(&dir, "httpshook", &["--config".into(), dir.join("maasd.toml").display().to_string()]);
    let mut alice = client(&d, "alice").await;
    let id = alice.submit_batch(reboot("sim[000001-000002].dc1")).await.unwrap().into_inner().batch_id;
    let done = |seen: &Deliveries| seen.lock().unwrap().iter().any(|(_, b, k)| *b == id && k == "batch_completed");
    for _ in 0..600 {
        if done(&good) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done(&good), "the https receiver got the batch: {:?}", good.lock().unwrap());
    let seqs: Vec<u64> = good.lock().unwrap().iter().map(|(s, _, _)| *s).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "in order: {seqs:?}");
    assert!(bad.lock().unwrap().is_empty(), "nothing reaches a receiver the CA did not sign");
    let log = std::fs::read_to_string(dir.join("maasd.log")).unwrap();
    assert!(log.contains("impostor") && log.contains("certificate"), "the refusal is logged: {log}");

    // Plain http off the machine: refused before anything starts.
    std::fs::write(
        dir.join("plain.toml"),
        format!("[[webhooks]]\nurl = \"http://hooks.example/x\"\nsecret_file = \"{secret}\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_maasd"))
        .args(["--config", &dir.join("plain.toml").display().to_string(), "--certs"])
        .arg(dir.join("certs"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("webhooks[0].url") && err.contains("plain http leaves the machine"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_sees_every_event_of_a_batch_across_a_restart() {
    const SECRET: &[u8] = b"webhook-test-secret";
    let (hook_port, seen) = receiver(SECRET);
    let dir = std::env::temp_dir().join(format!("maasd-test-webhook-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_dev_certs(&dir.join("certs"), &["alice"]).unwrap();
    std::fs::write(dir.join("policy.json"), POLICY).unwrap();
    std::fs::write(dir.join("hook.secret"), SECRET).unwrap();
    let mut flags = sim_hosts();
    flags.extend([
        "--webhook-url".to_string(),
        format!("http://127.0.0.1:{hook_port}/maas"),
        "--webhook-secret-file".to_string(),
        dir.join("hook.secret").display().to_string(),
    ]);
    let mut first = spawn(&dir, "hook1", &flags);
    first.owns_dir = false;
    let mut alice = client(&first, "alice").await;
    let mut req = reboot("sim[000001-000006].dc1");
    req.max_in_flight = 1;
    let id = alice.submit_batch(req).await.unwrap().into_inner().batch_id;
    // Stop the first maasd (SIGTERM: it hands unfinished jobs back) once the webhook saw
    // the batch start, mid-batch; a second one on the same database finishes it.
    for _ in 0..300 {
        if seen.lock().unwrap().iter().any(|(_, b, k)| b == &id && k == "host_started") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = first.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exited = first.child.wait().unwrap();
    assert!(exited.success(), "maasd exits cleanly on SIGTERM: {exited:?}");
    drop(first);
    let second = spawn(&dir, "hook2", &flags);
    let mut alice = client(&second, "alice").await;
    let mut all = Vec::new();
    let mut events =
        alice.watch_batch(pb::WatchBatchRequest { batch_id: id.clone(), after: 0 }).await.unwrap().into_inner();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), events.next()).await.expect("the batch finishes")
    {
        all.push(e.unwrap().seq);
    }
    // Every event of the batch reaches the webhook at least once.
    for _ in 0..300 {
        let got: std::collections::BTreeSet<u64> =
            seen.lock().unwrap().iter().filter(|(_, b, _)| b == &id).map(|(s, _, _)| *s).collect();
        if all.iter().all(|s| got.contains(s)) {
            let kinds: Vec<String> = seen.lock().unwrap().iter().map(|(_, _, k)| k.clone()).collect();
            assert!(kinds.iter().any(|k| k == "batch_completed"), "{kinds:?}");
            println!("webhook: all {} events of the batch delivered, signed, across a restart", all.len());
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the webhook missed events: batch had {all:?}, webhook saw {:?}", seen.lock().unwrap());
}

/// Runs maasctl as `user` against `d`; returns (exit code, stdout, stderr).
fn maasctl(d: &Maasd, user: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_maasctl"))
        .arg("--server")
        .arg(format!("https://localhost:{}", d.port))
        .arg("--certs")
        .arg(d.dir.join("certs"))
        .args(["--user", user])
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn maasctl_commands_json_and_exit_codes() {
    let d = start("maasctl");
    let json = |s: &str| -> serde_json::Value { serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{e}: {s}")) };

    // hosts import (CSV, as an admin), then list them back as JSON lines.
    let csv = d.dir.join("hosts.csv");
    std::fs::write(
        &csv,
        "hostname,site,pool,sku,bmc_address,bmc_port,credentials_ref\n\
         db1.dc3,dc3,db,gen10,10.3.0.1,623,r3\ndb2.dc3,dc3,db,gen10,10.3.0.2,6230,r3\n",
    )
    .unwrap();
    let (code, out, err) = maasctl(&d, "olga", &["--json", "hosts", "import", csv.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["written"], 2);
    let (code, _, err) = maasctl(&d, "alice", &["hosts", "import", csv.to_str().unwrap()]);
    assert_eq!(code, 1, "a refused import exits 1: {err}");
    assert!(err.contains("admin"), "{err}");
    let (code, out, _) = maasctl(&d, "alice", &["--json", "hosts", "list", "--site", "dc3"]);
    assert_eq!(code, 0);
    let listed: Vec<serde_json::Value> = out.lines().map(json).collect();
    assert_eq!(listed.len(), 2);
    assert_eq!((listed[1]["hostname"].as_str(), listed[1]["bmc_port"].as_u64()), (Some("db2.dc3"), Some(6230)));
    let (code, _, err) = maasctl(&d, "olga", &["hosts", "set-state", "db2.dc3", "defunct"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = maasctl(&d, "alice", &["hosts", "list", "--state", "defunct"]);
    assert!(out.starts_with("db2.dc3"), "{out}");

    // submit --wait: the summary at the end, exit 0 when every host succeeded.
    let (code, out, err) = maasctl(&d, "alice", &["--json", "submit", "--wait", "reboot", "sim[000001-000003].dc1"]);
    assert_eq!(code, 0, "{err}");
    let summary = json(out.lines().last().unwrap());
    assert_eq!((summary["state"].as_str(), summary["counts"]["succeeded"].as_u64()), (Some("completed"), Some(3)));
    assert!(out.lines().any(|l| l.contains("host_succeeded")), "events stream as JSON lines: {out}");
    // A dry run with problems and an overlapping or unknown host exit 1; bad usage exits 2.
    let (code, out, _) = maasctl(&d, "alice", &["submit", "--dry-run", "reboot", "ghost.dc1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ghost.dc1"), "{out}");
    let (code, _, err) = maasctl(&d, "alice", &["submit", "explode", "sim000001.dc1"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = maasctl(&d, "bob", &["submit", "reboot", "sim000001.dc1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bob lacks permission"), "{err}");

    // stats, active, tickets, list.
    let (code, out, _) = maasctl(&d, "alice", &["--json", "stats", "--since", "1h"]);
    assert_eq!(code, 0);
    let stats = json(&out);
    assert_eq!((stats["succeeded"].as_u64(), stats["success_rate"].as_f64()), (Some(3), Some(1.0)));
    let (code, out, _) = maasctl(&d, "alice", &["stats"]);
    assert_eq!(code, 0);
    assert!(out.contains("success rate 100.0%"), "{out}");
    let (code, out, _) = maasctl(&d, "alice", &["--json", "active"]);
    assert_eq!(code, 0);
    assert!(out.lines().map(json).any(|s| s["site"] == "dc1" && s["live_workers"] == 2), "{out}");
    assert_eq!(maasctl(&d, "alice", &["tickets"]).0, 0);
    let (_, out, _) = maasctl(&d, "alice", &["list", "--action", "reboot", "--since", "1h"]);
    assert_eq!(out.lines().filter(|l| l.contains(" reboot completed by alice")).count(), 1, "{out}");
    let (code, _, err) = maasctl(&d, "alice", &["list", "--action", "explode"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown action \"explode\""), "{err}");

    // hosts set-state --allocated-to, and the audit trail (admins read it; alice may not).
    let (code, _, err) =
        maasctl(&d, "olga", &["hosts", "set-state", "sim000030.dc1", "allocated", "--allocated-to", "payments"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = maasctl(&d, "alice", &["hosts", "list", "--state", "allocated"]);
    assert!(out.starts_with("sim000030.dc1") && out.contains("allocated (payments)"), "{out}");
    let (code, _, err) = maasctl(&d, "alice", &["audit"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("alice lacks permission: read the audit trail"), "{err}");
    let (code, out, err) = maasctl(&d, "olga", &["--json", "audit", "--host", "sim000030.dc1"]);
    assert_eq!(code, 0, "{err}");
    let entries: Vec<serde_json::Value> = out.lines().map(json).collect();
    assert_eq!(entries.len(), 1, "{out}");
    assert_eq!(
        (entries[0]["op"].as_str(), entries[0]["summary"].as_str()),
        (Some("set_host_state"), Some("state allocated to payments"))
    );
    let (code, out, _) = maasctl(&d, "olga", &["audit", "--principal", "bob", "--op", "submit"]);
    assert_eq!(code, 0);
    assert!(out.contains("REFUSED: ") && out.contains("bob lacks permission: reboot"), "{out}");
    let (_, out, _) = maasctl(&d, "olga", &["audit", "--principal", "alice", "--since", "1h"]);
    assert!(out.contains("submit") && out.contains("accepted") && out.contains("import_hosts"), "{out}");

    // Completions, and a server that is not there (exit 2).
    let out = Command::new(env!("CARGO_BIN_EXE_maasctl")).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("maasctl"));
    let out = Command::new(env!("CARGO_BIN_EXE_maasctl"))
        .args(["--server", &format!("https://localhost:{}", free_port()), "--certs"])
        .arg(d.dir.join("certs"))
        .args(["--user", "alice", "active"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Starts maasd (certificates, policy, `extra` flags) on `db`: "sqlite", or the name of
/// the variable with a server URL from ./scripts/test, on which a fresh database is made.
async fn start_on(name: &str, db: &str, extra: &[String]) -> Maasd {
    let dir = test_dir(name);
    let url =
        if db == "sqlite" { format!("sqlite://{}", dir.join("maasd.db").display()) } else { fresh_db(name, db).await };
    spawn_on(&dir, name, &url, extra)
}

/// A fresh directory with certificates and the policy.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("maasd-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_dev_certs(&dir.join("certs"), &["alice", "bob", "olga"]).unwrap();
    std::fs::write(dir.join("policy.json"), POLICY).unwrap();
    dir
}

/// A new database on the server at `db` (a URL, or the variable naming one); its URL.
async fn fresh_db(name: &str, db: &str) -> String {
    use sea_orm::ConnectionTrait;
    {
        // A server URL, or the variable naming one.
        let server = if db.contains("://") {
            db.to_string()
        } else {
            std::env::var(db).unwrap_or_else(|_| panic!("{db} is not set: run ./scripts/test"))
        };
        let admin = sea_orm::Database::connect(&server).await.unwrap();
        let fresh = format!("maasd_{}_{}", name.replace('-', "_"), std::process::id());
        admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {fresh}")).await.unwrap();
        admin.execute_unprepared(&format!("CREATE DATABASE {fresh}")).await.unwrap();
        format!("{}/{fresh}", server.rsplit_once('/').unwrap().0)
    }
}

/// A refusal of any size reaches the client: 10,000 conflicting hosts (and 2,000 unknown
/// ones) give a short status message and bounded details that hyper/h2 (and grpcio, in
/// the pytest suite) accept, and a dry run or maasctl returns every problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_ten_thousand_hosts_reach_every_client() {
    let d = start_on("large", "sqlite", &["--sim-hosts".into(), "10000".into()]).await;
    let mut alice = client(&d, "alice").await;
    let all = "sim[000001-010000].dc1";
    // The holder waits for its start time, so it holds every host without running.
    let mut later = reboot(all);
    later.not_before_ms = Some(now_ms() + 3_600_000);
    let holder = alice.submit_batch(later).await.unwrap().into_inner().batch_id;

    let err = alice.submit_batch(reboot(all)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().len() <= 1024, "a {}-byte status message", err.message().len());
    assert!(
        err.message().contains(&format!("sim[000001-010000].dc1 are held by active batch {holder}")),
        "{}",
        err.message()
    );
    let partial = maas_grpc::client::rejection(&err).expect("structured details");
    assert_eq!((partial.total_problems, partial.truncated, partial.conflicts.len()), (10_000, true, 20));
    // grpcio drops trailers from 8 KiB, h2 from 16 KiB (base64 makes details 4/3 larger).
    let trailers = err.message().len() + err.details().len().div_ceil(3) * 4;
    assert!(trailers < 4096, "{trailers} bytes of trailers");
    println!(
        "10,000-host overlap refusal: message {} bytes, details {} bytes ({trailers} bytes in trailers)",
        err.message().len(),
        err.details().len()
    );
    let mut dry = reboot(all);
    dry.dry_run = true;
    let report = alice.submit_batch(dry).await.unwrap().into_inner().problems.unwrap();
    assert_eq!(report.conflicts.len(), 10_000);
    assert!(report.conflicts.iter().all(|c| c.batch_id == holder));

    // 2,000 unknown hosts beside the conflicts: still a short refusal.
    let err = alice.submit_batch(reboot("sim[000001-008000].dc1,ghost[0001-2000].dc1")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(maas_grpc::client::rejection(&err).unwrap().total_problems, 10_000);

    // maasctl: exit 1 and every conflict, as JSON or as text.
    let (code, out, err) = maasctl(&d, "alice", &["--json", "submit", "reboot", all]);
    assert_eq!(code, 1, "{err}");
    let refusal: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(refusal["error"]["code"], "FailedPrecondition");
    let conflicts = refusal["error"]["problems"]["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 10_000);
    assert_eq!(conflicts[9_999]["batch_id"], holder.as_str());
    let (code, _, err) = maasctl(&d, "alice", &["submit", "reboot", all]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("  conflict: ")).count(), 10_000, "{}", &err[..500]);
    assert!(!err.contains("h2 protocol error"), "{}", &err[..500]);
}

/// NUL and other control characters in every free-text field, on every store: refused
/// as INVALID_ARGUMENT naming the field (a malformed token is NOT_FOUND), never a
/// retryable status and never the database's words; nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_refused_naming_the_field_on_every_store() {
    for (tag, db) in [("lite", "sqlite"), ("pg", "MAAS_TEST_POSTGRES_URL"), ("my", "MAAS_TEST_MYSQL_URL")] {
        let d = start_on(&format!("hostile-{tag}"), db, &sim_hosts()).await;
        let mut alice = client(&d, "alice").await;
        let mut olga = client(&d, "olga").await;
        let id = alice.submit_batch(reimage("sim000001.dc1")).await.unwrap().into_inner().batch_id;
        let before = batch_count(&mut alice).await;
        let check = |what: &str, field: &str, r: Result<(), tonic::Status>| {
            let s = r.expect_err(what);
            assert_eq!(s.code(), tonic::Code::InvalidArgument, "{tag} {what}: {s:?}");
            assert!(s.message().contains(field), "{tag} {what}: {:?} does not name {field}", s.message());
            for leak in ["UTF8", "encoding", "0x00", "SQL", "store backend"] {
                assert!(!s.message().contains(leak), "{tag} {what}: {:?}", s.message());
            }
        };
        for bad in ["a\0b", "bell\u{7}", "esc\u{1b}[31m", "del\u{7f}"] {
            let mut r = reboot("sim000002.dc1");
            r.idempotency_key = bad.into();
            check("key", "idempotency_key", alice.submit_batch(r).await.map(drop));
            let mut r = reboot("sim000002.dc1");
            r.comment = bad.into();
            check("comment", "comment", alice.submit_batch(r).await.map(drop));
            let mut r = reboot("sim000002.dc1");
            r.force_reason = bad.into();
            check("force reason", "force.reason", alice.submit_batch(r).await.map(drop));
            let mut r = reimage("sim000002.dc1");
            r.params.insert("motd".into(), bad.into());
            check("param", "params.motd", alice.submit_batch(r).await.map(drop));
            check("host", "host", alice.submit_batch(reboot(&format!("sim{bad}.dc1"))).await.map(drop));
            let cancel = pb::CancelBatchRequest { batch_id: id.clone(), reason: bad.into() };
            check("cancel reason", "reason", alice.cancel_batch(cancel).await.map(drop));
            let list = pb::ListBatchesRequest { submitter: bad.into(), ..Default::default() };
            check("submitter filter", "submitter", alice.list_batches(list).await.map(drop));
            let hosts = pb::ListHostsRequest { after: bad.into(), ..Default::default() };
            check("after filter", "after", alice.list_hosts(hosts).await.map(drop));
            let mut h = host("new1.dc1", "web");
            h.credentials_ref = bad.into();
            let import = pb::ImportHostsRequest { hosts: vec![h] };
            check("credentials_ref", "hosts[0].credentials_ref", olga.import_hosts(import).await.map(drop));
            let token = pb::ReportInstallResultRequest { token: bad.into(), succeeded: true, error: String::new() };
            let s = alice.report_install_result(token).await.unwrap_err();
            assert_eq!(s.code(), tonic::Code::NotFound, "{tag}: {s:?}");
        }
        assert_eq!(batch_count(&mut alice).await, before, "{tag}: a refused request wrote something");
        let b = alice
            .get_batch(pb::GetBatchRequest { batch_id: id, hostnames: vec![], steps: false })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(b.state, "cancelled", "{tag}: a refused cancel cancelled");
    }
}

/// Sixteen identical SubmitBatch calls with one idempotency key, at once: every caller
/// gets the one batch's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_keyed_submits_at_once_all_get_the_one_batch() {
    let d = start("keyed");
    let alice = client(&d, "alice").await;
    let mut calls = Vec::new();
    for _ in 0..16 {
        let mut c = alice.clone();
        let mut r = reboot("sim[000001-000020].dc1");
        r.idempotency_key = "change-1234".into();
        calls.push(tokio::spawn(async move { c.submit_batch(r).await }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for call in calls {
        let answer = call.await.unwrap().unwrap_or_else(|s| panic!("a keyed retry was refused: {s:?}")).into_inner();
        created += usize::from(answer.created);
        ids.insert(answer.batch_id);
    }
    assert_eq!((ids.len(), created), (1, 1));
}

/// Server reflection answers both versions (grpcurl and older tools ask v1alpha).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_answers_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let d = start("reflection");
    let certs = d.dir.join("certs");
    let files =
        TlsFiles { cert: certs.join("alice.pem"), key: certs.join("alice-key.pem"), ca: Some(certs.join("ca.pem")) };
    let channel = Endpoint::from_shared(format!("https://localhost:{}", d.port))
        .unwrap()
        .tls_config(files.client("localhost").unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let list = || "".to_string();
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(list())),
    };
    let mut answers = alpha.server_reflection_info(futures::stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(services)) =
        answer.message_response
    else {
        panic!("{answer:?}")
    };
    let names: Vec<&str> = services.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"maas.v1.Maas") && names.contains(&"grpc.health.v1.Health"), "{names:?}");
    let mut current = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(list())),
    };
    let mut answers = current.server_reflection_info(futures::stream::iter([request])).await.unwrap().into_inner();
    assert!(answers.next().await.unwrap().is_ok());
}

/// Runs maasd with `args` until it exits (at most 30 s); (exit code, stderr).
fn maasd_exits(args: &[String]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_maasd"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A second maasd on the same SQLite file is refused, pointing to PostgreSQL/MariaDB; a
/// maasd without a policy says that it will refuse everyone.
#[test]
fn a_second_maasd_on_one_sqlite_file_is_refused_and_no_policy_is_warned_of() {
    let d = start("lock");
    let db = format!("sqlite://{}", d.dir.join("maasd.db").display());
    let certs = d.dir.join("certs").display().to_string();
    let args = |port: u16| -> Vec<String> {
        ["--listen", &format!("127.0.0.1:{port}"), "--metrics-listen", "off", "--db", &db, "--certs", &certs]
            .map(String::from)
            .to_vec()
    };
    let (code, err) = maasd_exits(&args(free_port()));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("in use by another process") && err.contains("PostgreSQL or MariaDB"), "{err}");
    drop(d);

    // Alone on its file but without a policy: it starts, and warns.
    let dir = std::env::temp_dir().join(format!("maasd-test-nopolicy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_dev_certs(&dir.join("certs"), &["alice"]).unwrap();
    std::fs::write(dir.join("policy.json"), POLICY).unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_maasd"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--metrics-listen", "off"])
        .arg("--db")
        .arg(format!("sqlite://{}", dir.join("maasd.db").display()))
        .arg("--certs")
        .arg(dir.join("certs"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(ready, "{err}");
    assert!(err.contains("no policy") && err.contains("every request will be refused"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An instance name is held by one maasd at a time on a shared database: a second maasd
/// with the name is refused naming it, another name starts, and the name is free again the
/// moment its holder is killed (the server drops the lock with its connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_name_is_held_by_one_maasd_until_it_dies() {
    let d = start_on("twin", "MAAS_TEST_POSTGRES_URL", &sim_hosts()).await;
    let certs = d.dir.join("certs").display().to_string();
    let args = |name: &str| -> Vec<String> {
        let listen = format!("127.0.0.1:{}", free_port());
        ["--listen", &listen, "--metrics-listen", "off", "--db", &d.db, "--certs", &certs, "--instance", name]
            .map(String::from)
            .to_vec()
    };
    let (code, err) = maasd_exits(&args("twin"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("instance name \"twin\" is held by another running process"), "{err}");
    let (code, err) = maasd_exits(&args("bad/name"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("instance name \"bad/name\" is not valid"), "{err}");
    let other = spawn_on(&d.dir, "twin-b", &d.db, &[]);
    let (dir, db) = (d.dir.clone(), d.db.clone());
    let mut d = d;
    d.owns_dir = false;
    drop(d); // SIGKILL
    let again = spawn_on(&dir, "twin", &db, &[]);
    drop(other);
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `maasctl wait-ready` waits for a maasd that is still starting, and gives up with exit
/// 2 on a port where nothing comes.
#[test]
fn maasctl_wait_ready_waits_for_a_starting_maasd() {
    let dir = std::env::temp_dir().join(format!("maasd-test-ready-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_dev_certs(&dir.join("certs"), &["alice"]).unwrap();
    std::fs::write(dir.join("policy.json"), POLICY).unwrap();
    let ctl = |port: u16, timeout: &str| {
        Command::new(env!("CARGO_BIN_EXE_maasctl"))
            .args(["--server", &format!("https://localhost:{port}"), "--user", "alice", "--certs"])
            .arg(dir.join("certs"))
            .args(["wait-ready", "--timeout", timeout])
            .output()
            .unwrap()
    };
    let out = ctl(free_port(), "1s");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not ready within"), "{err}");

    // maasd starts a second after maasctl begins waiting.
    let port = free_port();
    let starter = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            Command::new(env!("CARGO_BIN_EXE_maasd"))
                .args(["--listen", &format!("127.0.0.1:{port}"), "--metrics-listen", "off", "--sim-hosts", "4"])
                .arg("--db")
                .arg(format!("sqlite://{}", dir.join("maasd.db").display()))
                .arg("--certs")
                .arg(dir.join("certs"))
                .arg("--policy")
                .arg(dir.join("policy.json"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
    };
    let out = ctl(port, "60s");
    let mut maasd = starter.join().unwrap();
    let _ = maasd.kill();
    let _ = maasd.wait();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is ready"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The database goes away under a submit-and-run load and comes back (a server of the
/// test's own, stopped and started under maasd): maasd keeps serving, answers writes with
/// UNAVAILABLE and `/readyz` with 503 while it is down, and recovers by itself; every batch
/// whose submit was acknowledged exists and finishes, and no job ran twice (no attempt
/// beyond the first: the outage is shorter than a lease, and workers back off instead of
/// dropping their steps).
async fn outage_under_load(tag: &str, db: &mut dyn PrivateDb) {
    use std::sync::{Arc, Mutex};
    // Each BMC command takes 300 ms: steps are in flight when the database goes.
    let mut flags = sim_hosts();
    flags.extend(["--sim-bmc-latency-ms".to_string(), "300".to_string()]);
    let mut d = start_on(&format!("outage-{tag}"), &db.server_url(), &flags).await;
    let olga = client(&d, "olga").await;
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let unavailable = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // One reboot per host, one every 150 ms, before, during and after the outage.
    let load = {
        let (mut c, acknowledged, unavailable) = (olga.clone(), acknowledged.clone(), unavailable.clone());
        tokio::spawn(async move {
            for i in 1..=40 {
                let submit = c.submit_batch(reboot(&format!("sim{i:06}.dc1")));
                match tokio::time::timeout(Duration::from_secs(30), submit).await {
                    Ok(Ok(r)) => acknowledged.lock().unwrap().push(r.into_inner().batch_id),
                    Ok(Err(s)) if s.code() == tonic::Code::Unavailable => {
                        unavailable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(Err(s)) => panic!("sim{i:06}: {s:?}"),
                    Err(_) => panic!("sim{i:06}: a submit hung for 30 s"),
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = acknowledged.lock().unwrap().len();
    assert!(before > 0, "{tag}: submits were acknowledged before the outage");
    db.stop();
    let down = std::time::Instant::now();
    let ready = |d: &Maasd| http_get(d.metrics_port, "/readyz").0;
    let mut seen_503 = false;
    while down.elapsed() < Duration::from_secs(5) {
        seen_503 |= ready(&d) == 503;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen_503, "{tag}: /readyz says not ready while the database is down");
    db.start();
    let up = std::time::Instant::now();
    while ready(&d) != 200 {
        assert!(up.elapsed() < Duration::from_secs(60), "{tag}: maasd did not recover within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    load.await.unwrap();
    assert!(
        unavailable.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "{tag}: writes during the outage were answered UNAVAILABLE"
    );
    let ids = acknowledged.lock().unwrap().clone();
    assert!(ids.len() > before, "{tag}: submits were acknowledged after the outage");
    // Every acknowledged batch finishes, each host rebooted once.
    let mut c = olga.clone();
    let finished = std::time::Instant::now();
    for id in &ids {
        loop {
            let b = c.get_batch(pb::GetBatchRequest { batch_id: id.clone(), hostnames: vec![], steps: false }).await;
            let b = b.unwrap_or_else(|s| panic!("{tag}: batch {id}: {s:?}")).into_inner();
            if b.state == "completed" {
                assert_eq!(b.counts.unwrap().succeeded, 1, "{tag}: batch {id}");
                break;
            }
            if finished.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(d.dir.join("maasd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().filter(|l| !l.contains("sqlx")).take(30).collect();
                panic!(
                    "{tag}: batch {id} is still {}: {:?}\nmaasd.log (last lines first):\n{}",
                    b.state,
                    b.hosts,
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // No job was attempted twice: nothing waited for an expired lease, nothing was redone.
    use sea_orm::ConnectionTrait;
    let conn = sea_orm::Database::connect(&d.db).await.unwrap();
    let row = conn
        .query_one_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            "SELECT MAX(attempt) AS m FROM maas_jobs",
        ))
        .await
        .unwrap()
        .unwrap();
    let max_attempt: i64 = row.try_get("", "m").unwrap();
    if max_attempt != 1 {
        // Which jobs, and why their first attempt ended, for the failure message.
        let again = conn
            .query_all_raw(sea_orm::Statement::from_string(
                conn.get_database_backend(),
                "SELECT hostname, kind, attempt, last_error FROM maas_jobs WHERE attempt > 1",
            ))
            .await
            .unwrap();
        let again: Vec<String> = again
            .iter()
            .map(|r| {
                let (host, kind): (String, String) =
                    (r.try_get("", "hostname").unwrap(), r.try_get("", "kind").unwrap());
                let error: Option<String> = r.try_get("", "last_error").unwrap_or(None);
                format!("{host} {kind}: {error:?}")
            })
            .collect();
        panic!("{tag}: a job ran twice (max attempt {max_attempt}): {again:?}");
    }
    assert!(d.child.try_wait().unwrap().is_none(), "{tag}: maasd kept running (no restart)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_under_load_loses_nothing_and_needs_no_restart() {
    outage_under_load("pg", &mut PrivatePostgres::new("outage")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_outage_under_load_loses_nothing_and_needs_no_restart() {
    outage_under_load("my", &mut PrivateMariadb::new("outage")).await;
}

/// Waits (at most 60 s) until batch `id` is completed; returns its succeeded count.
async fn await_completed(c: &mut MaasClient<Channel>, id: &str) -> u32 {
    let start = std::time::Instant::now();
    loop {
        let b = c
            .get_batch(pb::GetBatchRequest { batch_id: id.into(), hostnames: vec![], steps: false })
            .await
            .unwrap()
            .into_inner();
        if b.state == "completed" {
            return b.counts.unwrap().succeeded;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "batch {id} is still {}", b.state);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Two maasd on one PostgreSQL database. An API-only instance and a worker-only one: a batch
/// submitted through the first is run by the second's workers, and the API keeps serving
/// when the workers are gone. Then two full instances: a client given both addresses keeps
/// reading through a kill of the one it used (reads go to the other at once; a write made
/// just then reports UNAVAILABLE and the next goes to the survivor), the survivor runs the
/// work, and maasctl given both addresses, the first dead, connects to the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_maasd_on_one_database_share_the_work_and_fail_over() {
    let dir = test_dir("pair");
    let url = fresh_db("pair", "MAAS_TEST_POSTGRES_URL").await;
    let role = |r: &str| {
        let mut flags = sim_hosts();
        flags.extend(["--role".to_string(), r.to_string()]);
        flags
    };
    let mut api = spawn_on(&dir, "pair-api", &url, &role("api"));
    api.owns_dir = false;
    let mut worker = spawn_on(&dir, "pair-worker", &url, &role("worker"));
    worker.owns_dir = false;
    let mut olga = client(&api, "olga").await;
    let id = olga.submit_batch(reboot("sim[000001-000004].dc1")).await.unwrap().into_inner().batch_id;
    assert_eq!(await_completed(&mut olga, &id).await, 4, "the worker instance ran what the API accepted");
    drop(worker);
    let queued = olga.submit_batch(reboot("sim[000005-000006].dc1")).await.unwrap().into_inner().batch_id;
    assert!(batch_count(&mut olga).await >= 2, "the API serves without any worker");
    drop(api);

    // Two full instances; the client knows both.
    let mut c = spawn_on(&dir, "pair-c", &url, &role("all"));
    c.owns_dir = false;
    let d = spawn_on(&dir, "pair-d", &url, &role("all"));
    let both = format!("https://localhost:{},https://localhost:{}", c.port, d.port);
    let certs = d.dir.join("certs");
    let files =
        TlsFiles { cert: certs.join("olga.pem"), key: certs.join("olga-key.pem"), ca: Some(certs.join("ca.pem")) };
    let mut pair = maas_grpc::client::connect(&both, Some(&files), Duration::from_secs(5)).await.unwrap();
    let get = |id: &str| pb::GetBatchRequest { batch_id: id.into(), hostnames: vec![], steps: false };
    let state = pair.get_batch(get(&queued)).await.unwrap().into_inner().state;
    assert!(["running", "completed"].contains(&state.as_str()), "{state}");
    // Kill the instance in use: reads carry on through the other at once.
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    let listed = pair.list_batches(pb::ListBatchesRequest::default()).await.expect("a read fails over").into_inner();
    assert!(listed.batches.len() >= 2);
    // A write is tried once more after an UNAVAILABLE (the caller's retry).
    let submitted = match pair.submit_batch(reboot("sim[000007-000008].dc1")).await {
        Ok(r) => r,
        Err(s) => {
            assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
            pair.submit_batch(reboot("sim[000007-000008].dc1")).await.expect("the next call goes to the survivor")
        }
    };
    let last = submitted.into_inner().batch_id;
    // The survivor runs everything: the batch accepted while no worker ran, and the new one.
    let mut survivor = client(&d, "olga").await;
    assert_eq!(await_completed(&mut survivor, &queued).await, 2);
    assert_eq!(await_completed(&mut survivor, &last).await, 2);
    // maasctl with both addresses, the first dead.
    let out = Command::new(env!("CARGO_BIN_EXE_maasctl"))
        .args(["--server", &both, "--certs"])
        .arg(&certs)
        .args(["--user", "olga", "--json", "status", &last])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"completed\""), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Per-batch subscriptions: a batch names a chat channel the daemon configures and a URL of
/// its submitter's; the channel gets readable lines for that batch only, the URL its signed
/// events, another channel only the batches that named it. Unknown channels and plain http
/// off the machine are refused at submit, naming the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_tells_the_channels_and_urls_its_submitter_named() {
    const CHANNEL_SECRET: &[u8] = b"channel-secret";
    const URL_SECRET: &[u8] = b"subscription-secret";
    let (room_port, room) = receiver(CHANNEL_SECRET);
    let (team_port, team) = receiver(CHANNEL_SECRET);
    let (url_port, alices_hook) = receiver(URL_SECRET);
    let dir = test_dir("subscriptions");
    std::fs::write(dir.join("channel.secret"), CHANNEL_SECRET).unwrap();
    std::fs::write(dir.join("url.secret"), URL_SECRET).unwrap();
    let secret = |f: &str| dir.join(f).display().to_string();
    let toml = format!(
        "sim_hosts = 40\n\
         [subscriptions]\nsecret_file = \"{}\"\n\
         [[channels]]\nname = \"sre-room\"\nurl = \"http://127.0.0.1:{room_port}/slack\"\nformat = \"slack\"\nsecret_file = \"{}\"\n\
         [[channels]]\nname = \"db-team\"\nurl = \"http://127.0.0.1:{team_port}/db\"\nformat = \"json\"\nsecret_file = \"{}\"\n",
        secret("url.secret"),
        secret("channel.secret"),
        secret("channel.secret")
    );
    std::fs::write(dir.join("maasd.toml"), toml).unwrap();
    let d = spawn(&dir, "subscriptions", &["--config".into(), dir.join("maasd.toml").display().to_string()]);
    let (mut alice, mut olga) = (client(&d, "alice").await, client(&d, "olga").await);
    let with = |hosts: &str, notify: &[String]| pb::SubmitBatchRequest { notify: notify.to_vec(), ..reboot(hosts) };
    let alices_url = format!("http://127.0.0.1:{url_port}/alice");
    let alices = alice
        .submit_batch(with("sim[000001-000002].dc1", &["channel:sre-room".into(), alices_url]))
        .await
        .unwrap()
        .into_inner()
        .batch_id;
    let olgas =
        olga.submit_batch(with("sim000003.dc1", &["channel:db-team".into()])).await.unwrap().into_inner().batch_id;
    let quiet = olga.submit_batch(reboot("sim000004.dc1")).await.unwrap().into_inner().batch_id;
    let has = |seen: &Deliveries, what: &dyn Fn(&(u64, String, String)) -> bool| seen.lock().unwrap().iter().any(what);
    let room_done =
        |s: &(u64, String, String)| s.2.ends_with("completed: 2 of 2 host(s) succeeded, 0 failed, 0 cancelled");
    let ended = |id: &str| {
        let id = id.to_string();
        move |s: &(u64, String, String)| s.1 == id && s.2 == "batch_completed"
    };
    for _ in 0..600 {
        if has(&room, &room_done) && has(&alices_hook, &ended(&alices)) && has(&team, &ended(&olgas)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let short = &alices[..13];
    let lines: Vec<String> = room.lock().unwrap().iter().map(|s| s.2.clone()).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("maas batch {short}: reboot on 2 host(s) accepted, submitted by alice"))),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| room_done(&(0, String::new(), l.clone()))), "{lines:?}");
    assert!(lines.iter().all(|l| l.contains(short)), "the room hears of alice's batch only: {lines:?}");
    assert!(
        has(&alices_hook, &ended(&alices)),
        "alice's URL gets her batch, signed: {:?}",
        alices_hook.lock().unwrap()
    );
    assert!(alices_hook.lock().unwrap().iter().all(|s| s.1 == alices), "and nothing else");
    assert!(has(&team, &ended(&olgas)), "{:?}", team.lock().unwrap());
    assert!(team.lock().unwrap().iter().all(|s| s.1 == olgas), "the team hook never sees {quiet} or alice's");

    // Refused at submit, naming the entry.
    for (notify, needle) in [
        ("channel:nope", "notify[0]: no channel \"nope\" (known: sre-room, db-team)"),
        ("http://hooks.example/x", "plain http leaves the machine"),
    ] {
        let err = alice.submit_batch(with("sim000005.dc1", &[notify.into()])).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(needle), "{}", err.message());
    }
}

/// History that lasts: with a one-second retention, a finished batch's rows are purged, yet
/// `maasctl stats --since 365d --by month` still counts its hosts (from the rollups) and
/// the audit trail still has its submission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_by_month_outlive_retention() {
    let dir = test_dir("history");
    std::fs::write(dir.join("maasd.toml"), "sim_hosts = 40\n[history]\nretention_secs = 1\npurge_every_secs = 1\n")
        .unwrap();
    let d = spawn(&dir, "history", &["--config".into(), dir.join("maasd.toml").display().to_string()]);
    let mut olga = client(&d, "olga").await;
    let id = olga.submit_batch(reboot("sim[000001-000003].dc1")).await.unwrap().into_inner().batch_id;
    assert_eq!(await_completed(&mut olga, &id).await, 3);
    let start = std::time::Instant::now();
    loop {
        let got = olga.get_batch(pb::GetBatchRequest { batch_id: id.clone(), hostnames: vec![], steps: false }).await;
        if got.as_ref().is_err_and(|s| s.code() == tonic::Code::NotFound) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "retention did not purge the batch: {got:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (code, out, err) = maasctl(&d, "olga", &["--json", "stats", "--since", "365d", "--by", "month"]);
    assert_eq!(code, 0, "{err}");
    let stats: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let periods = stats["periods"].as_array().unwrap();
    let reboots: Vec<&serde_json::Value> = periods.iter().filter(|p| p["action"] == "reboot").collect();
    assert_eq!(reboots.len(), 1, "{out}");
    assert_eq!((reboots[0]["succeeded"].as_u64(), reboots[0]["success_rate"].as_f64()), (Some(3), Some(1.0)), "{out}");
    let (code, out, _) = maasctl(&d, "olga", &["stats", "--since", "365d", "--by", "month"]);
    assert!(code == 0 && out.contains("by period:") && out.contains("reboot"), "{out}");
    let (_, err_out, err) = maasctl(&d, "olga", &["stats", "--by", "year"]);
    assert!(err.contains("by: \"year\" is not a period"), "{err_out}{err}");
    let (_, out, _) = maasctl(&d, "olga", &["--json", "audit", "--batch", &id]);
    assert!(out.contains("\"op\":\"submit\""), "the audit trail outlives retention: {out}");
}
