//! Workflow plans: each action's ordered chain of steps, as data.
//!
//! A host run is a chain of jobs created at submit time, one per step of its plan; only
//! the chain head is runnable. The tables below are the whole definition of what each
//! action does — read them, extend them, test them. Power steps verify their outcome (poll
//! the BMC until it reports the target state) before they succeed; waiting steps park the
//! job until a callback or their deadline, without holding a worker.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::action::{Action, WipeMethod};
use crate::names::OsRelease;

/// One kind of step. Worker pools ("cluster types") are mapped to sets of step kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Check the host just before touching it: still in inventory, not decommissioned, not
    /// allocated (unless forced), BMC reachable. (Every later step that touches the host
    /// checks the inventory again: [`StepKind::touches_host`].)
    Preflight,
    /// Set the next boot to the network (PXE) and tell the provisioner what to serve.
    SetBootPxe,
    /// Power on, verified.
    PowerOn,
    /// Hard power off, verified.
    PowerOff,
    /// ACPI soft off, verified (falls back to failing the step, never to a hard off).
    SoftOff,
    /// Power cycle, verified on (a host that was off is powered on).
    PowerCycle,
    /// ACPI soft reset (warm reboot), verified on.
    SoftReset,
    /// Park until the installer reports success or the deadline passes.
    AwaitInstall,
    /// Park until the wipe image reports success or the deadline passes.
    AwaitWipe,
    /// Check the host is powered on and booting from disk again.
    Verify,
    /// Set the next boot to the local disk and power cycle, verified on (a host that was
    /// off, as installers leave it, is powered on).
    BootDisk,
    /// Park until the newly installed OS reports it is up (its first-boot callback) or the
    /// deadline passes.
    AwaitFirstBoot,
    /// Return the host to its pool (inventory state ready).
    Release,
    /// Mark the host decommissioned in the inventory.
    MarkDecommissioned,
    /// Hard power off, verified: what a cancelled install or wipe becomes, so that the host's
    /// claim is released only once its installer can no longer write its disks.
    Fence,
}

impl StepKind {
    /// Every step kind.
    pub const ALL: [StepKind; 15] = [
        StepKind::Preflight,
        StepKind::SetBootPxe,
        StepKind::PowerOn,
        StepKind::PowerOff,
        StepKind::SoftOff,
        StepKind::PowerCycle,
        StepKind::SoftReset,
        StepKind::AwaitInstall,
        StepKind::AwaitWipe,
        StepKind::Verify,
        StepKind::BootDisk,
        StepKind::AwaitFirstBoot,
        StepKind::Release,
        StepKind::MarkDecommissioned,
        StepKind::Fence,
    ];

    /// The snake_case name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Preflight => "preflight",
            StepKind::SetBootPxe => "set_boot_pxe",
            StepKind::PowerOn => "power_on",
            StepKind::PowerOff => "power_off",
            StepKind::SoftOff => "soft_off",
            StepKind::PowerCycle => "power_cycle",
            StepKind::SoftReset => "soft_reset",
            StepKind::AwaitInstall => "await_install",
            StepKind::AwaitWipe => "await_wipe",
            StepKind::Verify => "verify",
            StepKind::BootDisk => "boot_disk",
            StepKind::AwaitFirstBoot => "await_first_boot",
            StepKind::Release => "release",
            StepKind::MarkDecommissioned => "mark_decommissioned",
            StepKind::Fence => "fence",
        }
    }

    /// Parses [`StepKind::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether a cancel must fence the host (power it off, verified) before releasing it:
    /// the steps during which an installer or wipe image may be writing its disks.
    pub fn fences_on_cancel(self) -> bool {
        matches!(self, StepKind::AwaitInstall | StepKind::AwaitWipe)
    }

    /// Whether the step parks the job awaiting a callback instead of running to the end.
    pub fn is_wait(self) -> bool {
        matches!(self, StepKind::AwaitInstall | StepKind::AwaitWipe | StepKind::AwaitFirstBoot)
    }

    /// Whether the step changes the host (power, boot device, inventory state) or gates
    /// a chain that will: such steps re-check the inventory when they run
    /// ([`crate::host::Host::refuses_step`]). Waits, verification, release and fencing a
    /// cancelled install do not.
    pub fn touches_host(self) -> bool {
        !matches!(
            self,
            StepKind::AwaitInstall
                | StepKind::AwaitWipe
                | StepKind::AwaitFirstBoot
                | StepKind::Verify
                | StepKind::Release
                | StepKind::Fence
        )
    }

    /// How many times the step may be attempted before the host run fails.
    pub fn default_max_attempts(self) -> u32 {
        match self {
            // A failed install is not retried blindly: it needs a human (a ticket).
            StepKind::AwaitInstall | StepKind::AwaitWipe | StepKind::AwaitFirstBoot => 1,
            StepKind::Preflight => 3,
            _ => 5,
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a PXE boot serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "image", rename_all = "snake_case")]
pub enum BootImage {
    /// An installer for this release.
    Install {
        /// The release.
        os: OsRelease,
    },
    /// The disk-wipe image.
    Wipe {
        /// How to wipe.
        method: WipeMethod,
    },
}

/// Parameters of one planned step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct StepParams {
    /// For [`StepKind::SetBootPxe`]: what to boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootImage>,
    /// For waiting steps: how long to wait for the callback (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// The batch was forced with a reason: the step may touch a host that is in use
    /// ([`crate::host::Host::refuses_step`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

