//! Who is calling: the principal is the client certificate's identity (its subject CN, or
//! else its first SAN URI); its groups come from the policy file, by principal name and by
//! the certificate's OU. The same file grants groups actions on pools and sites.
//!
//! The policy file is JSON:
//! ```json
//! {"members": {"alice": ["web-sre"]},
//!  "ou_groups": {"sre": ["readers"]},
//!  "grants": [{"group": "web-sre", "actions": ["reboot"], "pools": ["web"], "force": false,
//!              "max_priority": "high"}]}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use maas_core::authz::{Grant, GroupPolicy, Principal};
use maas_core::names::{Group, Pool};
use serde::Deserialize;

/// The parsed policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Principal name -> groups.
    #[serde(default)]
    pub members: BTreeMap<String, Vec<Group>>,
    /// Certificate OU -> groups.
    #[serde(default)]
    pub ou_groups: BTreeMap<String, Vec<Group>>,
    /// What groups may do.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Pools whose batches and hosts only groups with a grant covering them read.
    #[serde(default)]
    pub restricted_pools: Vec<Pool>,
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Unreadable.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a valid policy.
    #[error("policy file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Where and what.
        source: serde_json::Error,
    },
}

/// Why a certificate names no principal.
#[derive(Debug, thiserror::Error)]
#[error("the client certificate names no identity: {0}")]
pub struct NoIdentity(pub String);

impl Policy {
    /// Reads a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: shown.clone(), source })?;
        serde_json::from_str(&text).map_err(|source| PolicyError::Parse { path: shown, source })
    }

    /// The authorizer half: the grants.
    pub fn authorizer(&self) -> GroupPolicy {
        GroupPolicy { grants: self.grants.clone(), restricted_pools: self.restricted_pools.clone() }
    }

    /// The principal called `name`, with organizational units `ous`.
    pub fn principal(&self, name: &str, ous: &[String]) -> Principal {
        let mut groups: Vec<Group> = self.members.get(name).cloned().unwrap_or_default();
        for ou in ous {
            groups.extend(self.ou_groups.get(ou).cloned().unwrap_or_default());
        }
        groups.sort();
        groups.dedup();
        Principal::new(name, groups)
    }

    /// The principal of a DER client certificate.
    pub fn principal_of_cert(&self, der: &[u8]) -> Result<Principal, NoIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| NoIdentity(e.to_string()))?;
        let subject = cert.subject();
        let cn = subject.iter_common_name().next().and_then(|a| a.as_str().ok()).map(str::to_string);
        let uri = cert.subject_alternative_name().ok().flatten().and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
        });
        let name = cn.or(uri).ok_or_else(|| NoIdentity("no subject CN and no SAN URI".into()))?;
        let ous: Vec<String> =
            subject.iter_organizational_unit().filter_map(|a| a.as_str().ok().map(str::to_string)).collect();
        Ok(self.principal(&name, &ous))
    }
}
