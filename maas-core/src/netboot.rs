//! Network boot as decisions: what a host that network-boots is offered, the iPXE script
//! that says it, the per-host configuration templates installers read, and the callback
//! token check. Pure: the boot service (maas-boot) loads the rows, calls these, and serves
//! the answer.
//!
//! What a host is offered follows from its job chain alone, so every exit path withdraws
//! the offer by itself: a host is offered its install (or wipe) image exactly while its
//! chain's `set_boot_pxe` step has succeeded and the waiting step after it has not ended.
//! Success, failure, timeout and cancel all end that waiting step; nothing has to be
//! "cleared", and a second maasd serving boots from the same database agrees.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::host::HostState;
use crate::id::{BatchId, HostRunId, JobId};
use crate::model::{JobRecord, JobState};
use crate::plan::{BootImage, StepKind};

/// How a machine's firmware boots, which decides the iPXE script's form and the IPMI boot
/// flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Firmware {
    /// Legacy BIOS.
    #[default]
    Legacy,
    /// UEFI.
    Uefi,
}

/// What a network-booting host is offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootOffer {
    /// Boot the installer (or wipe image) for the chain's pending step.
    Image(PendingBoot),
    /// Boot from the local disk, and why (logged by the boot service).
    LocalDisk {
        /// For the log and the script's comment.
        reason: String,
    },
}

/// A pending install or wipe: what to boot and the tokens that let it report back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBoot {
    /// The image the chain's `set_boot_pxe` step names.
    pub image: BootImage,
    /// The batch.
    pub batch_id: BatchId,
    /// The host run.
    pub host_run_id: HostRunId,
    /// The waiting step the installer's callback completes.
    pub wait_job: JobId,
    /// Its callback token.
    pub token: String,
    /// The token of the first-boot step after it (a reimage's new OS reports with it).
    pub first_boot_token: Option<String>,
}

/// Decides what a host in inventory state `state` is offered: a decommissioned host
/// nothing, ever; otherwise what [`decide_boot`] says of its chain.
pub fn decide_host_boot(state: HostState, chain: Option<&[JobRecord]>) -> BootOffer {
    if state == HostState::Decommissioned {
        return BootOffer::LocalDisk { reason: "decommissioned: nothing is served to it".into() };
    }
    decide_boot(chain)
}

/// Decides what a host whose current host run has `chain` (its jobs, any order) is
/// offered. `None` means the host has no active host run.
pub fn decide_boot(chain: Option<&[JobRecord]>) -> BootOffer {
    let Some(chain) = chain else {
        return BootOffer::LocalDisk { reason: "no active batch holds it".into() };
    };
    let mut jobs: Vec<&JobRecord> = chain.iter().collect();
    jobs.sort_by_key(|j| j.position);
    let Some(pxe) = jobs.iter().rev().find(|j| j.kind == StepKind::SetBootPxe && j.state == JobState::Succeeded) else {
        return BootOffer::LocalDisk { reason: "its chain has no network boot prepared".into() };
    };
    let mut waits = jobs.iter().filter(|j| j.position > pxe.position && j.kind.is_wait());
    let Some(wait) = waits.next() else {
        return BootOffer::LocalDisk { reason: "its chain has no waiting step after set_boot_pxe".into() };
    };
    if !matches!(wait.state, JobState::Blocked | JobState::Waiting) {
        return BootOffer::LocalDisk { reason: format!("its {} step has ended ({})", wait.kind, wait.state) };
    }
    let (Some(image), Some(token)) = (pxe.params.boot.clone(), wait.wait_token.clone()) else {
        return BootOffer::LocalDisk { reason: "its set_boot_pxe step names no image".into() };
    };
    let first_boot_token =
        waits.find(|j| j.kind == StepKind::AwaitFirstBoot && !j.state.is_terminal()).and_then(|j| j.wait_token.clone());
    BootOffer::Image(PendingBoot {
        image,
        batch_id: wait.batch_id,
        host_run_id: wait.host_run_id,
        wait_job: wait.id,
        token,
        first_boot_token,
    })
}

