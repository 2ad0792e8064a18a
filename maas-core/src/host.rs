//! Hosts as the inventory knows them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{Group, Hostname, Pool, Rack, Site, Sku};
use crate::plan::StepKind;
use crate::time::Timestamp;

/// Where a host is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// In its pool, free to use and to act on.
    #[default]
    Ready,
    /// Allocated to / in use by a service: destructive actions need a forced submission.
    Allocated,
    /// Broken; the reclaim workflow reimages defunct, unallocated hosts.
    Defunct,
    /// Gone for good: nothing may be submitted on it.
    Decommissioned,
}

impl HostState {
    /// Every state.
    pub const ALL: [HostState; 4] =
        [HostState::Ready, HostState::Allocated, HostState::Defunct, HostState::Decommissioned];

    /// The snake_case name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Ready => "ready",
            HostState::Allocated => "allocated",
            HostState::Defunct => "defunct",
            HostState::Decommissioned => "decommissioned",
        }
    }

    /// Parses [`HostState::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to reach a host's BMC. Holds a reference to credentials, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BmcEndpoint {
    /// IP address or DNS name of the BMC.
    pub address: String,
    /// UDP port for IPMI (623), TCP port for Redfish's HTTPS (443).
    pub port: u16,
    /// The key under which the `Secrets` seam finds the credentials.
    pub credentials_ref: String,
    /// The protocol it speaks.
    #[serde(default, skip_serializing_if = "BmcProtocol::is_ipmi")]
    pub protocol: BmcProtocol,
    /// Redfish: the `ComputerSystem` id of this host, when the BMC manages several (a
    /// chassis manager, a multi-node enclosure). `None`: the BMC's only system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    /// Redfish: how the BMC's TLS certificate is checked.
    #[serde(default, skip_serializing_if = "BmcTls::is_verify")]
    pub tls: BmcTls,
}

impl BmcEndpoint {
    /// An IPMI BMC (no Redfish settings).
    pub fn ipmi(address: impl Into<String>, port: u16, credentials_ref: impl Into<String>) -> Self {
        BmcEndpoint {
            address: address.into(),
            port,
            credentials_ref: credentials_ref.into(),
            protocol: BmcProtocol::Ipmi,
            system_id: None,
            tls: BmcTls::Verify,
        }
    }

    /// A Redfish BMC, its certificate checked against the driver's default CA bundle.
    pub fn redfish(address: impl Into<String>, port: u16, credentials_ref: impl Into<String>) -> Self {
        BmcEndpoint { protocol: BmcProtocol::Redfish, ..BmcEndpoint::ipmi(address, port, credentials_ref) }
    }

