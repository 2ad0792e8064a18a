//! The REST/JSON face against a real `maasd` on loopback, called with curl (a plain HTTP
//! client, as scripts and installers call it) over mTLS: every route, the answers matched
//! against the gRPC twin's, a batch watched over server-sent events seeing every event,
//! the OpenAPI document validated and checked against the routes that answer, and bad
//! input refused with a 4xx naming the problem and nothing changed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use maas_grpc::pb;
use serde_json::{Value, json};
use support::*;

/// One curl call: the HTTP status (0 when no HTTP answer came) and the body.
fn curl(d: &Maasd, user: Option<&str>, method: &str, path: &str, body: Option<&str>, extra: &[&str]) -> (u16, String) {
    let certs = d.dir.join("certs");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-X", method, "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(certs.join("ca.pem"));
    if let Some(u) = user {
        cmd.arg("--cert").arg(certs.join(format!("{u}.pem"))).arg("--key").arg(certs.join(format!("{u}-key.pem")));
    }
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    cmd.args(extra).arg(format!("https://localhost:{}{path}", d.http_port));
    let out = cmd.output().expect("curl runs (scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A call that must answer 200 with JSON.
fn ok(d: &Maasd, user: &str, method: &str, path: &str, body: Option<&str>) -> Value {
    let (code, text) = curl(d, Some(user), method, path, body, &[]);
    assert_eq!(code, 200, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
}

/// A call that must fail with `code`: its error document.
fn refused(d: &Maasd, user: Option<&str>, method: &str, path: &str, body: Option<&str>, code: u16) -> Value {
    let (got, text) = curl(d, user, method, path, body, &[]);
    assert_eq!(got, code, "{method} {path}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    assert_eq!(v["error"]["code"], json!(code), "{text}");
    v["error"].clone()
}

fn wait_for_state(d: &Maasd, user: &str, id: &str, states: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = ok(d, user, "GET", &format!("/v1/batches/{id}"), None);
        if states.iter().any(|s| b["state"] == json!(s)) {
            return b;
        }
        assert!(Instant::now() < deadline, "batch {id} never reached {states:?}: {b}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The events an SSE stream delivers until an event of kind `until`: (id, event, data).
fn sse_until(d: &Maasd, user: &str, path: &str, headers: &[&str], until: &str) -> Vec<(u64, String, Value)> {
    let certs = d.dir.join("certs");
    let mut cmd = Command::new("curl");
    cmd.args(["-sSN", "--max-time", "60"])
        .arg("--cacert")
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join(format!("{user}.pem")))
        .arg("--key")
        .arg(certs.join(format!("{user}-key.pem")));
    for h in headers {
        cmd.args(["-H", h]);
    }
    let mut child = cmd.arg(format!("https://localhost:{}{path}", d.http_port)).stdout(Stdio::piped()).spawn().unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let (mut events, mut id, mut kind) = (Vec::new(), 0u64, String::new());
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("event: ") {
            kind = v.to_string();
        } else if let Some(v) = line.strip_prefix("data: ") {
            events.push((id, kind.clone(), serde_json::from_str(v).unwrap()));
            if kind == until {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    events
}

fn submit_body(hosts: &str, extra: Value) -> String {
    let mut v = json!({"hosts": [hosts], "action": {"reboot": {}}});
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_its_grpc_twin_and_sse_sees_every_event() {
    let d = start("rest-routes");
    let mut grpc = client(&d, "alice").await;

    // Submit, dry run and idempotency.
    let dry =
        ok(&d, "alice", "POST", "/v1/batches", Some(&submit_body("sim0000[01-04].dc1", json!({"dry_run": true}))));
    assert_eq!((dry["acceptable"].clone(), dry["expanded_hosts"].as_array().unwrap().len()), (json!(true), 4));
    let body = submit_body("sim0000[01-04].dc1", json!({"idempotency_key": "rest-1", "priority": "PRIORITY_LOW"}));
    let first = ok(&d, "alice", "POST", "/v1/batches", Some(&body));
    let id = first["batch_id"].as_str().unwrap().to_string();
    assert_eq!(first["created"], json!(true));
    let again = ok(&d, "alice", "POST", "/v1/batches", Some(&body));
    assert_eq!((again["batch_id"].as_str(), again["created"].clone()), (Some(id.as_str()), json!(false)));

    // Server-sent events: every event of the batch, in order, the same as gRPC's watch.
    let events = sse_until(&d, "alice", &format!("/v1/batches/{id}/events"), &[], "batch_completed");
    let mut watch =
        grpc.watch_batch(pb::WatchBatchRequest { batch_id: id.clone(), after: 0 }).await.unwrap().into_inner();
    let mut twin = Vec::new();
    while let Some(e) = futures::StreamExt::next(&mut watch).await {
        let e = e.unwrap();
        twin.push((e.seq, e.kind.clone()));
        if e.kind == "batch_completed" {
            break;
        }
    }
    let seen: Vec<(u64, String)> = events.iter().map(|(s, k, _)| (*s, k.clone())).collect();
    assert_eq!(seen, twin, "SSE and gRPC watch disagree");
    assert_eq!(seen.iter().filter(|(_, k)| k == "host_succeeded").count(), 4, "{seen:?}");
    assert!(events.iter().all(|(s, k, data)| data["seq"] == json!(s) && data["kind"] == json!(k)));
    // Last-Event-ID resumes after that event.
    let after = seen[2].0;
    let resumed = sse_until(
        &d,
        "alice",
        &format!("/v1/batches/{id}/events"),
        &[&format!("Last-Event-ID: {after}")],
        "batch_completed",
    );
    assert_eq!(resumed.first().map(|e| e.0), Some(seen[3].0));

    // Reads match the gRPC twin.
    let rest = ok(&d, "alice", "GET", &format!("/v1/batches/{id}"), None);
    let twin = grpc
        .get_batch(pb::GetBatchRequest { batch_id: id.clone(), hostnames: vec![], steps: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest["state"], json!(twin.state));
    assert_eq!(rest["counts"]["succeeded"], json!(twin.counts.as_ref().unwrap().succeeded));
    assert_eq!(rest["hosts"].as_array().unwrap().len(), twin.hosts.len());
    let hosts = ok(&d, "alice", "GET", &format!("/v1/batches/{id}/hosts?steps=true"), None);
    let hosts = hosts["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 4);
    for h in hosts {
        let steps: Vec<&str> = h["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
        assert_eq!(steps, ["preflight", "power_cycle", "verify"], "{h}");
        assert!(h["steps"].as_array().unwrap().iter().all(|s| s["state"] == json!("succeeded")));
    }
    let list = ok(&d, "alice", "GET", "/v1/batches?states=completed&submitter=alice&action=reboot&limit=10", None);
    assert!(list["batches"].as_array().unwrap().iter().any(|b| b["id"] == json!(id)), "{list}");

    // Pause, resume and cancel a batch whose hosts wait for `not_before`.
    let later = now_ms() + 3_600_000;
    let held = ok(
        &d,
        "alice",
        "POST",
        "/v1/batches",
        Some(&submit_body("sim0000[10-13].dc1", json!({"max_in_flight": 1, "not_before_ms": later}))),
    );
    let held = held["batch_id"].as_str().unwrap().to_string();
    let paused = ok(&d, "alice", "POST", &format!("/v1/batches/{held}:pause"), None);
    assert_eq!(paused["state"], json!("paused"));
    let resumed = ok(&d, "alice", "POST", &format!("/v1/batches/{held}:resume"), Some("{}"));
    assert_eq!(resumed["state"], json!("running"));
    let cancelled = ok(&d, "alice", "POST", &format!("/v1/batches/{held}:cancel"), Some(r#"{"reason": "rest test"}"#));
    assert!(["cancelling", "cancelled"].contains(&cancelled["state"].as_str().unwrap()), "{cancelled}");
    wait_for_state(&d, "alice", &held, &["cancelled"]);

    // The rest of the resources.
    let stats = ok(&d, "alice", "GET", "/v1/stats?by=day", None);
    assert!(stats["succeeded"].as_u64().unwrap() >= 4, "{stats}");
    assert!(stats["periods"].as_array().unwrap().iter().any(|p| p["action"] == json!("reboot")), "{stats}");
    let outcomes = stats["outcomes"].as_array().unwrap();
    let succeeded: u64 = outcomes.iter().map(|o| o["succeeded"].as_u64().unwrap()).sum();
    assert_eq!(Some(succeeded), stats["succeeded"].as_u64(), "outcomes by action, SKU and site add up: {stats}");
    let active = ok(&d, "alice", "GET", "/v1/active", None);
    assert!(active["sites"].is_array(), "{active}");
    assert!(ok(&d, "alice", "GET", "/v1/tickets?limit=5", None)["tickets"].is_array());
    let page = ok(&d, "alice", "GET", "/v1/hosts?pool=web&limit=5", None);
    assert_eq!(page["hosts"].as_array().unwrap().len(), 5);
    let ghost = json!({"hosts": [{"hostname": "ghost01.dc1", "site": "dc1", "pool": "web", "sku": "gen11",
                                  "bmc_address": "10.9.9.9", "credentials_ref": "bmc-default"}]});
    let imported = ok(&d, "olga", "POST", "/v1/hosts:import", Some(&ghost.to_string()));
    assert_eq!(imported["written"], json!(1));
    ok(&d, "olga", "POST", "/v1/hosts/ghost01.dc1:setState", Some(r#"{"state": "defunct"}"#));
    let ghost = ok(&d, "olga", "GET", "/v1/hosts?after=ghost01.dc0&limit=1", None);
    assert_eq!(ghost["hosts"][0]["state"], json!("defunct"), "{ghost}");
    let kinds = ok(&d, "olga", "PUT", "/v1/pools/web/kinds", Some(r#"{"all": true}"#));
    assert_eq!(kinds["pool"], json!("web"));
    assert_eq!(ok(&d, "alice", "GET", "/v1/pools/web/kinds", None)["all"], kinds["all"]);
    assert!(ok(&d, "alice", "GET", "/v1/images", None)["images"].is_array());
    let audit = ok(&d, "olga", "GET", "/v1/audit?principal=alice&op=submit", None);
    assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["batch_id"] == json!(id)), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_validates_and_names_exactly_the_routes_that_answer() {
    let d = start("rest-openapi");
    let doc = ok(&d, "alice", "GET", "/v1/openapi.json", None);
    // A validator that is not ours: openapi-spec-validator (PyPI), in scripts/test's virtualenv.
    let file = d.dir.join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let python = std::env::var("VIRTUAL_ENV").map(|v| format!("{v}/bin/python")).unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/pyenv/bin/python");
        if std::path::Path::new(venv).exists() { venv.to_string() } else { "python3".to_string() }
    });
    let out = Command::new(&python)
        .args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))",
        ])
        .arg(&file)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "openapi-spec-validator ({python}; ./scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every documented operation is routed (whatever it answers to placeholder arguments,
    // it is not "no route" and not "method not allowed").
    let mut operations = 0;
    for (path, methods) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{batch_id}", "01a241ea-3fd3-7000-90fd-e700246695d8")
            .replace("{hostname}", "sim000001.dc1")
            .replace("{pool}", "web");
        for method in methods.as_object().unwrap().keys() {
            operations += 1;
            let m = method.to_ascii_uppercase();
            let body = (m != "GET").then_some("{}");
            let extra: &[&str] = if path.ends_with("/events") { &["--max-time", "2"] } else { &[] };
            let (code, text) = curl(&d, Some("bob"), &m, &concrete, body, extra);
            assert!(code != 405 && !text.contains("no route"), "{m} {path}: {code} {text}");
        }
    }
    assert!(operations >= 20, "{operations} operations documented");
    // And a path that is not documented is not routed.
    let e = refused(&d, Some("alice"), "GET", "/v1/batchez", None, 404);
    assert!(e["message"].as_str().unwrap().contains("no route /v1/batchez"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_naming_the_problem_and_changes_nothing() {
    let d = start("rest-refusals");
    let mut grpc = client(&d, "alice").await;
    let holder = ok(
        &d,
        "alice",
        "POST",
        "/v1/batches",
        Some(&submit_body("sim0000[01-02].dc1", json!({"max_in_flight": 1, "not_before_ms": now_ms() + 3_600_000}))),
    );
    let holder = holder["batch_id"].as_str().unwrap().to_string();
    let before = batch_count(&mut grpc).await;

    // Bodies refused with 400, each naming what is wrong.
    let bad_bodies = [
        (r#"{"hosts": ["sim000003.dc1"], "action": "#, "malformed JSON body"),
        (r#"{"hosts": "sim000003.dc1", "action": {"reboot": {}}}"#, "SubmitBatchRequest"),
        (r#"{"hostz": ["sim000003.dc1"], "action": {"reboot": {}}}"#, "hostz"),
        (r#"{"hosts": ["sim000003.dc1"], "action": {"reboot": {}}, "max_in_flight": -1}"#, "SubmitBatchRequest"),
        ("[1, 2]", "must be a JSON object"),
    ];
    for (body, names) in bad_bodies {
        let e = refused(&d, Some("alice"), "POST", "/v1/batches", Some(body), 400);
        assert!(e["message"].as_str().unwrap().contains(names), "{body}: {e}");
    }
    // A body over the limit (maasd's 4 MiB default), sent from a file.
    let big = d.dir.join("big.json");
    std::fs::write(&big, format!(r#"{{"hosts": ["{}"], "action": {{"reboot": {{}}}}}}"#, "a".repeat(5 << 20))).unwrap();
    let (code, text) = curl(
        &d,
        Some("alice"),
        "POST",
        "/v1/batches",
        None,
        &["-H", "content-type: application/json", "--data-binary", &format!("@{}", big.display())],
    );
    assert_eq!(code, 413, "{text} {}", std::fs::read_to_string(d.dir.join("maasd.log")).unwrap_or_default());
    assert!(text.contains("limit of 4194304 bytes"), "{text}");
    // curl's default form encoding is not JSON.
    let (code, text) = curl(&d, Some("alice"), "POST", "/v1/batches", None, &["-d", "hosts=sim000003.dc1"]);
    assert_eq!(code, 415, "{text}");
    assert!(text.contains("Content-Type: application/json"), "{text}");
    let e = refused(&d, Some("alice"), "GET", "/v1/batches?limit=ten", None, 400);
    assert!(e["message"].as_str().unwrap().contains("limit: \"ten\" is not a non-negative integer"), "{e}");
    let e = refused(&d, Some("alice"), "GET", "/v1/batches?sort=newest", None, 400);
    assert!(e["message"].as_str().unwrap().contains("unknown query parameter \"sort\""), "{e}");
    let e = refused(&d, Some("alice"), "GET", "/v1/batches/not-an-id", None, 400);
    assert_eq!(e["status"], json!("INVALID_ARGUMENT"));
    let e = refused(&d, Some("alice"), "GET", "/v1/batches/01a241ea-3fd3-7000-90fd-e700246695d8", None, 404);
    assert_eq!(e["status"], json!("NOT_FOUND"));
    let (code, text) = curl(&d, Some("alice"), "DELETE", "/v1/batches", None, &["-i"]);
    assert_eq!(code, 405, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("allow: get, post")
            || text.to_ascii_lowercase().contains("allow: post, get"),
        "{text}"
    );

    // The same refusals as gRPC, with the same codes.
    let overlap = submit_body("sim0000[02-03].dc1", json!({}));
    let e = refused(&d, Some("alice"), "POST", "/v1/batches", Some(&overlap), 409);
    assert_eq!(e["status"], json!("FAILED_PRECONDITION"));
    let rejection = &e["details"][0];
    assert_eq!(rejection["@type"], json!("type.googleapis.com/maas.v1.Rejection"));
    assert_eq!(rejection["conflicts"], json!([{"hostname": "sim000002.dc1", "batch_id": holder}]), "{e}");
    let twin = grpc.submit_batch(reboot("sim0000[02-03].dc1")).await.unwrap_err();
    assert_eq!(twin.code(), tonic::Code::FailedPrecondition);
    let e = refused(&d, Some("bob"), "POST", "/v1/batches", Some(&submit_body("sim000005.dc1", json!({}))), 403);
    assert_eq!(e["status"], json!("PERMISSION_DENIED"));
    let mut bob = client(&d, "bob").await;
    assert_eq!(bob.submit_batch(reboot("sim000005.dc1")).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    let e = refused(&d, Some("bob"), "POST", &format!("/v1/batches/{holder}:cancel"), None, 403);
    assert!(e["message"].as_str().unwrap().contains("bob lacks permission"), "{e}");
    let e =
        refused(&d, Some("alice"), "POST", "/v1/install-results", Some(r#"{"token": "nope", "succeeded": true}"#), 409);
    let wrong = pb::ReportInstallResultRequest { token: "nope".into(), succeeded: true, error: String::new() };
    let twin = grpc.report_install_result(wrong).await.unwrap_err();
    assert_eq!((e["status"].as_str(), e["message"].as_str()), (Some("FAILED_PRECONDITION"), Some(twin.message())));
    assert_eq!(twin.code(), tonic::Code::FailedPrecondition);
    // No client certificate: the TLS handshake is refused, no HTTP answer at all.
    let (code, _) = curl(&d, None, "GET", "/v1/batches", None, &[]);
    assert_eq!(code, 0);

    // Nothing of it was written: the same batches, the holder still running, and the hosts
    // the refused requests named are still free.
    assert_eq!(batch_count(&mut grpc).await, before);
    assert_eq!(ok(&d, "alice", "GET", &format!("/v1/batches/{holder}"), None)["state"], json!("running"));
    let free = ok(&d, "alice", "POST", "/v1/batches", Some(&submit_body("sim0000[03-05].dc1", json!({}))));
    assert_eq!(free["created"], json!(true));
}