/// The waiting job of `chain` that `token` belongs to, if it is still open (not ended):
/// what the boot service checks before serving a host's configuration. Tokens are compared
/// in constant time.
pub fn open_wait_for_token<'a>(chain: &'a [JobRecord], token: &str) -> Option<&'a JobRecord> {
    chain.iter().find(|j| {
        j.kind.is_wait()
            && !j.state.is_terminal()
            && j.wait_token.as_deref().is_some_and(|t| tokens_equal(t.as_bytes(), token.as_bytes()))
    })
}

/// Compares two secrets in time that depends on their lengths only.
pub fn tokens_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The URLs an installer is given, all under the boot service's public base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootUrls {
    /// The boot service's base URL as hosts reach it (`http://10.0.0.5:8080`).
    pub base: String,
}

impl BootUrls {
    /// Where a host's firmware chains to (`${mac}` is filled in by iPXE).
    pub fn boot_script(&self) -> String {
        format!("{}/boot/${{mac}}", self.base)
    }
    /// An artifact of an image (`kernel`, `initrd`, `root`).
    pub fn artifact(&self, image: &str, artifact: &str) -> String {
        format!("{}/images/{image}/{artifact}", self.base)
    }
    /// The per-host configuration of a host run's open waiting step.
    pub fn config(&self, host_run: &str, token: &str) -> String {
        format!("{}/config/{host_run}/{token}", self.base)
    }
    /// The callback a waiting step's token completes.
    pub fn callback(&self, token: &str) -> String {
        format!("{}/callback/{token}", self.base)
    }
}

/// One image's boot artifacts as the script names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBoot {
    /// The catalog name.
    pub name: String,
    /// Kernel URL.
    pub kernel: String,
    /// Initrd URL.
    pub initrd: String,
    /// The root image's URL and sha256 (what the installer writes), if the image has one.
    pub root: Option<(String, String)>,
    /// Extra kernel arguments from the catalog.
    pub kernel_args: String,
    /// How the machine boots.
    pub firmware: Firmware,
}

/// The iPXE script booting `image` for `pending`.
pub fn ipxe_install_script(image: &ImageBoot, pending: &PendingBoot, urls: &BootUrls, host: &str) -> String {
    let mut args = vec![image.kernel_args.trim().to_string()];
    if image.firmware == Firmware::Uefi {
        args.push("initrd=initrd".into());
    }
    if let Some((url, sha)) = &image.root {
        args.push(format!("maas.image_url={url}"));
        args.push(format!("maas.image_sha256={sha}"));
    }
    if let BootImage::Wipe { method } = &pending.image {
        args.push(format!("maas.wipe={}", method.as_str()));
    }
    args.push(format!("maas.callback={}", urls.callback(&pending.token)));
    if let Some(t) = &pending.first_boot_token {
        args.push(format!("maas.first_boot={}", urls.callback(t)));
    }
    args.push(format!("maas.config={}", urls.config(&pending.host_run_id.to_string(), &pending.token)));
    args.push(format!("maas.host={host}"));
    args.push(format!("maas.batch={}", pending.batch_id));
    let args = args.into_iter().filter(|a| !a.is_empty()).collect::<Vec<_>>().join(" ");
    let initrd = match image.firmware {
        Firmware::Uefi => format!("initrd --name initrd {}", image.initrd),
        Firmware::Legacy => format!("initrd {}", image.initrd),
    };
    format!(
        "#!ipxe\n# maas: {what} {name} on {host} (batch {batch})\nkernel {kernel} {args}\n{initrd}\nboot\n",
        what = if matches!(pending.image, BootImage::Wipe { .. }) { "wipe with" } else { "install" },
        name = image.name,
        batch = pending.batch_id,
        kernel = image.kernel,
    )
}

/// The iPXE script that boots the local disk (`reason` as a comment).
pub fn ipxe_local_disk_script(reason: &str) -> String {
    // `sanboot` hands the BIOS disk 0x80 to the firmware; if that fails (UEFI), `exit`
    // returns to the firmware, which tries its next boot entry.
    format!("#!ipxe\n# maas: boot from local disk: {}\nsanboot --no-describe --drive 0x80 || exit\n", one_line(reason))
}

