//! Bounded fuzzing of the parsers users feed directly: hostlist expressions and JSON batch
//! documents (through validation). `cargo fuzz` needs a nightly toolchain this project does
//! not have, so this is the stable equivalent: a seeded, grammar-aware mutation fuzzer that
//! runs a fixed budget of inputs in every `cargo test` and demands no panic, plus
//! round-trip properties on whatever parses. `MAAS_FUZZ_ITERS` raises the budget; a failing
//! input is printed with the seed that reproduces it.

use std::collections::{BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};

use maas_core::authz::AllowAll;
use maas_core::batch::{BatchRequest, Limits};
use maas_core::hostlist::{collapse, expand};
use maas_core::overlap::NoClaims;
use maas_core::rng::SimRng;
use maas_core::validate::{ValidationContext, validate_batch};
use maas_core::{Host, Hostname, Principal, Timestamp};

const HOSTLIST_SEEDS: &[&str] =
    &["web[001-100,105].dc1", "r[1-2]n[1-3]", "a,b c", "n[8-10]", "x[0-0]", "[1-2]", "h-[09-11].y"];
const ALPHABET: &[u8] = b"[]-,. 0123456789abcxyz\t\xc3\xa9_";

fn mutate(rng: &mut SimRng, seed: &[u8]) -> Vec<u8> {
    let mut s = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let pos = if s.is_empty() { 0 } else { rng.below(s.len() as u64 + 1) as usize };
        match rng.below(4) {
            0 if pos < s.len() => {
                s.remove(pos);
            }
            1 => s.insert(pos.min(s.len()), *rng.choose(ALPHABET).unwrap()),
            2 if pos < s.len() => s[pos] = *rng.choose(ALPHABET).unwrap(),
            _ => {
                let other = rng.choose(HOSTLIST_SEEDS).unwrap().as_bytes();
                let cut = rng.below(other.len() as u64) as usize;
                s.splice(pos.min(s.len())..pos.min(s.len()), other[cut..].iter().copied());
            }
        }
    }
    s
}

fn iterations(default: u64) -> u64 {
    std::env::var("MAAS_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `check` on `iters` inputs from `generate`, failing with the input and the seed that
/// reproduces it if any check panics; returns how many inputs `check` reported as parsed.
fn fuzz(seed: u64, iters: u64, mut generate: impl FnMut(&mut SimRng) -> String, check: impl Fn(&str) -> bool) -> usize {
    let mut rng = SimRng::seed_from_u64(seed);
    let mut parsed = 0;
    for i in 0..iters {
        let input = generate(&mut rng);
        match catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(true) => parsed += 1,
            Ok(false) => {}
            Err(_) => panic!("input #{i} {input:?} (seed {seed:#x}) panicked"),
        }
    }
    parsed
}

#[test]
fn hostlist_parser_never_panics_and_round_trips() {
    let generate = |rng: &mut SimRng| {
        let base = rng.choose(HOSTLIST_SEEDS).unwrap().as_bytes();
        String::from_utf8_lossy(&mutate(rng, base)).into_owned()
    };
    let parsed = fuzz(0xF022, iterations(100_000), generate, |input| {
        let Ok(names) = expand(input, 10_000) else { return false };
        let collapsed = collapse(&names);
        let back: BTreeSet<String> = expand(&collapsed, 10_000).expect("collapse output parses").into_iter().collect();
        assert_eq!(back, names.iter().cloned().collect::<BTreeSet<_>>(), "round trip of {collapsed:?}");
        true
    });
    assert!(parsed > 1000, "the fuzzer should reach valid inputs too (got {parsed})");
}

const SPEC_SEEDS: &[&str] = &[
    r#"{"action":{"kind":"reimage","os":"ubuntu-24.04"},"hosts":["web[1-3].dc1"],"priority":"high","rollout":{"max_in_flight":2,"failure_budget":1}}"#,
    r#"{"action":{"kind":"reboot","soft":true},"hosts":["a","b"],"force":{"reason":"x"},"not_before":"2026-11-21T10:00:00Z"}"#,
    r#"{"action":{"kind":"wipe_disks","method":"secure"},"hosts":["n[01-10]"],"idempotency_key":"k","sites":["dc1"]}"#,
];
const JSON_ALPHABET: &[u8] = b"{}[]\":,0123456789-truefalsnl abc_.\\";

#[test]
fn batch_spec_parser_and_validation_never_panic() {
    let inventory: HashMap<Hostname, Host> = HashMap::new();
    let limits = Limits { expansion_cap: 5_000, ..Limits::default() };
    let principal = Principal::new("fuzz", []);
    let generate = |rng: &mut SimRng| {
        let mut doc = rng.choose(SPEC_SEEDS).unwrap().as_bytes().to_vec();
        for _ in 0..=rng.below(3) {
            let pos = rng.below(doc.len() as u64) as usize;
            match rng.below(3) {
                0 => {
                    doc.remove(pos);
                }
                1 => doc.insert(pos, *rng.choose(JSON_ALPHABET).unwrap()),
                _ => doc[pos] = *rng.choose(JSON_ALPHABET).unwrap(),
            }
        }
        String::from_utf8_lossy(&doc).into_owned()
    };
    let parsed = fuzz(0x5bec, iterations(30_000), generate, |input| match BatchRequest::from_json(input) {
        Ok(req) => {
            let ctx = ValidationContext {
                limits: &limits,
                principal: &principal,
                authorizer: &AllowAll,
                hosts: &inventory,
                claims: &NoClaims,
                now: Timestamp::from_millis(0),
            };
            // Nothing is in the inventory, so every parsed request must be rejected with a
            // non-empty report, never accepted and never a panic.
            let report = validate_batch(&req, &ctx).expect_err("empty inventory accepts nothing");
            assert!(!report.problems.is_empty());
            true
        }
        Err(e) => {
            assert!(e.line >= 1 || e.message.contains("EOF"), "{e}");
            false
        }
    });
    assert!(parsed > 100, "the fuzzer should reach valid documents too (got {parsed})");
}