    /// `address:port`, how errors and logs name the BMC.
    pub fn key(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    /// What is wrong with the combination of settings, if anything: Redfish settings on
    /// an IPMI BMC, or a system id that cannot be a path segment.
    pub fn problem(&self) -> Option<String> {
        if self.address.trim().is_empty() {
            return Some("the BMC address is empty".into());
        }
        if self.port == 0 {
            return Some("BMC port 0".into());
        }
        match self.protocol {
            BmcProtocol::Ipmi if self.system_id.is_some() => {
                Some("a Redfish system id is set on an IPMI BMC (set protocol redfish, or drop the id)".into())
            }
            BmcProtocol::Ipmi if !self.tls.is_verify() => Some(format!(
                "TLS setting {:?} on an IPMI BMC: IPMI has no TLS (set protocol redfish)",
                self.tls.spec()
            )),
            BmcProtocol::Redfish => match &self.system_id {
                Some(id)
                    if id.is_empty()
                        || id.len() > 128
                        || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) =>
                {
                    Some(format!(
                        "Redfish system id {:?}: expected 1 to 128 letters, digits, '-', '_', '.' or ':'",
                        id.chars().take(64).collect::<String>()
                    ))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// The protocol a BMC speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BmcProtocol {
    /// IPMI v2.0 over LAN (RMCP+), UDP.
    #[default]
    Ipmi,
    /// DMTF Redfish over HTTPS.
    Redfish,
}

impl BmcProtocol {
    /// Every protocol.
    pub const ALL: [BmcProtocol; 2] = [BmcProtocol::Ipmi, BmcProtocol::Redfish];

    /// `ipmi` or `redfish`.
    pub fn as_str(self) -> &'static str {
        match self {
            BmcProtocol::Ipmi => "ipmi",
            BmcProtocol::Redfish => "redfish",
        }
    }

    /// Parses [`BmcProtocol::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The port a BMC of this protocol listens on unless told otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            BmcProtocol::Ipmi => 623,
            BmcProtocol::Redfish => 443,
        }
    }

    fn is_ipmi(&self) -> bool {
        *self == BmcProtocol::Ipmi
    }
}

impl fmt::Display for BmcProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a Redfish BMC's TLS certificate is checked. Written in the inventory as a short
/// spec: empty (verify), `ca:NAME`, `sha256:HEX` or `insecure`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(into = "String", try_from = "String")]
pub enum BmcTls {
    /// Chains to the driver's default CA bundle (a site's BMC CA, or the system's roots)
    /// and names the BMC's address.
    #[default]
    Verify,
    /// Chains to the CA bundle the driver's configuration names `NAME` (per site, per
    /// vendor, per BMC) and names the BMC's address.
    Bundle(String),
    /// The leaf certificate's SHA-256 fingerprint is this one (a self-signed BMC
    /// certificate, pinned; the name is not checked).
    Pinned([u8; 32]),
    /// Not checked at all: an explicit per-host opt-in, logged on every connection.
    Insecure,
}

/// Why a TLS spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("BMC TLS setting {spec:?}: {reason}")]
pub struct BmcTlsError {
    /// The spec as given (cut to 80 characters).
    pub spec: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl BmcTls {
    /// Parses a spec: `""`/`verify`, `ca:NAME`, `sha256:HEX` (64 hexadecimal digits,
    /// colons allowed between pairs) or `insecure`.
    pub fn parse(spec: &str) -> Result<Self, BmcTlsError> {
        let err = |reason| BmcTlsError { spec: spec.chars().take(80).collect(), reason };
        let spec = spec.trim();
        if spec.is_empty() || spec == "verify" {
            return Ok(BmcTls::Verify);
        }
        if spec == "insecure" {
            return Ok(BmcTls::Insecure);
        }
        if let Some(name) = spec.strip_prefix("ca:") {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(err("a CA bundle name is letters, digits, '-', '_' or '.'"));
            }
            return Ok(BmcTls::Bundle(name.to_string()));
        }
        if let Some(hex) = spec.strip_prefix("sha256:") {
            let digits: String = hex.chars().filter(|c| *c != ':').collect();
            if digits.len() != 64 {
                return Err(err("a SHA-256 fingerprint is 64 hexadecimal digits"));
            }
            let mut pin = [0u8; 32];
            for (i, b) in pin.iter_mut().enumerate() {
                let pair = digits.get(2 * i..2 * i + 2).ok_or_else(|| err("not ASCII"))?;
                *b = u8::from_str_radix(pair, 16).map_err(|_| err("not a hexadecimal digit"))?;
            }
            return Ok(BmcTls::Pinned(pin));
        }
        Err(err("expected verify, ca:NAME, sha256:FINGERPRINT or insecure"))
    }

    /// The spec [`BmcTls::parse`] reads back (empty for [`BmcTls::Verify`]).
    pub fn spec(&self) -> String {
        match self {
            BmcTls::Verify => String::new(),
            BmcTls::Bundle(name) => format!("ca:{name}"),
            BmcTls::Pinned(pin) => format!("sha256:{}", pin.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            BmcTls::Insecure => "insecure".into(),
        }
    }

    /// Whether this is the default, [`BmcTls::Verify`].
    pub fn is_verify(&self) -> bool {
        *self == BmcTls::Verify
    }
}

impl From<BmcTls> for String {
    fn from(t: BmcTls) -> String {
        t.spec()
    }
}

impl TryFrom<String> for BmcTls {
    type Error = BmcTlsError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        BmcTls::parse(&s)
    }
}

/// How a host boots an installer or wipe image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BootMethod {
    /// From the network (PXE/iPXE, served by maas-boot).
    #[default]
    Network,
    /// From an ISO the BMC mounts as a virtual CD (Redfish `VirtualMedia`), for sites
    /// without a network-boot path.
    VirtualMedia,
}

impl BootMethod {
    /// `network` or `virtual_media`.
    pub fn as_str(self) -> &'static str {
        match self {
            BootMethod::Network => "network",
            BootMethod::VirtualMedia => "virtual_media",
        }
    }

    /// Parses [`BootMethod::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        [BootMethod::Network, BootMethod::VirtualMedia].into_iter().find(|m| m.as_str() == s)
    }

    fn is_network(&self) -> bool {
        *self == BootMethod::Network
    }

    /// The one-time boot device that starts an installer or wipe image this way.
    pub fn boot_device(self) -> crate::ports::power::BootDevice {
        match self {
            BootMethod::Network => crate::ports::power::BootDevice::Pxe,
            BootMethod::VirtualMedia => crate::ports::power::BootDevice::Cd,
        }
    }
}

