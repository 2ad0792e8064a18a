//! The web console in a real browser: headless Chromium (Debian's `chromium`, which
//! scripts/test installs) driven by Playwright (`playwright-core` from npm, installed here
//! under target/ when missing), presenting client certificates to a real maasd on
//! loopback. The checks themselves are in tests/console/console.mjs; this test prepares
//! the batches they look at, runs them, and keeps the screenshots they take under
//! `target/tmp/console-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod support;

use maas_grpc::pb;
use support::*;

/// The Playwright version the checks are written against.
const PLAYWRIGHT: &str = "playwright-core@1.65.2";

/// Where playwright-core is installed (once) for the test.
fn playwright() -> PathBuf {
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-node");
    if !prefix.join("node_modules/playwright-core/package.json").exists() {
        std::fs::create_dir_all(&prefix).unwrap();
        let out = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(PLAYWRIGHT)
            .output()
            .expect("npm runs (Node.js and npm are on this machine class)");
        assert!(out.status.success(), "npm install {PLAYWRIGHT}: {}", String::from_utf8_lossy(&out.stderr));
    }
    prefix.join("node_modules")
}

fn chromium() -> String {
    let path = std::env::var("MAAS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: ./scripts/test installs Debian's chromium (apt-get install chromium), or set MAAS_CHROMIUM"
    );
    path
}

async fn wait_for(
    c: &mut maas_grpc::pb::maas_client::MaasClient<tonic::transport::Channel>,
    id: &str,
    states: &[&str],
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b =
            c.get_batch(pb::GetBatchRequest { batch_id: id.into(), hostnames: vec![], steps: false }).await.unwrap();
        if states.contains(&b.get_ref().state.as_str()) {
            return;
        }
        assert!(Instant::now() < deadline, "batch {id} never reached {states:?}: {:?}", b.get_ref().state);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_headless_chromium() {
    let (browser, modules) = (chromium(), playwright());
    let d = start("console");
    let mut alice = client(&d, "alice").await;
    let mut olga = client(&d, "olga").await;

    // A host whose BMC the simulated fleet does not have: its steps fail.
    let mut ghost = host("ghost01.dc1", "web");
    ghost.bmc_address = "10.9.9.9".into();
    ghost.site = "dc1".into();
    olga.import_hosts(pb::ImportHostsRequest { hosts: vec![ghost] }).await.unwrap();
    let failed = alice.submit_batch(reboot("sim0000[01-03].dc1,ghost01.dc1")).await.unwrap().into_inner().batch_id;
    wait_for(&mut alice, &failed, &["completed"]).await;

    // One that is still running when the browser first looks (its hosts wait for
    // not_before), and finishes while the page stays open.
    let mut live = reboot("sim0000[10-12].dc1");
    live.not_before_ms = Some(now_ms() + 6_000);
    let live = alice.submit_batch(live).await.unwrap().into_inner().batch_id;
    // One held for an hour: the viewer looks at it, its submitter cancels it.
    let mut held = reboot("sim0000[20-21].dc1");
    held.not_before_ms = Some(now_ms() + 3_600_000);
    let held = alice.submit_batch(held).await.unwrap().into_inner().batch_id;

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/console.mjs");
    let out = Command::new("node")
        .arg(&script)
        .env("MAAS_PLAYWRIGHT", &modules)
        .env("MAAS_CHROMIUM", &browser)
        .env("MAAS_URL", format!("https://localhost:{}", d.http_port))
        .env("MAAS_CERTS", d.dir.join("certs"))
        .env("MAAS_SHOTS", &shots)
        .env("MAAS_BATCH_FAILED", &failed)
        .env("MAAS_BATCH_LIVE", &live)
        .env("MAAS_BATCH_HELD", &held)
        // Playwright's TLS client checks maasd's certificate against the test's CA.
        .env("NODE_EXTRA_CA_CERTS", d.dir.join("certs/ca.pem"))
        .output()
        .expect("node runs");
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(
        out.status.success(),
        "console checks failed:\n{report}\n{}\nmaasd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(d.dir.join("maasd.log")).unwrap_or_default()
    );
    for shot in [
        "batches-running",
        "batches-done",
        "batch-failed-host",
        "stats",
        "active",
        "batch-viewer-no-buttons",
        "batch-cancelled-by-keyboard",
    ] {
        let file = shots.join(format!("{shot}.png"));
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "{} was not saved", file.display());
    }
    println!("screenshots: {}", shots.display());
    // The cancel the keyboard sent reached the engine.
    wait_for(&mut alice, &held, &["cancelling", "cancelled"]).await;
}