impl StepParams {
    /// The wait deadline of a waiting step.
    pub fn wait(&self) -> Option<Duration> {
        self.wait_ms.map(Duration::from_millis)
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlannedStep {
    /// The step.
    pub kind: StepKind,
    /// Its parameters.
    pub params: StepParams,
    /// How many attempts it gets.
    pub max_attempts: u32,
}

/// How long a wipe may take.
pub fn wipe_timeout(method: WipeMethod) -> Duration {
    match method {
        WipeMethod::Quick => Duration::from_secs(3600),
        WipeMethod::Secure => Duration::from_secs(24 * 3600),
    }
}

use StepKind::*;

/// The step chains, one per action variant. The single source of what each action does.
/// A reimage is done when the new OS reports from its own disk, not when the installer
/// says it wrote it.
const REIMAGE: &[StepKind] = &[Preflight, SetBootPxe, PowerCycle, AwaitInstall, BootDisk, AwaitFirstBoot, Release];
const REBOOT_HARD: &[StepKind] = &[Preflight, PowerCycle, Verify];
const REBOOT_SOFT: &[StepKind] = &[Preflight, SoftReset, Verify];
const POWER_ON: &[StepKind] = &[Preflight, PowerOn];
const POWER_OFF_HARD: &[StepKind] = &[Preflight, PowerOff];
const POWER_OFF_SOFT: &[StepKind] = &[Preflight, SoftOff];
const POWER_CYCLE: &[StepKind] = &[Preflight, PowerCycle];
const WIPE: &[StepKind] = &[Preflight, SetBootPxe, PowerCycle, AwaitWipe, PowerOff];
const DECOMMISSION: &[StepKind] = &[Preflight, SetBootPxe, PowerCycle, AwaitWipe, PowerOff, MarkDecommissioned];

/// The chain of steps `action` runs on each host.
pub fn plan_for(action: &Action) -> Vec<PlannedStep> {
    let (kinds, boot, wait) = match action {
        Action::Reimage { os, .. } => {
            (REIMAGE, Some(BootImage::Install { os: os.clone() }), Some(action.install_timeout()))
        }
        Action::Reboot { soft: false } => (REBOOT_HARD, None, None),
        Action::Reboot { soft: true } => (REBOOT_SOFT, None, None),
        Action::PowerOn => (POWER_ON, None, None),
        Action::PowerOff { soft: false } => (POWER_OFF_HARD, None, None),
        Action::PowerOff { soft: true } => (POWER_OFF_SOFT, None, None),
        Action::PowerCycle => (POWER_CYCLE, None, None),
        Action::WipeDisks { method } | Action::Decommission { method } => {
            let kinds = if matches!(action, Action::WipeDisks { .. }) { WIPE } else { DECOMMISSION };
            (kinds, Some(BootImage::Wipe { method: *method }), Some(wipe_timeout(*method)))
        }
    };
    kinds
        .iter()
        .map(|&kind| PlannedStep {
            kind,
            params: StepParams {
                boot: if kind == SetBootPxe { boot.clone() } else { None },
                wait_ms: if kind.is_wait() { wait.map(|d| d.as_millis() as u64) } else { None },
                forced: false,
            },
            max_attempts: kind.default_max_attempts(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(a: &Action) -> Vec<&'static str> {
        plan_for(a).iter().map(|s| s.kind.as_str()).collect()
    }

    #[test]
    fn plans_read_like_the_design() {
        let os = OsRelease::new("ubuntu-24.04").unwrap();
        let reimage = Action::Reimage { os: os.clone(), install_timeout_secs: None };
        assert_eq!(
            kinds(&reimage),
            ["preflight", "set_boot_pxe", "power_cycle", "await_install", "boot_disk", "await_first_boot", "release"]
        );
        assert_eq!(kinds(&Action::Reboot { soft: false }), ["preflight", "power_cycle", "verify"]);
        assert_eq!(kinds(&Action::Reboot { soft: true }), ["preflight", "soft_reset", "verify"]);
        assert_eq!(
            kinds(&Action::WipeDisks { method: WipeMethod::Quick }),
            ["preflight", "set_boot_pxe", "power_cycle", "await_wipe", "power_off"]
        );
        assert_eq!(
            kinds(&Action::Decommission { method: WipeMethod::Secure }),
            ["preflight", "set_boot_pxe", "power_cycle", "await_wipe", "power_off", "mark_decommissioned"]
        );
        let plan = plan_for(&reimage);
        assert_eq!(plan[1].params.boot, Some(BootImage::Install { os }));
        assert_eq!(plan[3].params.wait(), Some(Duration::from_secs(7200)));
        assert_eq!(plan[3].max_attempts, 1);
        assert!(plan.iter().filter(|s| !s.kind.is_wait()).all(|s| s.params.wait_ms.is_none()));
    }

    #[test]
    fn every_plan_starts_with_preflight_and_names_round_trip() {
        for k in StepKind::ALL {
            assert_eq!(StepKind::parse(k.as_str()), Some(k));
        }
        for a in [Action::PowerOn, Action::PowerCycle, Action::PowerOff { soft: true }] {
            assert_eq!(plan_for(&a)[0].kind, StepKind::Preflight);
        }
    }
}
