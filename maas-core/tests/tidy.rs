//! Architecture invariants that a test can check (see ARCHITECTURE.md): maas-core depends
//! on no runtime, database, RPC, Python, IPMI or HTTP crate and on no other crate of the
//! workspace; its source never reads a clock, sleeps, spawns, does I/O or draws entropy;
//! the workspace's crate graph has no cycle; and every source file says what it owns in a
//! `//!` line.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const FORBIDDEN: &[&str] = &[
    // Runtimes and I/O.
    "tokio",
    "tokio-util",
    "async-std",
    "smol",
    "async-io",
    "mio",
    "socket2",
    "futures-timer",
    // The workspace's own shells and runtime: maas-core is at the bottom.
    "maas",
    "maas-engine",
    "maas-sim",
    "maas-store",
    "maas-ipmi",
    "maas-grpc",
    "maas-py",
    // Databases, RPC, Python, IPMI, HTTP, entropy.
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
fn maas_core_depends_on_no_runtime_database_rpc_python_ipmi_http_or_workspace_crate() {
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

/// What maas-core's source may not say: clock reads, sleeps, threads, runtimes, I/O and
/// entropy. Time comes in as `now` or through `Clock`; randomness through `SimRng`.
const BANNED_IN_CORE: &[&str] = &[
    "SystemTime::now",
    "Instant::now",
    "Utc::now",
    "Local::now",
    "thread::sleep",
    "tokio::",
    "async_std::",
    "smol::",
    "std::net",
    "std::fs",
    "std::process",
    "thread_rng",
    "OsRng",
    "getrandom",
    "Uuid::new_v4",
    "Uuid::now_v7",
];

/// The offending lines of `text` (comments aside).
fn banned_lines(name: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for b in BANNED_IN_CORE {
            if code.contains(b) {
                out.push(format!("{name}:{}: {b}", n + 1));
            }
        }
    }
    out
}

#[test]
fn maas_core_never_reads_a_clock_sleeps_does_io_or_draws_entropy() {
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() > 20, "the source walk is broken: {files:?}");
    let offenders: Vec<String> = files
        .iter()
        .flat_map(|f| banned_lines(&f.display().to_string(), &std::fs::read_to_string(f).unwrap()))
        .collect();
    assert!(offenders.is_empty(), "maas-core must stay sans-IO (ARCHITECTURE.md):\n{}", offenders.join("\n"));
}

#[test]
fn the_source_check_catches_what_it_bans() {
    let bad =
        "fn f() {\n    let t = std::time::SystemTime::now();\n    std::thread::sleep(d);\n    tokio::spawn(x);\n}";
    let found = banned_lines("bad.rs", bad);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(banned_lines("ok.rs", "// tokio:: in a comment is fine\nfn now(now: Timestamp) {}").is_empty());
}

/// The workspace's packages, from `cargo metadata --no-deps`.
fn workspace_packages() -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"].as_array().unwrap().clone()
}

/// The workspace's crates and the workspace crates each depends on (normal dependencies).
fn workspace_graph() -> HashMap<String, Vec<String>> {
    let packages = workspace_packages();
    let members: HashSet<String> = packages.iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null() && members.contains(d["name"].as_str().unwrap()))
                .map(|d| d["name"].as_str().unwrap().to_string())
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

#[test]
fn the_crate_graph_has_no_cycle_and_maas_core_at_the_bottom() {
    let graph = workspace_graph();
    for c in ["maas-core", "maas-engine", "maas-sim", "maas-store", "maas-grpc"] {
        assert!(graph.contains_key(c), "{c} is not in the workspace: {graph:?}");
    }
    assert_eq!(graph["maas-core"], Vec::<String>::new(), "maas-core depends on no workspace crate");
    assert_eq!(graph["maas-engine"], vec!["maas-core".to_string()], "the runtime sits on the core only");
    // Kahn's algorithm: every crate can be ordered after its dependencies.
    let mut left = graph.clone();
    let mut order = Vec::new();
    while !left.is_empty() {
        let ready: Vec<String> =
            left.iter().filter(|(_, deps)| deps.iter().all(|d| order.contains(d))).map(|(c, _)| c.clone()).collect();
        assert!(!ready.is_empty(), "a cycle among {:?}", left.keys().collect::<Vec<_>>());
        for c in ready {
            left.remove(&c);
            order.push(c);
        }
    }
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for dir in [
        "maas-core/src",
        "maas-core/tests",
        "maas-engine/src",
        "maas-engine/tests",
        "maas-sim/src",
        "maas-sim/tests",
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

#[test]
fn the_simulated_fleet_is_linked_only_behind_a_feature() {
    for package in workspace_packages() {
        let name = package["name"].as_str().unwrap();
        for dep in package["dependencies"].as_array().unwrap() {
            let normal = dep["kind"].is_null();
            if normal && dep["name"] == "maas-sim" && !matches!(name, "maas-py") {
                assert_eq!(dep["optional"], true, "{name} links maas-sim by default");
            }
        }
    }
}
