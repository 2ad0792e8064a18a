//! Criterion benches of maas-core's hot decisions: hostlist expansion of 100k names,
//! validation + overlap of a 1,000-host batch against 1k and 1M active claims (reported as
//! a ratio: the cost must not grow with the fleet), and queue-key computation.
//! Run: `cargo bench --bench core` (prints the 1M/1k ratio at the end).

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group};
use maas::authz::AllowAll;
use maas::batch::{BatchRequest, Limits};
use maas::validate::{ValidationContext, validate_batch};
use maas::*;
use uuid::Uuid;

fn host(i: usize) -> Host {
    Host {
        hostname: Hostname::new(&format!("n{i:07}.dc1")).unwrap(),
        site: Site::new("dc1").unwrap(),
        rack: None,
        pool: Pool::new("web").unwrap(),
        owner_group: None,
        sku: Sku::new("gen9").unwrap(),
        bmc: BmcEndpoint::ipmi("10.0.0.1", 623, "d"),
        state: HostState::Ready,
        mac: None,
        allocated_to: None,
        state_since: None,
        boot_method: Default::default(),
    }
}

fn hostlist_bench(c: &mut Criterion) {
    c.bench_function("hostlist/expand_100k", |b| {
        b.iter(|| maas::hostlist::expand(black_box("web[000001-100000].dc1"), 100_000).unwrap())
    });
    let names = maas::hostlist::expand("web[000001-100000].dc1", 100_000).unwrap();
    c.bench_function("hostlist/collapse_100k", |b| b.iter(|| maas::hostlist::collapse(black_box(&names))));
}

fn validation_bench(c: &mut Criterion) {
    // The batch: hosts 1_000_000..1_001_000 (none claimed). The fleet: claims on other hosts.
    let batch_hosts: HashMap<Hostname, Host> =
        (1_000_000..1_001_000).map(|i| (host(i).hostname.clone(), host(i))).collect();
    let req = BatchRequest::new(Action::Reboot { soft: false }, ["n[1000000-1000999].dc1"]);
    let limits = Limits::default();
    let principal = Principal::new("bench", []);
    let mut group = c.benchmark_group("validate_1000_hosts");
    for (label, active) in [("1k_claims", 1_000usize), ("1M_claims", 1_000_000)] {
        let claims: HashMap<Hostname, BatchId> = (0..active)
            .map(|i| (Hostname::new(&format!("n{i:07}.dc1")).unwrap(), BatchId(Uuid::from_u128(i as u128))))
            .collect();
        group.bench_function(label, |b| {
            b.iter(|| {
                let ctx = ValidationContext {
                    limits: &limits,
                    principal: &principal,
                    authorizer: &AllowAll,
                    hosts: &batch_hosts,
                    claims: &claims,
                    now: Timestamp::EPOCH,
                };
                validate_batch(black_box(&req), &ctx).unwrap()
            })
        });
    }
    group.finish();
}

fn queue_key_bench(c: &mut Criterion) {
    let p = PriorityPolicy::default();
    c.bench_function("queue_key", |b| {
        b.iter(|| p.queue_key(black_box(Timestamp::from_millis(1_700_000_000_000)), black_box(PriorityClass::High)))
    });
}

criterion_group!(benches, hostlist_bench, validation_bench, queue_key_bench);

fn estimate_ns(path: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let text = std::fs::read_to_string(format!("{dir}/criterion/{path}/new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if let (Some(small), Some(large)) =
        (estimate_ns("validate_1000_hosts/1k_claims"), estimate_ns("validate_1000_hosts/1M_claims"))
    {
        println!(
            "\nvalidation+overlap of 1,000 hosts: {:.1} us with 1k active claims, {:.1} us with 1M: ratio {:.2} (target <= 1.5)",
            small / 1e3,
            large / 1e3,
            large / small
        );
    }
}
