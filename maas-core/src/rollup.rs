//! History that lasts: finished host runs and steps folded into daily rollups (per day,
//! action, site, SKU, image, and step) that retention never removes, so statistics reach
//! back past the rows it deletes. A rollup keeps outcome counts and a log-scale histogram of
//! durations, so rollups merge (across days, sites, SKUs) and still give percentiles.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::action::ActionKind;
use crate::id::BatchId;
use crate::model::HostRunState;
use crate::names::{Site, Sku};
use crate::plan::StepKind;
use crate::ports::store::{HostRunSample, StepSample};
use crate::time::Timestamp;

/// Durations by powers of two of milliseconds: bucket 0 holds less than 1 ms, bucket `i`
/// holds `[2^(i-1), 2^i)` ms; the last bucket holds everything longer (about 4 years).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    counts: Vec<u64>,
}

impl Histogram {
    /// Buckets kept.
    pub const BUCKETS: usize = 48;

    fn bucket(d: Duration) -> usize {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        (if ms == 0 { 0 } else { (64 - ms.leading_zeros()) as usize }).min(Self::BUCKETS - 1)
    }

    /// Counts one duration.
    pub fn record(&mut self, d: Duration) {
        let b = Self::bucket(d);
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
    }

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0 < q <= 1), as its bucket's upper bound: at most twice the true
    /// value, never less. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_millis(1u64 << i.min(62)));
            }
        }
        None
    }
}

/// What one rollup counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RollupKey {
    /// The UTC day (midnight) the host runs or steps finished.
    pub day: Timestamp,
    /// The batches' action.
    pub action: ActionKind,
    /// The hosts' site.
    pub site: Site,
    /// The hosts' SKU.
    pub sku: Sku,
    /// The OS image a reimage installed (empty for other actions).
    pub image: String,
    /// The step (`None`: whole host runs).
    pub step: Option<StepKind>,
}

/// Host runs (or steps) of one key: outcomes and durations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollup {
    /// What it counts.
    pub key: RollupKey,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Durations of the ones that ran to an end (cancelled ones are not timed).
    pub durations: Histogram,
}

impl Rollup {
    fn empty(key: RollupKey) -> Self {
        Rollup { key, succeeded: 0, failed: 0, cancelled: 0, durations: Histogram::default() }
    }

    /// Adds `other` (of the same key).
    pub fn merge(&mut self, other: &Rollup) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.durations.merge(&other.durations);
    }
}

/// The image a batch of `action` installs, as rollups name it (empty but for reimages).
pub fn image_of(action: &crate::action::Action) -> String {
    match action {
        crate::action::Action::Reimage { os, .. } => os.to_string(),
        _ => String::new(),
    }
}

/// The UTC midnight starting `t`'s day.
pub fn day_of(t: Timestamp) -> Timestamp {
    const DAY: i64 = 86_400_000;
    Timestamp::from_millis(t.as_millis().div_euclid(DAY) * DAY)
}

impl RollupKey {
    /// The key of a sample that finished at `at`.
    fn of(at: Timestamp, action: ActionKind, site: &Site, sku: &Sku, image: String, step: Option<StepKind>) -> Self {
        RollupKey { day: day_of(at), action, site: site.clone(), sku: sku.clone(), image, step }
    }
}

/// The rollup of `key` in `out`, made empty if new.
fn slot(out: &mut BTreeMap<RollupKey, Rollup>, key: RollupKey) -> &mut Rollup {
    out.entry(key.clone()).or_insert_with(|| Rollup::empty(key))
}

