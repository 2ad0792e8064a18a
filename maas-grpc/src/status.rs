//! Engine errors as gRPC statuses: a rejected submission is `INVALID_ARGUMENT` (or
//! `FAILED_PRECONDITION` when the only problems are overlaps and in-use hosts) with an
//! encoded `maas.v1.Rejection` as the status details; a denied request is
//! `PERMISSION_DENIED` naming the missing permission; an unknown batch is `NOT_FOUND`; a
//! reused idempotency key is `ALREADY_EXISTS`; an import giving two hosts one MAC is
//! `INVALID_ARGUMENT` naming both; an illegal transition `FAILED_PRECONDITION`;
//! anything else `UNAVAILABLE`.

use maas_core::ports::store::StoreError;
use maas_core::validate::Problem;
use maas_engine::EngineError;
use prost::Message;
use tonic::Status;

use crate::convert::rejection;

/// The status a failed engine call answers with.
pub(crate) fn status(e: EngineError) -> Status {
    match e {
        EngineError::Rejected(report) => {
            let only_holds =
                report.problems.iter().all(|p| matches!(p, Problem::Conflict { .. } | Problem::InUse { .. }));
            let code = if only_holds { tonic::Code::FailedPrecondition } else { tonic::Code::InvalidArgument };
            let details = rejection(&report).encode_to_vec();
            Status::with_details(code, report.to_string(), details.into())
        }
        EngineError::Denied(d) => Status::permission_denied(d.to_string()),
        EngineError::NotFound(id) => Status::not_found(format!("batch {id} not found")),
        EngineError::Store(StoreError::IdempotencyKeyReused { key, batch }) => {
            Status::already_exists(format!("idempotency key {key:?} was used for batch {batch} with another request"))
        }
        EngineError::Store(StoreError::NotFound { .. }) => Status::not_found("not found"),
        EngineError::Store(e @ StoreError::DuplicateMac { .. }) => Status::invalid_argument(e.to_string()),
        EngineError::Store(StoreError::Transition(t)) => Status::failed_precondition(t.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}