/// The iPXE script that waits and asks again: what a host gets while the boot service
/// cannot decide (its store unreachable). A host mid-install must not fall through to a
/// half-written disk, nor sit in its firmware with an error.
pub fn ipxe_retry_script(reason: &str, after_secs: u32, urls: &BootUrls) -> String {
    format!(
        "#!ipxe\n# maas: cannot decide now ({}); asking again in {after_secs} s\nsleep {after_secs}\nchain --replace --autofree {}\n",
        one_line(reason),
        urls.boot_script()
    )
}

fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect()
}

/// A configuration template: text with `{{ variable }}` placeholders. Variables:
/// [`TemplateVars`]' fields by name, and `params.KEY` for the batch's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Known(&'static str),
    Param(String),
}

/// The variables every template may use.
pub const TEMPLATE_VARS: [&str; 11] = [
    "hostname",
    "site",
    "sku",
    "mac",
    "batch_id",
    "image",
    "callback_url",
    "first_boot_url",
    "config_url",
    "boot_url",
    "rack",
];

/// A template that does not parse, or cannot be rendered for a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Syntax.
    #[error("template: {message} at byte {position}")]
    Syntax {
        /// Where.
        position: usize,
        /// What.
        message: String,
    },
    /// A parameter the template uses and the batch does not give.
    #[error("template uses params.{0}, which the batch does not give (add it to the batch's params)")]
    MissingParam(String),
}

impl Template {
    /// Parses `text`; unknown variables are errors naming the known ones.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| TemplateError::Syntax {
                position: offset + open,
                message: "`{{` without a closing `}}`".into(),
            })?;
            let name = after[..close].trim();
            let var = if let Some(key) = name.strip_prefix("params.") {
                if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    return Err(TemplateError::Syntax {
                        position: offset + open,
                        message: format!("params.{key:?} is not a parameter name (letters, digits, _ and -)"),
                    });
                }
                Var::Param(key.to_string())
            } else if let Some(known) = TEMPLATE_VARS.iter().find(|v| **v == name) {
                Var::Known(known)
            } else {
                return Err(TemplateError::Syntax {
                    position: offset + open,
                    message: format!("unknown variable {name:?}; known: {}, params.KEY", TEMPLATE_VARS.join(", ")),
                });
            };
            parts.push(Part::Var(var));
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The batch parameters the template needs.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(Var::Param(k)) => Some(k.as_str()),
            _ => None,
        })
    }

    /// Checks that `params` gives every parameter the template uses (the submit-time
    /// check).
    pub fn check(&self, params: &BTreeMap<String, String>) -> Result<(), TemplateError> {
        match self.params().find(|k| !params.contains_key(*k)) {
            Some(k) => Err(TemplateError::MissingParam(k.to_string())),
            None => Ok(()),
        }
    }

    /// Renders for one host.
    pub fn render(&self, vars: &TemplateVars, params: &BTreeMap<String, String>) -> Result<String, TemplateError> {
        self.check(params)?;
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(Var::Param(k)) => out.push_str(params.get(k).map(String::as_str).unwrap_or("")),
                Part::Var(Var::Known(name)) => out.push_str(vars.get(name)),
            }
        }
        Ok(out)
    }
}

/// The per-host values a template is rendered with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateVars {
    /// The host's name.
    pub hostname: String,
    /// Its site.
    pub site: String,
    /// Its rack (empty if unknown).
    pub rack: String,
    /// Its SKU.
    pub sku: String,
    /// Its MAC (empty if it has none).
    pub mac: String,
    /// The batch.
    pub batch_id: String,
    /// The image's catalog name.
    pub image: String,
    /// The install (or wipe) callback.
    pub callback_url: String,
    /// The first-boot callback (empty for wipes).
    pub first_boot_url: String,
    /// This configuration's own URL.
    pub config_url: String,
    /// The boot script URL.
    pub boot_url: String,
}

