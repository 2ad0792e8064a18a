//! What each step does on a host, through the drivers. One function per step kind; power
//! steps succeed only once the BMC reports the target state (polled, with a deadline).

use std::time::Duration;

use crate::Engine;
use maas_core::config::WorkerConfig;
use maas_core::host::{BootMethod, Host, HostState, StateChange};
use maas_core::machine::JobOutcome;
use maas_core::model::JobRecord;
use maas_core::plan::StepKind;
use maas_core::ports::power::{BootDevice, PowerError, PowerOp, PowerState};
use maas_core::ports::services::{PreparedBoot, ProvisionError};
use maas_core::ports::store::{JobListParams, StoreError};

/// Why a step failed, and whether another attempt may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// For people.
    pub error: String,
    /// Whether to retry.
    pub retryable: bool,
}

impl StepFailure {
    fn permanent(error: impl Into<String>) -> Self {
        StepFailure { error: error.into(), retryable: false }
    }
}

impl From<StepFailure> for JobOutcome {
    fn from(f: StepFailure) -> Self {
        JobOutcome::Failed { error: f.error, retryable: f.retryable }
    }
}

impl From<PowerError> for StepFailure {
    fn from(e: PowerError) -> Self {
        StepFailure { retryable: e.is_retryable(), error: e.to_string() }
    }
}

impl From<ProvisionError> for StepFailure {
    fn from(e: ProvisionError) -> Self {
        StepFailure { retryable: e.retryable, error: e.to_string() }
    }
}

impl From<StoreError> for StepFailure {
    fn from(e: StoreError) -> Self {
        StepFailure { error: e.to_string(), retryable: true }
    }
}

impl Engine {
    /// Runs one leased job's step and reports the outcome. Never panics on driver errors;
    /// classifies them for the retry policy.
    ///
    /// The job's host is looked up first, patiently ([`Self::read_patiently`]): a job
    /// claimed just before the database went away runs once, when it is back.
    pub async fn run_step(&self, job: &JobRecord, worker: &WorkerConfig) -> JobOutcome {
        let host =
            self.read_patiently(worker, || self.inner.inventory.host_get_many(std::slice::from_ref(&job.hostname)));
        match host.await {
            Ok(mut hosts) => self.run_step_on(job, hosts.pop(), worker).await,
            Err(e) => StepFailure::from(e).into(),
        }
    }

    /// Runs one leased job's step on `host` as the inventory had it when the job was
    /// claimed (workers look up every claimed job's host in one call); `None` means the
    /// host left the inventory. `worker` paces the step's own store reads.
    pub async fn run_step_on(&self, job: &JobRecord, host: Option<Host>, worker: &WorkerConfig) -> JobOutcome {
        let result = match host {
            Some(host) => self.step(job, host, worker).await,
            None => Err(StepFailure::permanent(format!("{} is no longer in the inventory", job.hostname))),
        };
        match result {
            Ok(()) => JobOutcome::Succeeded,
            Err(failure) => failure.into(),
        }
    }

    /// A store read a step needs. While the store is away (a backend error) it is tried
    /// again on `worker`'s backoff ([`WorkerConfig::step_read_wait`]), for up to half a
    /// lease, instead of failing the step and spending its attempt on an outage; past that,
    /// or on any other error, the error is returned.
    async fn read_patiently<T, F>(&self, worker: &WorkerConfig, mut read: impl FnMut() -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let (mut failures, mut waited) = (0, Duration::ZERO);
        loop {
            match read().await {
                Err(e @ StoreError::Backend { .. }) => {
                    failures += 1;
                    let Some(wait) = worker.step_read_wait(failures, waited, self.inner.config.lease) else {
                        return Err(e);
                    };
                    self.inner.clock.sleep(wait).await;
                    waited += wait;
                }
                answered => return answered,
            }
        }
    }

    /// Every job of `job`'s chain (its host run's), read patiently.
    async fn chain_of(&self, job: &JobRecord, worker: &WorkerConfig) -> Result<Vec<JobRecord>, StoreError> {
        let params = || JobListParams { host_run_id: Some(job.host_run_id), ..Default::default() };
        self.read_patiently(worker, || self.inner.store.job_list(params())).await
    }

    async fn step(&self, job: &JobRecord, host: Host, worker: &WorkerConfig) -> Result<(), StepFailure> {
        let inner = &self.inner;
        let bmc = &host.bmc;
        let verify = inner.config.verify;
        if let Some(refusal) = host.refuses_step(job.kind, job.params.forced) {
            return Err(StepFailure::permanent(refusal));
        }
        match job.kind {
            StepKind::Preflight => {
                inner.power.probe(bmc).await?;
                Ok(())
            }
            StepKind::SetBootPxe => self.set_boot_pxe(job, &host, worker).await,
            StepKind::PowerOn => self.power_and_verify(&host, PowerOp::On, verify.deadline).await,
            StepKind::PowerOff | StepKind::Fence => {
                // A wipe's image, or a cancelled install's, leaves the drive.
                self.eject_media(&host).await?;
                self.power_and_verify(&host, PowerOp::Off, verify.deadline).await
            }
            StepKind::SoftOff => self.power_and_verify(&host, PowerOp::SoftOff, verify.soft_deadline).await,
            StepKind::PowerCycle => {
                if job.attempt > 1 {
                    self.rearm_network_boot(job, &host, worker).await?;
                }
                self.power_and_verify(&host, PowerOp::Cycle, verify.deadline).await
            }
            StepKind::SoftReset => self.power_and_verify(&host, PowerOp::Reset, verify.deadline).await,
            StepKind::Verify => self.await_power(&host, PowerState::On, verify.deadline).await,
            StepKind::BootDisk => {
                // The installer's ISO leaves the drive before the disk boots.
                self.eject_media(&host).await?;
                // One-time, so that a later network boot the firmware falls into on its own
                // is not steered; then a cycle (a host an installer powered off comes on).
                inner.power.set_boot_device(bmc, BootDevice::Disk, false).await?;
                self.power_and_verify(&host, PowerOp::Cycle, verify.deadline).await
            }
            StepKind::Release => {
                if let Some(p) = &inner.provisioner {
                    p.clear(&host.hostname).await?;
                }
                self.eject_media(&host).await?;
                inner.power.set_boot_device(bmc, BootDevice::Disk, false).await?;
                if host.state == HostState::Defunct {
                    // The reclaim workflow: a repaired host goes back to its pool.
                    inner
                        .inventory
                        .host_set_state(&host.hostname, StateChange::to(HostState::Ready, inner.clock.now()))
                        .await?;
                }
                Ok(())
            }
            StepKind::MarkDecommissioned => {
                if let Some(p) = &inner.provisioner {
                    p.clear(&host.hostname).await?;
                }
                inner
                    .inventory
                    .host_set_state(&host.hostname, StateChange::to(HostState::Decommissioned, inner.clock.now()))
                    .await?;
                Ok(())
            }
            StepKind::AwaitInstall | StepKind::AwaitWipe | StepKind::AwaitFirstBoot => {
                Err(StepFailure::permanent(format!("{} is completed by its callback, not by a worker", job.kind)))
            }
        }
    }