/// Folds finished host runs and succeeded steps into rollups; `image` names each batch's
/// image (empty when none).
pub fn fold(runs: &[HostRunSample], steps: &[StepSample], image: impl Fn(BatchId) -> String) -> Vec<Rollup> {
    let mut out: BTreeMap<RollupKey, Rollup> = BTreeMap::new();
    for r in runs {
        let key = RollupKey::of(r.finished_at, r.action, &r.site, &r.sku, image(r.batch_id), None);
        let roll = slot(&mut out, key);
        match r.state {
            HostRunState::Succeeded => roll.succeeded += 1,
            HostRunState::Failed => roll.failed += 1,
            HostRunState::Cancelled => roll.cancelled += 1,
            _ => continue,
        }
        if r.state != HostRunState::Cancelled {
            roll.durations.record(r.finished_at.since(r.started_at));
        }
    }
    for s in steps {
        let key = RollupKey::of(s.finished_at, s.action, &s.site, &s.sku, image(s.batch_id), Some(s.kind));
        let roll = slot(&mut out, key);
        roll.succeeded += 1;
        roll.durations.record(s.finished_at.since(s.started_at));
    }
    out.into_values().collect()
}

/// Merges rollups of equal keys.
pub fn merge(into: &mut BTreeMap<RollupKey, Rollup>, more: impl IntoIterator<Item = Rollup>) {
    for r in more {
        match into.get_mut(&r.key) {
            Some(mine) => mine.merge(&r),
            None => {
                into.insert(r.key.clone(), r);
            }
        }
    }
}

/// How statistics over a long window are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// UTC days.
    Day,
    /// ISO weeks (from Monday, UTC).
    Week,
    /// Calendar months (UTC).
    Month,
}

impl Period {
    /// Parses `day`, `week` or `month`.
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    /// The start of the period holding `t`.
    pub fn start_of(self, t: Timestamp) -> Timestamp {
        use chrono::{Datelike, TimeZone, Utc};
        let day = day_of(t);
        let date = day.to_chrono().date_naive();
        let start = match self {
            Period::Day => return day,
            Period::Week => date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday())),
            Period::Month => date.with_day(1).unwrap_or(date),
        };
        let midnight = Utc.from_utc_datetime(&start.and_hms_opt(0, 0, 0).unwrap_or_default());
        Timestamp::from_millis(midnight.timestamp_millis())
    }
}

/// One action's host runs in one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodStats {
    /// The period's start.
    pub start: Timestamp,
    /// The action.
    pub action: ActionKind,
    /// Host runs succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// succeeded / (succeeded + failed), when any ended either way.
    pub success_rate: Option<f64>,
    /// Median host-run duration (a bucket's upper bound: within a factor of two).
    pub p50: Option<Duration>,
    /// 95th percentile.
    pub p95: Option<Duration>,
}

