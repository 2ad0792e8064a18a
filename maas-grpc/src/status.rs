//! Engine errors as gRPC statuses. A refused submission is `INVALID_ARGUMENT`,
//! `FAILED_PRECONDITION` when its only problems are hosts held by other batches or in use,
//! or `PERMISSION_DENIED` when its only problems are missing permissions. Its message is a
//! short summary and its details (`grpc-status-details-bin`) a `google.rpc.Status` holding
//! a `maas.v1.Rejection` with the first problems: together they stay a few KiB at any batch
//! size, since common clients drop trailers over 8 to 16 KiB. A dry run of the same request
//! returns every problem in its response body ([`crate::client::full_rejection`] fetches
//! it). A denied request is `PERMISSION_DENIED` naming the missing permission; an unknown
//! batch is `NOT_FOUND`; a reused idempotency key is `ALREADY_EXISTS`; an import giving two
//! hosts one MAC is `INVALID_ARGUMENT` naming both; an illegal transition
//! `FAILED_PRECONDITION`; anything else `UNAVAILABLE`, with the cause in maasd's log and
//! never the store's text in the status.

use maas_core::ports::store::StoreError;
use maas_core::validate::{Problem, ValidationReport, clip};
use maas_engine::EngineError;
use prost::Message;
use tonic::Status;

use crate::convert::rejection;
use crate::pb;

/// At most this many problems travel in a refusal's details.
pub(crate) const DETAIL_PROBLEMS: usize = 20;
/// A refusal's status message is at most this long (bytes).
pub(crate) const MESSAGE_BYTES: usize = 1024;
/// The type URL of the Rejection in a refusal's `google.rpc.Status` details.
pub(crate) const REJECTION_TYPE_URL: &str = "type.googleapis.com/maas.v1.Rejection";

/// `google.rpc.Status`, the standard content of `grpc-status-details-bin`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct RpcStatus {
    /// The status code.
    #[prost(int32, tag = "1")]
    pub(crate) code: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    /// Typed details.
    #[prost(message, repeated, tag = "3")]
    pub(crate) details: Vec<prost_types::Any>,
}

/// The status a failed engine call answers with.
pub(crate) fn status(e: EngineError) -> Status {
    match e {
        EngineError::Rejected(report) => refusal(&report),
        EngineError::Denied(d) => Status::permission_denied(d.to_string()),
        EngineError::NotFound(id) => Status::not_found(format!("batch {id} not found")),
        EngineError::Store(StoreError::IdempotencyKeyReused { key, batch }) => {
            Status::already_exists(format!("idempotency key {key:?} was used for batch {batch} with another request"))
        }
        EngineError::Store(StoreError::NotFound { .. }) => Status::not_found("not found"),
        EngineError::Store(e @ StoreError::DuplicateMac { .. }) => Status::invalid_argument(e.to_string()),
        EngineError::Store(StoreError::Transition(t)) => Status::failed_precondition(t.to_string()),
        other => unavailable(&other),
    }
}

/// `UNAVAILABLE` for a failure the client may retry; the cause goes to the log (it may
/// hold database text, which is not the client's business), under a reference the
/// message gives.
pub(crate) fn unavailable(cause: &dyn std::fmt::Display) -> Status {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let reference = format!("{:x}-{seq}", started.as_secs());
    tracing::error!(reference, "request failed: {cause}");
    Status::unavailable(format!(
        "the server could not complete the request; try again (maasd log reference {reference})"
    ))
}

/// A refused submission's status: the code by kind of problem, a short message, and the
/// first problems as a `maas.v1.Rejection` in `google.rpc.Status` details.
pub(crate) fn refusal(report: &ValidationReport) -> Status {
    let all = |f: fn(&Problem) -> bool| !report.problems.is_empty() && report.problems.iter().all(f);
    let code = if all(Problem::is_denial) {
        tonic::Code::PermissionDenied
    } else if all(|p| matches!(p, Problem::Conflict { .. } | Problem::InUse { .. })) {
        tonic::Code::FailedPrecondition
    } else {
        tonic::Code::InvalidArgument
    };
    let mut message = report.summary(10, MESSAGE_BYTES - 96);
    if report.problems.len() > DETAIL_PROBLEMS {
        message.push_str("\n(a dry run of the same request lists every problem)");
    }
    let first = ValidationReport { problems: report.problems.iter().take(DETAIL_PROBLEMS).cloned().collect() };
    let mut bounded = rejection(&first);
    for other in &mut bounded.other {
        *other = clip(other, 200).into_owned();
    }
    bounded.summary = message.clone();
    bounded.total_problems = report.problems.len() as u32;
    bounded.truncated = report.problems.len() > DETAIL_PROBLEMS;
    let details = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_types::Any { type_url: REJECTION_TYPE_URL.into(), value: bounded.encode_to_vec() }],
    };
    Status::with_details(code, message, details.encode_to_vec().into())
}

/// The Rejection in a status's details, if it carries one.
pub(crate) fn rejection_of(status: &Status) -> Option<pb::Rejection> {
    if status.details().is_empty() {
        return None;
    }
    let wrapped = RpcStatus::decode(status.details()).ok()?;
    let any = wrapped.details.iter().find(|a| a.type_url == REJECTION_TYPE_URL)?;
    pb::Rejection::decode(any.value.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use maas_core::names::Hostname;

    #[test]
    fn refusals_stay_small_and_say_how_many_problems_there_are() {
        let held_by: maas_core::id::BatchId = "00000000-0000-0000-0000-000000000009".parse().unwrap();
        let report = ValidationReport {
            problems: (0..10_000)
                .map(|i| Problem::Conflict { host: Hostname::new(&format!("h{i:05}.dc1")).unwrap(), held_by })
                .collect(),
        };
        let s = refusal(&report);
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert!(
            s.message().len() <= MESSAGE_BYTES && s.details().len() < 4096,
            "{} {}",
            s.message().len(),
            s.details().len()
        );
        let r = rejection_of(&s).unwrap();
        assert_eq!((r.total_problems, r.truncated, r.conflicts.len()), (10_000, true, DETAIL_PROBLEMS));
        assert!(s.message().contains("h[00000-09999].dc1 are held by active batch"), "{}", s.message());
    }

    #[test]
    fn only_missing_permissions_is_permission_denied() {
        let denied =
            maas_core::authz::Denied { principal: "bob".into(), permission: maas_core::authz::Permission::Admin };
        let host = Hostname::new("web1.dc1").unwrap();
        let report = ValidationReport { problems: vec![Problem::Unauthorized { host: host.clone(), denied }] };
        assert_eq!(refusal(&report).code(), tonic::Code::PermissionDenied);
        let mixed =
            ValidationReport { problems: [report.problems.clone(), vec![Problem::UnknownHost { host }]].concat() };
        assert_eq!(refusal(&mixed).code(), tonic::Code::InvalidArgument);
    }
}
