//! The smaller seams: `Provisioner`, `Notifier`, `Ticketing`, `Secrets`.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::id::BatchId;
use crate::model::Event;
use crate::names::Hostname;
use crate::plan::{BootImage, StepKind};
use crate::time::Timestamp;
use crate::validate::Problem;

/// A provisioning failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provisioner: {message}")]
pub struct ProvisionError {
    /// What went wrong.
    pub message: String,
    /// Whether another attempt may help.
    pub retryable: bool,
}

/// What `set_boot_pxe` asks a provisioner to serve a host: the image and the tokens of the
/// waiting steps after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedBoot {
    /// What to boot.
    pub image: BootImage,
    /// The token the installer (or wipe image) reports with.
    pub token: String,
    /// The token the newly installed OS reports its first boot with (reimages).
    pub first_boot_token: Option<String>,
}

/// An image a provisioner can serve, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// Its catalog name (`ubuntu-24.04`; the wipe image's name for wipes).
    pub name: String,
    /// `install` or `wipe`.
    pub kind: String,
    /// `uefi` or `legacy`.
    pub firmware: String,
    /// Whether it has a per-host configuration template.
    pub has_config_template: bool,
    /// The batch parameters its template needs.
    pub template_params: Vec<String>,
}

/// What a PXE-booting host is served, and where its "finished" callback goes.
///
/// # Contract
/// - `check` is the submit-time question: can `image` be served to each of `hosts` with
///   the batch's `params` (the image exists, the host has what booting needs, the image's
///   configuration renders)? It answers every problem, naming the host or the field; a
///   batch with problems is refused before anything is written.
/// - `prepare` makes the next network boot of `host` serve `boot.image`, and arranges that
///   the image reports its result with `boot.token` (through the API's install-result
///   callback or the boot service's HTTP callback). Calling it again for the same host
///   replaces the previous preparation.
/// - `clear` undoes `prepare` (after success, failure or cancel); clearing an unprepared
///   host is not an error. A provisioner that derives what it serves from the job chain
///   (maas-boot) has nothing to undo.
#[async_trait]
pub trait Provisioner: Send + Sync {
    /// The submit-time check (see the contract).
    fn check(&self, image: &BootImage, hosts: &[&Host], params: &BTreeMap<String, String>) -> Vec<Problem>;
    /// The images it serves.
    fn images(&self) -> Vec<ImageSummary>;
    /// Serve `boot.image` to `host` on its next network boot.
    async fn prepare(&self, host: &Host, boot: &PreparedBoot) -> Result<(), ProvisionError>;
    /// Stop serving anything special to `host`.
    async fn clear(&self, host: &Hostname) -> Result<(), ProvisionError>;
    /// Where `host`'s BMC fetches the ISO of `image` to boot it by virtual media
    /// ([`crate::host::BootMethod::VirtualMedia`]); the default has none.
    fn media_url(&self, host: &Host, image: &BootImage) -> Result<String, ProvisionError> {
        let _ = image;
        Err(ProvisionError {
            message: format!("{}: this provisioner serves no ISO for virtual media", host.hostname),
            retryable: false,
        })
    }
}

/// The cause a seam's failure carries along (a driver's or a library's error).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A notification delivery failure, by kind (the outbox retries every kind).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The receiver could not be reached or did not answer in time.
    #[error("notifier: {receiver} unreachable: {cause}")]
    Unreachable {
        /// Who was called (an endpoint, with no secret in it).
        receiver: String,
        /// Why.
        #[source]
        cause: Cause,
    },
    /// The receiver answered, refusing the delivery.
    #[error("notifier: {receiver} refused the delivery: {answer}")]
    Refused {
        /// Who was called.
        receiver: String,
        /// What it answered (an HTTP status, say).
        answer: String,
    },
    /// The events could not be prepared for delivery (encoding, reading what to send).
    #[error("notifier: preparing the delivery: {cause}")]
    Prepare {
        /// Why.
        #[source]
        cause: Cause,
    },
}

/// Delivers outbox events to people and systems (webhooks, streams, chat).
///
/// # Contract
/// - Delivery is at least once: an event may arrive twice (after a crash between delivery
///   and acknowledgement); receivers deduplicate by `seq`.
/// - Events arrive in `seq` order, so in order per batch.
/// - An `Err` means none of `events` counts as delivered; the whole slice is retried.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Delivers `events` (ascending `seq`).
    async fn deliver(&self, events: &[Event]) -> Result<(), NotifyError>;
}

/// Why a ticket is raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketKind {
    /// A batch exceeded its failure budget and paused.
    FailureBudget,
    /// A host exhausted its retries.
    WedgedHost,
    /// A host is slow against its batch peers.
    Straggler,
    /// An installer or wipe image reported failure, or never reported (its deadline passed),
    /// or the installed OS never reported its first boot.
    InstallFailed,
    /// Reclaim failed on a host its configured number of times in a row: it is left alone.
    ReclaimGivenUp,
}

/// A ticket for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Why.
    pub kind: TicketKind,
    /// The batch.
    pub batch_id: BatchId,
    /// The host, if about one host.
    pub host: Option<Hostname>,
    /// The step, if about one step.
    pub step: Option<StepKind>,
    /// One line for humans.
    pub summary: String,
    /// When.
    pub at: Timestamp,
}

/// A ticketing failure, by kind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TicketingError {
    /// The ticket system could not be reached.
    #[error("ticketing: unreachable: {cause}")]
    Unreachable {
        /// Why.
        #[source]
        cause: Cause,
    },
    /// The ticket system refused the request.
    #[error("ticketing: refused: {reason}")]
    Refused {
        /// What it said.
        reason: String,
    },
    /// Tickets kept in the engine's store: the store failed.
    #[error("ticketing: {0}")]
    Store(#[from] crate::ports::store::StoreError),
}

/// Raises tickets for humans.
///
/// # Contract
/// - `open` is idempotent per (kind, batch, host): raising the same ticket twice (at-least-
///   once delivery) leaves one ticket and returns its id.
/// - `list` returns tickets newest first.
#[async_trait]
pub trait Ticketing: Send + Sync {
    /// Opens (or finds) a ticket; returns its id.
    async fn open(&self, ticket: Ticket) -> Result<String, TicketingError>;
    /// Recent tickets.
    async fn list(&self, limit: usize) -> Result<Vec<(String, Ticket)>, TicketingError>;
}

/// BMC credentials. The password is redacted from `Debug` and zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    password: Vec<u8>,
}

impl Credentials {
    /// New credentials.
    pub fn new(username: impl Into<String>, password: impl Into<Vec<u8>>) -> Self {
        Credentials { username: username.into(), password: password.into() }
    }

    /// The password bytes (keep the borrow short).
    pub fn password(&self) -> &[u8] {
        &self.password
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        // Best effort without unsafe code: overwrite before the allocation is freed.
        for b in self.password.iter_mut() {
            *b = 0;
        }
        std::hint::black_box(&self.password);
    }
}

/// A secrets lookup failure. Names the reference, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no credentials for reference {reference:?}: {detail}")]
pub struct SecretsError {
    /// The reference asked for.
    pub reference: String,
    /// Why.
    pub detail: String,
}

/// Resolves credential references (from `BmcEndpoint::credentials_ref`) to credentials.
///
/// # Contract
/// - Never logs or returns a secret inside an error.
/// - Callers drop credentials right after use.
#[async_trait]
pub trait Secrets: Send + Sync {
    /// The credentials behind `reference`.
    async fn credentials(&self, reference: &str) -> Result<Credentials, SecretsError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials::new("admin", "hunter2");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(c.password(), b"hunter2");
    }
}
