//! Architecture invariants that a test can check (see ARCHITECTURE.md):
//! maas-core depends on no database, RPC, Python, IPMI or HTTP crate; reads the system
//! clock only in `SystemClock`; and every source file says what it owns in a `//!` line.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "sea-orm",
    "sea-query",
    "sqlx",
    "rusqlite",
    "postgres",
    "tokio-postgres",
    "mysql",
    "mysql_async",
    "tonic",
    "prost",
    "pyo3",
    "ipmi-rs",
    "hyper",
    "reqwest",
    "axum",
    "h2",
    "http",
    "ureq",
    "rand",
];

/// Every crate maas-core pulls in for normal builds (not dev, not build), transitively.
fn normal_dependency_closure() -> HashSet<String> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &serde_json::Value> =
        meta["resolve"]["nodes"].as_array().unwrap().iter().map(|n| (n["id"].as_str().unwrap(), n)).collect();
    let root = names.iter().find(|(_, n)| **n == "maas-core").map(|(id, _)| *id).unwrap();
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(names[dep_id].to_string()) {
                stack.push(dep_id);
            }
        }
    }
    seen
}

#[test]
fn maas_core_depends_on_no_database_rpc_python_ipmi_or_http_crate() {
    let deps = normal_dependency_closure();
    assert!(deps.contains("serde"), "the closure walk is broken: {deps:?}");
    let bad: Vec<&&str> = FORBIDDEN.iter().filter(|f| deps.contains(**f)).collect();
    assert!(bad.is_empty(), "maas-core must not depend on {bad:?}");
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_system_clock_reads_the_clock_and_nothing_draws_os_entropy() {
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let banned = [
        "SystemTime::now",
        "Instant::now",
        "Utc::now",
        "Local::now",
        "thread_rng",
        "OsRng",
        "getrandom",
        "Uuid::new_v4",
        "Uuid::now_v7",
    ];
    let mut offenders = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            for b in banned {
                let sanctioned = f.ends_with("time.rs") && b == "SystemTime::now";
                if line.contains(b) && !sanctioned && !line.trim_start().starts_with("//") {
                    offenders.push(format!("{}:{}: {b}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "time and randomness must come through Clock / SimRng:\n{}", offenders.join("\n"));
    let time = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/time.rs")).unwrap();
    assert_eq!(time.matches("SystemTime::now").count(), 1, "one sanctioned clock read, in SystemClock");
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for dir in [
        "maas-core/src",
        "maas-core/tests",
        "maas-store/src",
        "maas-store/tests",
        "maas-ipmi/src",
        "maas-ipmi/tests",
        "maas-grpc/src",
        "maas-py/src",
        "src",
        "examples",
        "benches",
    ] {
        let d = root.join(dir);
        if d.exists() {
            sources(&d, &mut files);
        }
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a leading //! line: {missing:?}");
}