impl TemplateVars {
    fn get(&self, name: &str) -> &str {
        match name {
            "hostname" => &self.hostname,
            "site" => &self.site,
            "rack" => &self.rack,
            "sku" => &self.sku,
            "mac" => &self.mac,
            "batch_id" => &self.batch_id,
            "image" => &self.image,
            "callback_url" => &self.callback_url,
            "first_boot_url" => &self.first_boot_url,
            "config_url" => &self.config_url,
            "boot_url" => &self.boot_url,
            _ => "",
        }
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.parts {
            match p {
                Part::Text(t) => f.write_str(t)?,
                Part::Var(Var::Known(n)) => write!(f, "{{{{ {n} }}}}")?,
                Part::Var(Var::Param(k)) => write!(f, "{{{{ params.{k} }}}}")?,
            }
        }
        Ok(())
    }
}

/// What an installer (or a first-booting OS) reports on its callback URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallReport {
    /// Whether it did its job.
    pub succeeded: bool,
    /// Why not, if not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The end of its log (kept to [`LOG_EXCERPT_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// What a wipe image did (devices and method), for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wiped: Option<Vec<String>>,
}

/// How much of an installer's log a failure keeps.
pub const LOG_EXCERPT_BYTES: usize = 2048;

/// What separates a failure's error from the installer's log excerpt in a job's error.
const LOG_SEPARATOR: &str = "; log: ";

/// A job's error split into what went wrong and, when an installer sent one, the end of
/// its log ([`InstallReport::outcome`] joins them).
pub fn split_log_excerpt(error: &str) -> (&str, Option<&str>) {
    match error.split_once(LOG_SEPARATOR) {
        Some((why, log)) => (why, Some(log)),
        None => (error, None),
    }
}

impl InstallReport {
    /// The job outcome it stands for; a failure carries the error and the log's end.
    pub fn outcome(&self) -> crate::machine::JobOutcome {
        if self.succeeded {
            return crate::machine::JobOutcome::Succeeded;
        }
        let mut error = self.error.clone().unwrap_or_else(|| "the installer reported failure".into());
        if let Some(log) = self.log.as_deref().filter(|l| !l.trim().is_empty()) {
            let start = log.len().saturating_sub(LOG_EXCERPT_BYTES);
            let start = (start..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(log.len());
            error.push_str(LOG_SEPARATOR);
            error.push_str(log[start..].trim());
        }
        crate::machine::JobOutcome::Failed { error, retryable: false }
    }
}

/// The hosts whose run ended in `events` without the steps that eject virtual media: failed
/// or cancelled (sorted, each once). A run that succeeded ejected in `boot_disk` or
/// `power_off`.
pub fn runs_ended_early(events: &[crate::model::Event]) -> Vec<crate::names::Hostname> {
    use crate::model::EventKind;
    let ended: std::collections::BTreeSet<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::HostFailed { host, .. } | EventKind::HostCancelled { host } => Some(host.clone()),
            _ => None,
        })
        .collect();
    ended.into_iter().collect()
}

/// Of `hosts` (whose runs ended early), those that boot by virtual media: the only ones
/// whose drive may hold an image, so the only ones whose claims [`media_to_eject`] needs.
pub fn boot_by_media(hosts: &[crate::host::Host]) -> Vec<&crate::host::Host> {
    hosts.iter().filter(|h| h.boot_method == crate::host::BootMethod::VirtualMedia).collect()
}

/// Of `media_hosts` (from [`boot_by_media`]), those whose virtual media to eject now: the
/// ones that hold no claim (`claimed`) — a host that runs again owns its drive, and its
/// current run ejects on its own exit paths.
pub fn media_to_eject<'a>(
    media_hosts: &[&'a crate::host::Host],
    claimed: &std::collections::BTreeSet<crate::names::Hostname>,
) -> Vec<&'a crate::host::Host> {
    media_hosts.iter().copied().filter(|h| !claimed.contains(&h.hostname)).collect()
}

#[cfg(test)]
mod tests;