impl fmt::Display for BootMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Host {
    /// Its name (unique).
    pub hostname: Hostname,
    /// Its data center.
    pub site: Site,
    /// Its rack, if known.
    pub rack: Option<Rack>,
    /// Its pool.
    pub pool: Pool,
    /// The group that owns it, if any.
    pub owner_group: Option<Group>,
    /// Its hardware SKU.
    pub sku: Sku,
    /// Its BMC.
    pub bmc: BmcEndpoint,
    /// Its lifecycle state.
    pub state: HostState,
    /// The MAC address it network-boots from (the boot service knows hosts by it); unique
    /// in the inventory. Hosts without one cannot be reimaged or wiped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Who holds it while [`HostState::Allocated`] (a service, a team, a ticket): what a
    /// refusal names. `None` in every other state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_to: Option<String>,
    /// When its state last changed through [`crate::ports::inventory::Inventory::host_set_state`]
    /// (or the import that set it), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_since: Option<Timestamp>,
    /// How it boots installer and wipe images.
    #[serde(default, skip_serializing_if = "BootMethod::is_network")]
    pub boot_method: BootMethod,
}

/// A change of one host's lifecycle state, as [`crate::ports::inventory::Inventory::host_set_state`]
/// applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// The new state.
    pub state: HostState,
    /// Who holds the host, for [`HostState::Allocated`] (ignored, and cleared, for the
    /// other states).
    pub allocated_to: Option<String>,
    /// When.
    pub at: Timestamp,
}

impl StateChange {
    /// A change to `state` at `at`, held by nobody.
    pub fn to(state: HostState, at: Timestamp) -> Self {
        StateChange { state, allocated_to: None, at }
    }

    /// Applies the change to `host` (what every inventory stores).
    pub fn apply(&self, host: &mut Host) {
        host.state = self.state;
        host.allocated_to = if self.state == HostState::Allocated { self.allocated_to.clone() } else { None };
        host.state_since = Some(self.at);
    }
}

impl Host {
    /// What is wrong with the record, naming the host: a bad BMC combination
    /// ([`BmcEndpoint::problem`]), or virtual media on a BMC that is not Redfish. Imports
    /// refuse such records before anything is written.
    pub fn problem(&self) -> Option<String> {
        if let Some(p) = self.bmc.problem() {
            return Some(format!("{}: {p}", self.hostname));
        }
        if self.boot_method == BootMethod::VirtualMedia && self.bmc.protocol != BmcProtocol::Redfish {
            return Some(format!(
                "{}: boot method virtual_media needs a Redfish BMC (its BMC speaks {})",
                self.hostname, self.bmc.protocol
            ));
        }
        None
    }

    /// Why a worker must not run a step of `kind` on this host now, if it must not: the
    /// host was decommissioned, or became in use (allocated), after its batch was accepted.
    /// A batch forced with a reason (`forced`) may touch allocated hosts. Steps that do
    /// not touch the host (waits, verification, release, fencing a cancelled install) are
    /// never stopped: a fence must always run.
    pub fn refuses_step(&self, kind: StepKind, forced: bool) -> Option<String> {
        if !kind.touches_host() {
            return None;
        }
        match self.state {
            HostState::Decommissioned => Some(format!("{} was decommissioned after submission", self.hostname)),
            HostState::Allocated if !forced => {
                let to = self.allocated_to.as_deref().map(|t| format!(" to {t}")).unwrap_or_default();
                let since = self.state_since.map(|t| format!(" since {t}")).unwrap_or_default();
                Some(format!(
                    "{} is allocated{to}{since}: it became in use after the batch was accepted, and the batch \
                     was not forced; the host was not touched",
                    self.hostname
                ))
            }
            _ => None,
        }
    }
}

/// A 48-bit Ethernet MAC address. Parses `52:54:00:ab:cd:ef`, `52-54-00-AB-CD-EF` and
/// `5254.00ab.cdef`; displays lower-case with colons (how iPXE's `${mac}` renders it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr([u8; 6]);