/// Host-run rollups grouped by `period` and action, oldest first.
pub fn by_period<'r>(rollups: impl IntoIterator<Item = &'r Rollup>, period: Period) -> Vec<PeriodStats> {
    let mut groups: BTreeMap<(Timestamp, ActionKind), Rollup> = BTreeMap::new();
    for r in rollups.into_iter().filter(|r| r.key.step.is_none()) {
        let start = period.start_of(r.key.day);
        groups
            .entry((start, r.key.action))
            .or_insert_with(|| Rollup::empty(RollupKey { day: start, step: None, ..r.key.clone() }))
            .merge(r);
    }
    groups
        .into_iter()
        .map(|((start, action), r)| PeriodStats {
            start,
            action,
            succeeded: r.succeeded,
            failed: r.failed,
            cancelled: r.cancelled,
            success_rate: (r.succeeded + r.failed > 0).then(|| r.succeeded as f64 / (r.succeeded + r.failed) as f64),
            p50: r.durations.quantile(0.5),
            p95: r.durations.quantile(0.95),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn run(batch: u128, state: HostRunState, finished: &str, secs: u64) -> HostRunSample {
        let finished_at = at(finished);
        HostRunSample {
            batch_id: BatchId(uuid::Uuid::from_u128(batch)),
            action: ActionKind::Reimage,
            site: Site::new("dc1").unwrap(),
            sku: Sku::new("gen10").unwrap(),
            state,
            started_at: finished_at.minus(Duration::from_secs(secs)),
            finished_at,
        }
    }

    #[test]
    fn histograms_merge_and_bound_their_quantiles_within_a_factor_of_two() {
        let mut h = Histogram::default();
        for ms in [0, 1, 3, 700, 900, 1_000, 60_000] {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 7);
        let p50 = h.quantile(0.5).unwrap();
        assert!(p50 >= Duration::from_millis(700) && p50 <= Duration::from_millis(1_400), "{p50:?}");
        let max = h.quantile(1.0).unwrap();
        assert!(max >= Duration::from_secs(60) && max <= Duration::from_secs(120), "{max:?}");
        let mut other = Histogram::default();
        other.record(Duration::from_secs(3600));
        h.merge(&other);
        assert_eq!(h.count(), 8);
        assert!(h.quantile(1.0).unwrap() >= Duration::from_secs(3600));
        assert_eq!(Histogram::default().quantile(0.5), None);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Histogram>(&json).unwrap(), h);
    }

    #[test]
    fn host_runs_and_steps_fold_by_day_and_merge_into_months() {
        let runs = vec![
            run(1, HostRunState::Succeeded, "2026-01-10T10:00:00Z", 600),
            run(1, HostRunState::Failed, "2026-01-10T23:59:59Z", 300),
            run(2, HostRunState::Cancelled, "2026-01-11T00:00:01Z", 5),
            run(3, HostRunState::Succeeded, "2026-02-03T08:00:00Z", 1200),
        ];
        let steps = vec![StepSample {
            batch_id: BatchId(uuid::Uuid::from_u128(1)),
            action: ActionKind::Reimage,
            kind: StepKind::AwaitInstall,
            site: Site::new("dc1").unwrap(),
            sku: Sku::new("gen10").unwrap(),
            started_at: at("2026-01-10T09:50:00Z"),
            finished_at: at("2026-01-10T09:59:00Z"),
        }];
        let image = |b: BatchId| if b.0.as_u128() == 3 { "debian-13".to_string() } else { "ubuntu-24.04".into() };
        let rolled = fold(&runs, &steps, image);
        // Jan 10 runs, Jan 10 step, Jan 11 runs, Feb 3 runs.
        assert_eq!(rolled.len(), 4, "{rolled:#?}");
        let jan10 = rolled.iter().find(|r| r.key.day == at("2026-01-10T00:00:00Z") && r.key.step.is_none()).unwrap();
        assert_eq!((jan10.succeeded, jan10.failed, jan10.durations.count()), (1, 1, 2));
        assert_eq!(jan10.key.image, "ubuntu-24.04");
        let step = rolled.iter().find(|r| r.key.step == Some(StepKind::AwaitInstall)).unwrap();
        assert_eq!((step.succeeded, step.durations.count()), (1, 1));
        // Folding the same rows twice and merging doubles every count.
        let mut all = BTreeMap::new();
        merge(&mut all, rolled.clone());
        merge(&mut all, rolled);
        let months = by_period(all.values(), Period::Month);
        assert_eq!(months.len(), 2);
        assert_eq!(months[0].start, at("2026-01-01T00:00:00Z"));
        assert_eq!((months[0].succeeded, months[0].failed, months[0].cancelled), (2, 2, 2));
        assert_eq!(months[0].success_rate, Some(0.5));
        assert_eq!(
            (months[1].start, months[1].succeeded, months[1].success_rate),
            (at("2026-02-01T00:00:00Z"), 2, Some(1.0))
        );
        assert!(months[1].p50.unwrap() >= Duration::from_secs(1200));
    }

    #[test]
    fn periods_start_on_utc_days_mondays_and_first_days() {
        let t = at("2026-12-03T17:45:00Z"); // a Thursday
        assert_eq!(Period::Day.start_of(t), at("2026-12-03T00:00:00Z"));
        assert_eq!(Period::Week.start_of(t), at("2026-11-30T00:00:00Z"));
        assert_eq!(Period::Month.start_of(t), at("2026-12-01T00:00:00Z"));
        assert_eq!(Period::parse("month"), Some(Period::Month));
        assert_eq!(Period::parse("year"), None);
    }
}
