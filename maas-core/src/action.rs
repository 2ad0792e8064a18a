//! Actions: what a batch does to each host, with its parameters.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::OsRelease;

/// How disks are wiped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WipeMethod {
    /// Discard/TRIM every device and clear partition tables (minutes).
    #[default]
    Quick,
    /// Overwrite or crypto-erase every device (hours).
    Secure,
}

impl WipeMethod {
    /// The snake_case name used on the wire (and in the wipe image's kernel arguments).
    pub fn as_str(self) -> &'static str {
        match self {
            WipeMethod::Quick => "quick",
            WipeMethod::Secure => "secure",
        }
    }
}

/// A destructive action on a host, with its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Install `os` from the network and return the host to its pool.
    Reimage {
        /// The release to install.
        os: OsRelease,
        /// How long the installer may take before the host run fails (seconds; default 2 h).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        install_timeout_secs: Option<u64>,
    },
    /// Restart the host: a power cycle, or an ACPI soft reset when `soft`.
    Reboot {
        /// Ask the OS to restart (ACPI) instead of cutting power.
        #[serde(default)]
        soft: bool,
    },
    /// Power the host on (nothing destructive if it is already on).
    PowerOn,
    /// Power the host off: hard, or an ACPI soft-off when `soft`.
    PowerOff {
        /// Ask the OS to shut down (ACPI) instead of cutting power.
        #[serde(default)]
        soft: bool,
    },
    /// Power cycle the host (powers it on if it was off).
    PowerCycle,
    /// Boot a wipe image and erase every disk, then power off.
    WipeDisks {
        /// How to wipe.
        #[serde(default)]
        method: WipeMethod,
    },
    /// Wipe, power off and mark the host decommissioned in the inventory.
    Decommission {
        /// How to wipe before decommissioning.
        #[serde(default)]
        method: WipeMethod,
    },
}

/// The kind of an [`Action`] without its parameters (for filters, stats and permissions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// [`Action::Reimage`].
    Reimage,
    /// [`Action::Reboot`].
    Reboot,
    /// [`Action::PowerOn`].
    PowerOn,
    /// [`Action::PowerOff`].
    PowerOff,
    /// [`Action::PowerCycle`].
    PowerCycle,
    /// [`Action::WipeDisks`].
    WipeDisks,
    /// [`Action::Decommission`].
    Decommission,
}

impl ActionKind {
    /// Every action kind.
    pub const ALL: [ActionKind; 7] = [
        ActionKind::Reimage,
        ActionKind::Reboot,
        ActionKind::PowerOn,
        ActionKind::PowerOff,
        ActionKind::PowerCycle,
        ActionKind::WipeDisks,
        ActionKind::Decommission,
    ];

    /// The snake_case name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Reimage => "reimage",
            ActionKind::Reboot => "reboot",
            ActionKind::PowerOn => "power_on",
            ActionKind::PowerOff => "power_off",
            ActionKind::PowerCycle => "power_cycle",
            ActionKind::WipeDisks => "wipe_disks",
            ActionKind::Decommission => "decommission",
        }
    }

    /// Parses [`ActionKind::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shortest accepted install timeout.
pub const MIN_INSTALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest accepted install timeout.
pub const MAX_INSTALL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Install timeout when none is given.
pub const DEFAULT_INSTALL_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

impl Action {
    /// The kind of this action.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Reimage { .. } => ActionKind::Reimage,
            Action::Reboot { .. } => ActionKind::Reboot,
            Action::PowerOn => ActionKind::PowerOn,
            Action::PowerOff { .. } => ActionKind::PowerOff,
            Action::PowerCycle => ActionKind::PowerCycle,
            Action::WipeDisks { .. } => ActionKind::WipeDisks,
            Action::Decommission { .. } => ActionKind::Decommission,
        }
    }

    /// Problems with this action's parameters (empty when valid). Names are already
    /// validated by their types; this checks ranges.
    pub fn parameter_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Action::Reimage { install_timeout_secs: Some(secs), .. } = self {
            let t = Duration::from_secs(*secs);
            if t < MIN_INSTALL_TIMEOUT || t > MAX_INSTALL_TIMEOUT {
                out.push(format!(
                    "install_timeout_secs is {secs}; it must be between {} and {}",
                    MIN_INSTALL_TIMEOUT.as_secs(),
                    MAX_INSTALL_TIMEOUT.as_secs()
                ));
            }
        }
        out
    }

    /// How long an install may take (reimage only).
    pub fn install_timeout(&self) -> Duration {
        match self {
            Action::Reimage { install_timeout_secs: Some(s), .. } => Duration::from_secs(*s),
            _ => DEFAULT_INSTALL_TIMEOUT,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Reimage { os, .. } => write!(f, "reimage to {os}"),
            Action::Reboot { soft: true } => write!(f, "soft reboot"),
            Action::Reboot { soft: false } => write!(f, "reboot"),
            Action::PowerOn => write!(f, "power on"),
            Action::PowerOff { soft: true } => write!(f, "soft power off"),
            Action::PowerOff { soft: false } => write!(f, "power off"),
            Action::PowerCycle => write!(f, "power cycle"),
            Action::WipeDisks { method } => write!(f, "wipe disks ({method:?})"),
            Action::Decommission { .. } => write!(f, "decommission"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_from_json_with_clear_errors() {
        let a: Action = serde_json::from_str(r#"{"kind":"reimage","os":"ubuntu-24.04"}"#).unwrap();
        assert_eq!(a.kind(), ActionKind::Reimage);
        assert_eq!(a.to_string(), "reimage to ubuntu-24.04");
        let r: Action = serde_json::from_str(r#"{"kind":"reboot"}"#).unwrap();
        assert_eq!(r, Action::Reboot { soft: false });
        let e = serde_json::from_str::<Action>(r#"{"kind":"reimage","os":"bad os"}"#).unwrap_err();
        assert!(e.to_string().contains("OS release \"bad os\" has ' '"), "{e}");
        let e = serde_json::from_str::<Action>(r#"{"kind":"explode"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant `explode`"), "{e}");
        let e = serde_json::from_str::<Action>(r#"{"kind":"reboot","sotf":true}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `sotf`"), "{e}");
    }

    #[test]
    fn install_timeout_is_range_checked() {
        let a = Action::Reimage { os: OsRelease::new("x").unwrap(), install_timeout_secs: Some(10) };
        assert_eq!(a.parameter_problems(), vec!["install_timeout_secs is 10; it must be between 30 and 86400"]);
        for k in ActionKind::ALL {
            assert_eq!(ActionKind::parse(k.as_str()), Some(k));
        }
    }
}