/// Why a MAC address was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MAC address {input:?}: {reason}")]
pub struct MacError {
    /// The text as given.
    pub input: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl MacAddr {
    /// The six octets.
    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// From six octets.
    pub fn from_octets(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }

    /// Parses the notations above.
    pub fn parse(input: &str) -> Result<Self, MacError> {
        let err = |reason| MacError { input: input.chars().take(64).collect(), reason };
        let hex: String = input.trim().chars().filter(|c| !matches!(c, ':' | '-' | '.')).collect();
        if hex.len() != 12 {
            return Err(err("expected 12 hexadecimal digits (e.g. 52:54:00:ab:cd:ef)"));
        }
        let mut octets = [0u8; 6];
        for (i, o) in octets.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or_else(|| err("not ASCII"))?;
            *o = u8::from_str_radix(pair, 16).map_err(|_| err("not a hexadecimal digit"))?;
        }
        if octets[0] & 1 == 1 {
            return Err(err("a multicast address cannot be a host's NIC"));
        }
        Ok(MacAddr(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl std::str::FromStr for MacAddr {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MacAddr::parse(s)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MacAddr::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The MACs claimed by more than one of `hosts`, each with the hosts claiming it (sorted),
/// for refusing an import that would make a network boot ambiguous. `existing` is what the
/// inventory holds for MACs the import names; a host in both counts once (the import
/// replaces it).
pub fn duplicate_macs<'a>(
    hosts: impl IntoIterator<Item = &'a Host>,
    existing: impl IntoIterator<Item = &'a Host>,
) -> Vec<(MacAddr, Vec<Hostname>)> {
    use std::collections::BTreeMap;
    let mut incoming: BTreeMap<&Hostname, Option<MacAddr>> = BTreeMap::new();
    for h in hosts {
        incoming.insert(&h.hostname, h.mac);
    }
    let mut by_mac: BTreeMap<MacAddr, std::collections::BTreeSet<Hostname>> = BTreeMap::new();
    for h in existing {
        if let (Some(mac), false) = (h.mac, incoming.contains_key(&h.hostname)) {
            by_mac.entry(mac).or_default().insert(h.hostname.clone());
        }
    }
    for (name, mac) in &incoming {
        if let Some(mac) = mac {
            by_mac.entry(*mac).or_default().insert((*name).clone());
        }
    }
    by_mac.into_iter().filter(|(_, names)| names.len() > 1).map(|(m, names)| (m, names.into_iter().collect())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, mac: Option<&str>) -> Host {
        Host {
            hostname: Hostname::new(name).unwrap(),
            site: Site::new("dc1").unwrap(),
            rack: None,
            pool: Pool::new("default").unwrap(),
            owner_group: None,
            sku: Sku::new("sku").unwrap(),
            bmc: BmcEndpoint::ipmi("10.0.0.1", 623, "c"),
            state: HostState::Ready,
            mac: mac.map(|m| MacAddr::parse(m).unwrap()),
            allocated_to: None,
            state_since: None,
            boot_method: BootMethod::Network,
        }
    }

    #[test]
    fn a_host_allocated_after_acceptance_refuses_the_steps_that_touch_it_unless_forced() {
        let mut h = host("web6.dc1", None);
        let at = Timestamp::parse_rfc3339("2026-12-04T08:00:00Z").unwrap();
        assert_eq!(h.refuses_step(StepKind::PowerCycle, false), None);
        StateChange { state: HostState::Allocated, allocated_to: Some("payments".into()), at }.apply(&mut h);
        let why = h.refuses_step(StepKind::PowerCycle, false).unwrap();
        assert!(why.contains("web6.dc1 is allocated to payments since 2026-12-04T08:00:00"), "{why}");
        for kind in [StepKind::Preflight, StepKind::SetBootPxe, StepKind::PowerOff, StepKind::BootDisk] {
            assert!(h.refuses_step(kind, false).is_some(), "{kind}");
            assert_eq!(h.refuses_step(kind, true), None, "forced: {kind}");
        }
        for kind in [StepKind::Fence, StepKind::Verify, StepKind::Release, StepKind::AwaitInstall] {
            assert_eq!(h.refuses_step(kind, false), None, "{kind} does not touch the host");
        }
        // Back to ready: the holder is cleared, the steps run again.
        StateChange::to(HostState::Ready, at).apply(&mut h);
        assert_eq!((h.allocated_to.as_deref(), h.refuses_step(StepKind::PowerCycle, false)), (None, None));
        // Decommissioned stops every touching step, forced or not.
        StateChange::to(HostState::Decommissioned, at).apply(&mut h);
        assert!(h.refuses_step(StepKind::Preflight, true).unwrap().contains("decommissioned after submission"));
    }

    #[test]
    fn mac_notations_parse_to_one_value_and_bad_ones_say_why() {
        let m = MacAddr::parse("52:54:00:AB:cd:ef").unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:ef");
        assert_eq!(MacAddr::parse("52-54-00-ab-cd-ef").unwrap(), m);
        assert_eq!(MacAddr::parse("5254.00ab.cdef").unwrap(), m);
        for (bad, why) in [
            ("52:54:00:ab:cd", "12 hexadecimal"),
            ("52:54:00:ab:cd:eg", "hexadecimal digit"),
            ("01:00:5e:00:00:01", "multicast"),
            ("52:54:00:ab:cd:é1", "12 hexadecimal"),
        ] {
            let e = MacAddr::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"52:54:00:ab:cd:ef\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), m);
    }

    #[test]
    fn a_mac_claimed_twice_names_both_hosts_whether_new_or_existing() {
        let a = host("a", Some("52:54:00:00:00:01"));
        let b = host("b", Some("52:54:00:00:00:01"));
        let c = host("c", Some("52:54:00:00:00:02"));
        let dup = duplicate_macs([&a, &b, &c], []);
        assert_eq!(dup.len(), 1);
        assert_eq!(dup[0].1.iter().map(|h| h.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        // Against the inventory: c's MAC already belongs to d.
        let d = host("d", Some("52:54:00:00:00:02"));
        let dup = duplicate_macs([&c], [&d]);
        assert_eq!(dup[0].1.iter().map(|h| h.as_str()).collect::<Vec<_>>(), ["c", "d"]);
        // Re-importing a host with its own MAC is no conflict, nor is moving a MAC from a
        // host the import also changes.
        assert!(duplicate_macs([&c], [&c]).is_empty());
        let d_moved = host("d", Some("52:54:00:00:00:03"));
        assert!(duplicate_macs([&c, &d_moved], [&d]).is_empty());
        assert!(duplicate_macs([&host("e", None), &host("f", None)], []).is_empty());
    }

    #[test]
    fn tls_specs_round_trip_and_bad_ones_say_why() {
        let pin = "sha256:".to_string() + &"ab".repeat(32);
        for spec in ["", "ca:dc1-bmc", &pin, "insecure"] {
            let tls = BmcTls::parse(spec).unwrap();
            assert_eq!(tls.spec(), spec);
            let json = serde_json::to_string(&tls).unwrap();
            assert_eq!(serde_json::from_str::<BmcTls>(&json).unwrap(), tls);
        }
        let colons = (0..32).map(|_| "AB").collect::<Vec<_>>().join(":");
        assert_eq!(BmcTls::parse(&format!("sha256:{colons}")).unwrap().spec(), pin);
        for (bad, why) in [
            ("sha256:abc", "64 hexadecimal"),
            ("ca:", "CA bundle name"),
            ("ca:../etc", "CA bundle name"),
            ("trust-me", "expected verify"),
        ] {
            let e = BmcTls::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_bmc_combinations_are_named() {
        let mut h = host("r1", None);
        assert_eq!(h.problem(), None);
        h.bmc.system_id = Some("1".into());
        assert!(h.problem().unwrap().starts_with("r1: a Redfish system id is set on an IPMI BMC"), "{:?}", h.problem());
        h.bmc.system_id = None;
        h.bmc.tls = BmcTls::Insecure;
        assert!(h.problem().unwrap().contains("IPMI has no TLS"));
        h.bmc.tls = BmcTls::Verify;
        h.boot_method = BootMethod::VirtualMedia;
        assert!(h.problem().unwrap().contains("virtual_media needs a Redfish BMC"));
        h.bmc.protocol = BmcProtocol::Redfish;
        assert_eq!(h.problem(), None);
        h.bmc.system_id = Some("../../Managers".into());
        assert!(h.problem().unwrap().contains("Redfish system id"));
        h.bmc.system_id = Some("System.Embedded.1".into());
        assert_eq!(h.problem(), None);
        // Older records (no protocol in their JSON) are IPMI.
        let old = r#"{"address":"10.0.0.1","port":623,"credentials_ref":"c"}"#;
        assert_eq!(serde_json::from_str::<BmcEndpoint>(old).unwrap(), BmcEndpoint::ipmi("10.0.0.1", 623, "c"));
    }
}
