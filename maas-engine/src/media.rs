//! Virtual media leaves the drive on every exit path. The steps that end an install or a
//! wipe (boot_disk, power_off, fence, release) eject as they run; a host run that ends
//! otherwise — its install failed or timed out, it was cancelled before its fence, a
//! step ran out of attempts — is seen here, as an outbox consumer: every `host_failed`
//! and `host_cancelled` event of a host that boots by virtual media ejects its drive.
//! The outbox delivers at least once, after crashes too, and retries a failed eject with
//! backoff; ejecting an empty drive is a no-op, so a repeat is harmless. A host that holds
//! a claim again by the time the event is delivered (resubmitted at once, or an old event
//! read by a new consumer's first pass) is left alone: its current run owns the drive and
//! ejects on its own exit paths.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use maas_core::model::Event;
use maas_core::names::Hostname;
use maas_core::netboot::{boot_by_media, media_to_eject, runs_ended_early};
use maas_core::ports::inventory::Inventory;
use maas_core::ports::power::PowerDriver;
use maas_core::ports::services::{Notifier, NotifyError};
use maas_core::ports::store::Store;

/// The outbox name of the ejector's delivery cursor.
pub const MEDIA_EJECTOR: &str = "maas-virtual-media-eject";

/// Ejects the virtual media of hosts whose run ended without the steps that eject.
pub struct MediaEjector {
    power: Arc<dyn PowerDriver>,
    inventory: Arc<dyn Inventory>,
    store: Arc<dyn Store>,
}

impl MediaEjector {
    /// Over the engine's driver, inventory and store (for the hosts' current claims).
    pub fn new(power: Arc<dyn PowerDriver>, inventory: Arc<dyn Inventory>, store: Arc<dyn Store>) -> Self {
        MediaEjector { power, inventory, store }
    }
}

#[async_trait]
impl Notifier for MediaEjector {
    async fn deliver(&self, events: &[Event]) -> Result<(), NotifyError> {
        let ended = runs_ended_early(events);
        if ended.is_empty() {
            return Ok(());
        }
        let prepare = |e: maas_core::ports::store::StoreError| NotifyError::Prepare { cause: Box::new(e) };
        let hosts = self.inventory.host_get_many(&ended).await.map_err(prepare)?;
        let media = boot_by_media(&hosts);
        if media.is_empty() {
            return Ok(());
        }
        let names: Vec<Hostname> = media.iter().map(|h| h.hostname.clone()).collect();
        let claimed: BTreeSet<Hostname> =
            self.store.claim_get_many(&names).await.map_err(prepare)?.into_iter().map(|c| c.hostname).collect();
        for host in media_to_eject(&media, &claimed) {
            match self.power.eject_media(&host.bmc).await {
                Ok(()) => tracing::info!(host = %host.hostname, "virtual media ejected after the host run ended"),
                // Tried again with the whole slice, after the outbox's backoff.
                Err(e) if e.is_retryable() => {
                    return Err(NotifyError::Unreachable {
                        receiver: format!("BMC of {}", host.hostname),
                        cause: Box::new(e),
                    });
                }
                // Credentials, certificate, no virtual media: retrying cannot help; said.
                Err(e) => tracing::error!(host = %host.hostname, error = %e, "virtual media could not be ejected"),
            }
        }
        Ok(())
    }
}