    async fn set_boot_pxe(&self, job: &JobRecord, host: &Host, worker: &WorkerConfig) -> Result<(), StepFailure> {
        let inner = &self.inner;
        let image = job.params.boot.as_ref().ok_or_else(|| StepFailure::permanent("set_boot_pxe without an image"))?;
        let provisioner = inner.provisioner.as_ref().ok_or_else(|| {
            StepFailure::permanent("no provisioner is configured: reimage and disk wipes need one to serve PXE images")
        })?;
        // The image reports back with the token of the chain's waiting step; a reimage's
        // new OS with the first-boot step's.
        let chain = self.chain_of(job, worker).await?;
        let mut waits = chain.iter().filter(|j| j.position > job.position && j.kind.is_wait());
        let token = waits
            .next()
            .and_then(|j| j.wait_token.clone())
            .ok_or_else(|| StepFailure::permanent("set_boot_pxe with no waiting step after it"))?;
        let first_boot_token = waits.find(|j| j.kind == StepKind::AwaitFirstBoot).and_then(|j| j.wait_token.clone());
        provisioner.prepare(host, &PreparedBoot { image: image.clone(), token, first_boot_token }).await?;
        if host.boot_method == BootMethod::VirtualMedia {
            // The BMC mounts the image's ISO (what it held before is ejected first); the
            // installer on it asks the boot service by MAC, as a network boot does.
            let url = provisioner.media_url(host, image)?;
            inner.power.insert_media(&host.bmc, &url).await?;
        }
        let device = host.boot_method.boot_device();
        inner.power.set_boot_device(&host.bmc, device, false).await?;
        match inner.power.boot_device(&host.bmc).await? {
            d if d == device => Ok(()),
            other => Err(StepFailure {
                error: format!("BMC accepted the {device:?} boot override but reports next boot {other:?}"),
                retryable: true,
            }),
        }
    }

    /// Ejects the virtual media of a host that boots by it (the installer's or wipe
    /// image's ISO); nothing for network-booted hosts.
    async fn eject_media(&self, host: &Host) -> Result<(), StepFailure> {
        if host.boot_method == BootMethod::VirtualMedia {
            self.inner.power.eject_media(&host.bmc).await?;
        }
        Ok(())
    }

    /// A retried cycle right after `set_boot_pxe` sets the one-time PXE flag again: when a
    /// first cycle happened but its answer was lost, the machine booted and used up the flag,
    /// and a second cycle without it would boot the old disk instead of the installer.
    async fn rearm_network_boot(&self, job: &JobRecord, host: &Host, worker: &WorkerConfig) -> Result<(), StepFailure> {
        let chain = self.chain_of(job, worker).await?;
        let after_pxe = chain.iter().any(|j| j.kind == StepKind::SetBootPxe && j.position + 1 == job.position);
        if after_pxe {
            self.inner.power.set_boot_device(&host.bmc, host.boot_method.boot_device(), false).await?;
        }
        Ok(())
    }

    async fn power_and_verify(&self, host: &Host, op: PowerOp, deadline: Duration) -> Result<(), StepFailure> {
        self.inner.power.power(&host.bmc, op).await?;
        self.await_power(host, op.target(), deadline).await
    }

    /// Polls the BMC until it reports `target`, at most `deadline` (and a bounded number of
    /// polls, so a simulation clock cannot spin forever).
    async fn await_power(&self, host: &Host, target: PowerState, deadline: Duration) -> Result<(), StepFailure> {
        let verify = self.inner.config.verify;
        let polls = verify.polls(deadline);
        let started = self.inner.clock.now();
        let mut last = None;
        for i in 0..polls {
            match self.inner.power.power_status(&host.bmc).await {
                Ok(state) if state == target => return Ok(()),
                Ok(state) => last = Some(format!("reports {state:?}")),
                Err(e) if e.is_retryable() => last = Some(e.to_string()),
                Err(e) => return Err(e.into()),
            }
            if i + 1 == polls || self.inner.clock.now().since(started) >= deadline {
                break;
            }
            self.inner.clock.sleep(verify.interval).await;
        }
        Err(StepFailure {
            error: format!(
                "BMC of {} did not report power {target:?} within {} s (last: {})",
                host.hostname,
                deadline.as_secs(),
                last.unwrap_or_default()
            ),
            retryable: true,
        })
    }
}
