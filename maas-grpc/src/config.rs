//! `maasd`'s configuration: a TOML file, then `MAASD_*` environment variables, then flags,
//! each overriding the one before. Every field has a default that works out of the box
//! (SQLite file, simulated fleet, development certificates in `./certs`), unknown keys are
//! refused (a typo never silently falls back to a default), and [`Config::check`] finds
//! every inconsistency before the daemon opens anything.
//!
//! ```toml
//! listen = "127.0.0.1:7443"
//! db = "postgres://maas@db1/maas"
//! certs = "/etc/maas/certs"
//! policy = "/etc/maas/policy.json"
//! role = "all"                    # api | worker | all
//! instance = "maasd-a"
//!
//! [log]
//! format = "json"                 # text | json
//! level = "info"                  # a tracing filter: "info,maas_grpc=debug"
//!
//! [limits]
//! max_batch_hosts = 10000         # hosts in one batch
//! expansion_cap = 100000          # names one request's hostlists may expand to
//! max_message_bytes = 4194304     # largest gRPC request
//!
//! [workers]
//! pools = ["dc1/web", "dc1/db"]   # SITE/POOL
//! per_pool = 8
//!
//! [metrics]
//! listen = "127.0.0.1:9464"       # or "off"
//!
//! [ipmi]                          # present: real BMCs over IPMI instead of the simulated fleet
//! secrets_file = "/etc/maas/bmc-secrets"   # `ref user password` lines; absent: MAAS_BMC_<REF>_USER/_PASSWORD
//! deadline_secs = 20
//!
//! [redfish]                       # present: hosts with bmc_protocol = "redfish" are driven over Redfish
//! ca_file = "/etc/maas/bmc-ca.pem" # the CA BMC certificates chain to (absent: the system's roots)
//! ca_bundles = { dc2 = "/etc/maas/dc2-bmc-ca.pem" }  # hosts pick one with bmc_tls = "ca:dc2"
//! deadline_secs = 60
//! boot_mode = "uefi"              # sent with boot overrides: uefi | legacy (absent: the system's)
//!
//! [boot]                          # the boot service hosts network-boot from (iPXE over HTTP)
//! listen = "0.0.0.0:8080"
//! public_url = "http://10.0.0.5:8080"
//!
//! [[boot.images]]
//! name = "ubuntu-24.04"
//! kernel = "/srv/maas/ubuntu-24.04/vmlinuz"
//! kernel_sha256 = "..."
//! initrd = "/srv/maas/ubuntu-24.04/initrd"
//! initrd_sha256 = "..."
//!
//! [[webhooks]]                    # every event of alice's and bob's batches
//! url = "https://hooks.internal:8443/maas"
//! secret_file = "/etc/maas/hook-secret"
//! submitters = ["alice", "bob"]
//!
//! [[webhooks]]                    # tickets only (failure budgets, wedged hosts, stragglers)
//! url = "https://tickets.internal/maas"
//! secret_file = "/etc/maas/ticket-secret"
//! tickets = true
//! ```

use crate::errors::ConfigError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use maas_core::batch::Limits;
use maas_core::names::{Pool, Site};
use serde::Deserialize;

/// What one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The API only.
    Api,
    /// Workers and singletons only.
    Worker,
    /// Everything.
    All,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// The store URL (`sqlite://FILE`, `postgres://...`, `mysql://...`).
    pub db: String,
    /// Directory with `ca.pem`, `server.pem` and `server-key.pem`.
    pub certs: PathBuf,
    /// The policy file (JSON: members, ou_groups, grants); absent: nobody has rights.
    pub policy: Option<PathBuf>,
    /// Serve without TLS (refused unless `listen` is a loopback address).
    pub plaintext: bool,
    /// With `plaintext`, the principal every caller acts as.
    pub plaintext_principal: String,
    /// What this process runs.
    pub role: Role,
    /// This instance's name (worker ids, leader rows).
    pub instance: String,
    /// Register this many simulated hosts (`sim000001.dc1`, ...) with simulated BMCs.
    pub sim_hosts: usize,
    /// How long each simulated BMC command takes, in milliseconds (0: answers at once), to
    /// rehearse with steps in flight.
    pub sim_bmc_latency_ms: u64,
    /// Logging.
    pub log: LogConfig,
    /// Request limits.
    pub limits: LimitsConfig,
    /// Worker pools.
    pub workers: WorkersConfig,
    /// The metrics endpoint.
    pub metrics: MetricsConfig,
    /// The HTTPS listener: the REST/JSON API and the web console.
    pub http: HttpConfig,
    /// Real BMCs over IPMI (absent, with no `[redfish]` either: the simulated fleet).
    pub ipmi: Option<IpmiSection>,
    /// Real BMCs over Redfish (hosts whose `bmc_protocol` is `redfish`).
    pub redfish: Option<RedfishSection>,
    /// The boot service and its image catalog (absent: no network boots — reimage, wipe
    /// and decommission are refused — unless the fleet is simulated).
    pub boot: Option<BootSection>,
    /// Webhook notifiers.
    pub webhooks: Vec<WebhookConfig>,
    /// Channels batches may subscribe to (`notify = ["channel:NAME"]`).
    pub channels: Vec<ChannelConfig>,
    /// Per-batch webhook URLs (`notify = ["https://..."]`).
    pub subscriptions: SubscriptionsSection,
    /// What is kept, and for how long.
    pub history: HistorySection,
    /// The server-reclaim workflow.
    pub reclaim: ReclaimSection,
}

/// `[reclaim]`: defunct, unallocated hosts are reimaged by the system and returned to their
/// pool; a host whose last `give_up_after` reclaims failed is left alone, with a ticket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReclaimSection {
    /// Run it.
    pub enabled: bool,
    /// The image reclaimed hosts get (one the boot service serves).
    pub image: String,
    /// How often a round runs.
    pub interval_secs: u64,
    /// Most hosts one round reimages.
    pub max_hosts: usize,
    /// Its batches' priority: low, normal, high or urgent.
    pub priority: String,
    /// Failed reclaims in a row after which a host is left alone (0: never).
    pub give_up_after: u32,
}

impl Default for ReclaimSection {
    fn default() -> Self {
        ReclaimSection {
            enabled: false,
            image: String::new(),
            interval_secs: maas_core::config::SingletonIntervals::default().reclaim.as_secs(),
            max_hosts: 20,
            priority: "low".into(),
            give_up_after: 3,
        }
    }
}

impl ReclaimSection {
    /// The engine's policy (`None`: off), or what is wrong.
    pub fn policy(&self) -> Result<Option<maas_core::config::ReclaimPolicy>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let os = maas_core::names::OsRelease::new(&self.image).map_err(|e| format!("reclaim.image: {e}"))?;
        let priority = maas_core::priority::PriorityClass::parse(&self.priority)
            .ok_or_else(|| format!("reclaim.priority: {:?} is not low, normal, high or urgent", self.priority))?;
        if self.max_hosts == 0 || self.interval_secs == 0 {
            return Err("reclaim.max_hosts and reclaim.interval_secs must be at least 1".into());
        }
        Ok(Some(maas_core::config::ReclaimPolicy {
            os,
            max_hosts_per_batch: self.max_hosts,
            priority,
            give_up_after: self.give_up_after,
        }))
    }
}

/// `[history]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySection {
    /// Finished batches' rows are kept this long, then folded into the daily rollups
    /// (kept for good) and deleted. The audit trail is never deleted.
    pub retention_secs: u64,
    /// How often retention runs.
    pub purge_every_secs: u64,
    /// A submitter's idempotency key names its batch for this long; after it, the key
    /// may name a new batch.
    pub idempotency_horizon_secs: u64,
}

impl Default for HistorySection {
    fn default() -> Self {
        let engine = maas_core::config::EngineConfig::default();
        HistorySection {
            retention_secs: engine.retention.as_secs(),
            purge_every_secs: engine.intervals.retention.as_secs(),
            idempotency_horizon_secs: engine.idempotency_horizon.as_secs(),
        }
    }
}

/// `[[channels]]`: a receiver batches subscribe to by name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// What submitters write (`channel:NAME`): letters, digits, `-` and `_`.
    pub name: String,
    /// `https://...` (a Slack or Teams incoming webhook, a team's hook), or `http://` to a
    /// loopback receiver.
    pub url: String,
    /// `json` (the events, signed, as webhooks get them), `slack` or `teams` (a readable
    /// line per notable event).
    #[serde(default)]
    pub format: maas_core::notify::ChannelFormat,
    /// The HMAC signing secret (required for `json`).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// PEM CA certificates the receiver's certificate must chain to (absent: the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allow plain `http://` to a receiver off this machine.
    #[serde(default)]
    pub allow_plain_http: bool,
}

/// `[subscriptions]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionsSection {
    /// The HMAC secret that signs what is sent to the URLs batches name; absent, batches may
    /// subscribe to channels only.
    pub secret_file: Option<PathBuf>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// A tracing filter (`info`, `warn,maas_grpc=debug`).
    pub level: String,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most hosts in one batch.
    pub max_batch_hosts: usize,
    /// Most names one request's hostlists may expand to (checked before expanding).
    pub expansion_cap: usize,
    /// Largest gRPC request, in bytes.
    pub max_message_bytes: usize,
}

/// `[workers]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// Pools to run, as `SITE/POOL`.
    pub pools: Vec<String>,
    /// Workers per pool.
    pub per_pool: usize,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served, or `off`.
    pub listen: String,
}

/// An optional listener's setting: `off`, or an address:port; `key` names it in errors.
fn listen_addr(key: &str, value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    match value {
        "off" => Ok(None),
        a => a.parse().map(Some).map_err(|e| ConfigError::Setting {
            key: key.into(),
            message: format!("{a:?}: {e} (an address:port, or \"off\")"),
        }),
    }
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where `/v1/...` (REST/JSON) and `/ui/` (the console) are served, over TLS with the
    /// gRPC listener's certificates and client CA, or `off` (the default).
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "off".into() }
    }
}

/// `[ipmi]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpmiSection {
    /// A file of `ref user password` lines; absent: `MAAS_BMC_<REF>_USER` / `_PASSWORD`.
    pub secrets_file: Option<PathBuf>,
    /// One call's deadline, retries included.
    pub deadline_secs: u64,
    /// How long one packet waits for its answer.
    pub packet_timeout_ms: u64,
    /// Attempts after the first for retryable failures.
    pub retries: u32,
    /// BMC calls in flight at once.
    pub max_concurrent: usize,
    /// The least time between two commands to one BMC.
    pub min_interval_ms: u64,
    /// Probe every host's BMC before accepting a batch.
    pub console_check: bool,
}

/// `[boot]`: the HTTP endpoint hosts network-boot from, and `[[boot.images]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSection {
    /// Where it listens (hosts' iPXE reaches it here, through `public_url`).
    #[serde(default = "default_boot_listen")]
    pub listen: SocketAddr,
    /// The base URL hosts reach it at, put into boot scripts (`http://10.0.0.5:8080`);
    /// plain HTTP, as iPXE builds without TLS need.
    pub public_url: String,
    /// How long a host waits before asking again when the store cannot answer.
    #[serde(default = "default_boot_retry")]
    pub retry_secs: u32,
    /// The image catalog.
    #[serde(default)]
    pub images: Vec<maas_boot::ImageConfig>,
}

fn default_boot_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

fn default_boot_retry() -> u32 {
    10
}

/// `[[webhooks]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://host[:port]/path` (or `http://` to a loopback receiver).
    pub url: String,
    /// PEM CA certificates an https receiver's certificate must chain to (absent: the
    /// system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allow plain `http://` to a receiver off this machine (logged as a warning at start).
    #[serde(default)]
    pub allow_plain_http: bool,
    /// The file holding the HMAC signing secret.
    pub secret_file: PathBuf,
    /// Only events of batches these principals submitted (empty: everyone's).
    #[serde(default)]
    pub submitters: Vec<String>,
    /// Tickets instead of events.
    #[serde(default)]
    pub tickets: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            db: "sqlite://maasd.db".into(),
            certs: PathBuf::from("certs"),
            policy: None,
            plaintext: false,
            plaintext_principal: "local".into(),
            role: Role::All,
            instance: "maasd".into(),
            sim_hosts: 0,
            sim_bmc_latency_ms: 0,
            log: LogConfig::default(),
            limits: LimitsConfig::default(),
            workers: WorkersConfig::default(),
            metrics: MetricsConfig::default(),
            http: HttpConfig::default(),
            ipmi: None,
            redfish: None,
            boot: None,
            webhooks: Vec::new(),
            channels: Vec::new(),
            subscriptions: SubscriptionsSection::default(),
            history: HistorySection::default(),
            reclaim: ReclaimSection::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let core = Limits::default();
        LimitsConfig {
            max_batch_hosts: core.max_batch_hosts,
            expansion_cap: core.expansion_cap,
            max_message_bytes: 4 << 20,
        }
    }
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig { pools: vec!["dc1/web".into()], per_pool: 4 }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: "127.0.0.1:9464".into() }
    }
}

impl Default for IpmiSection {
    fn default() -> Self {
        let d = maas_ipmi::IpmiConfig::default();
        IpmiSection {
            secrets_file: None,
            deadline_secs: d.deadline.as_secs(),
            packet_timeout_ms: d.packet_timeout.as_millis() as u64,
            retries: d.retries,
            max_concurrent: d.max_concurrent,
            min_interval_ms: d.min_interval.as_millis() as u64,
            console_check: false,
        }
    }
}

impl IpmiSection {
    /// The driver settings.
    pub fn driver_config(&self) -> maas_ipmi::IpmiConfig {
        maas_ipmi::IpmiConfig {
            deadline: Duration::from_secs(self.deadline_secs),
            packet_timeout: Duration::from_millis(self.packet_timeout_ms),
            retries: self.retries,
            max_concurrent: self.max_concurrent,
            min_interval: Duration::from_millis(self.min_interval_ms),
            ..maas_ipmi::IpmiConfig::default()
        }
    }
}

/// `[redfish]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedfishSection {
    /// A file of `ref user password` lines; absent: `[ipmi]`'s, else `MAAS_BMC_<REF>_USER` /
    /// `_PASSWORD`.
    pub secrets_file: Option<PathBuf>,
    /// The CA bundle (PEM) BMC certificates chain to by default; absent: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Named CA bundles hosts select with `bmc_tls = "ca:NAME"` (per site, per vendor).
    pub ca_bundles: std::collections::BTreeMap<String, PathBuf>,
    /// One call's deadline: retries, task monitors, a cycle's off-then-on.
    pub deadline_secs: u64,
    /// One HTTP exchange's timeout.
    pub request_timeout_secs: u64,
    /// Attempts after the first for retryable failures.
    pub retries: u32,
    /// BMC calls in flight at once.
    pub max_concurrent: usize,
    /// The least time between two requests to one BMC.
    pub min_interval_ms: u64,
    /// Log in with sessions where offered (else basic auth on every request).
    pub sessions: bool,
    /// `uefi` or `legacy`, sent with boot overrides; absent: the system's mode.
    pub boot_mode: Option<String>,
    /// Probe every host's BMC at submit (the console check).
    pub console_check: bool,
}

impl Default for RedfishSection {
    fn default() -> Self {
        let d = maas_redfish::RedfishConfig::default();
        RedfishSection {
            secrets_file: None,
            ca_file: None,
            ca_bundles: Default::default(),
            deadline_secs: d.deadline.as_secs(),
            request_timeout_secs: d.request_timeout.as_secs(),
            retries: d.retries,
            max_concurrent: d.max_concurrent,
            min_interval_ms: d.min_interval.as_millis() as u64,
            sessions: d.sessions,
            boot_mode: None,
            console_check: false,
        }
    }
}

impl RedfishSection {
    /// The driver settings, or what is wrong with them.
    pub fn driver_config(&self) -> Result<maas_redfish::RedfishConfig, String> {
        let boot_mode = match self.boot_mode.as_deref() {
            None => None,
            Some("uefi") => Some(maas_redfish::BootMode::Uefi),
            Some("legacy") => Some(maas_redfish::BootMode::Legacy),
            Some(other) => return Err(format!("redfish.boot_mode {other:?}: expected uefi or legacy")),
        };
        if self.deadline_secs == 0 || self.request_timeout_secs == 0 || self.max_concurrent == 0 {
            return Err("redfish: deadline_secs, request_timeout_secs and max_concurrent must be at least 1".into());
        }
        Ok(maas_redfish::RedfishConfig {
            deadline: Duration::from_secs(self.deadline_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            retries: self.retries,
            max_concurrent: self.max_concurrent,
            min_interval: Duration::from_millis(self.min_interval_ms),
            sessions: self.sessions,
            boot_mode,
            trust: maas_redfish::TrustConfig {
                ca_file: self.ca_file.clone(),
                bundles: self.ca_bundles.clone().into_iter().collect(),
            },
            ..maas_redfish::RedfishConfig::default()
        })
    }
}

impl Config {
    /// Whether the fleet is real BMCs (`[ipmi]` or `[redfish]`), not the simulated one.
    pub fn real_fleet(&self) -> bool {
        self.ipmi.is_some() || self.redfish.is_some()
    }

    /// Whether submits probe each host's BMC (the console check), per the drivers' sections.
    pub fn console_check(&self) -> bool {
        self.ipmi.as_ref().is_some_and(|i| i.console_check) || self.redfish.as_ref().is_some_and(|r| r.console_check)
    }
}

/// A worker pool to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Its site.
    pub site: Site,
    /// Its pool.
    pub pool: Pool,
}

impl Config {
    /// Reads a TOML file (every key optional; unknown keys refused).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: Some(path.to_path_buf()), message },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: None, message: e.to_string().trim_end().into() })
    }

    /// maas-core's request limits for this configuration.
    pub fn core_limits(&self) -> Limits {
        Limits {
            max_batch_hosts: self.limits.max_batch_hosts,
            expansion_cap: self.limits.expansion_cap,
            subscription_channels: self.channels.iter().map(|c| c.name.clone()).collect(),
            subscription_urls: self.subscriptions.secret_file.is_some(),
            ..Limits::default()
        }
    }

    /// The worker pools, parsed.
    pub fn pools(&self) -> Result<Vec<PoolSpec>, ConfigError> {
        let bad = |spec: &str, message: String| ConfigError::Setting {
            key: "workers.pools".into(),
            message: format!("{spec:?}: {message}"),
        };
        self.workers
            .pools
            .iter()
            .map(|spec| {
                let (site, pool) = spec.split_once('/').ok_or_else(|| bad(spec, "expected SITE/POOL".into()))?;
                Ok(PoolSpec {
                    site: Site::new(site).map_err(|e| bad(spec, e.to_string()))?,
                    pool: Pool::new(pool).map_err(|e| bad(spec, e.to_string()))?,
                })
            })
            .collect()
    }

    /// The metrics address (`None`: off).
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        listen_addr("metrics.listen", &self.metrics.listen)
    }

    /// The HTTPS listener's address, or `None` when `off`.
    pub fn http_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        listen_addr("http.listen", &self.http.listen)
    }

    /// Every inconsistency, found before anything is opened.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.plaintext && !self.listen.ip().is_loopback() {
            problems.push(format!(
                "plaintext is refused on {}: plaintext serves only on a loopback address (127.0.0.1, ::1)",
                self.listen
            ));
        }
        if let (true, Ok(Some(http))) = (self.plaintext, self.http_addr())
            && !http.ip().is_loopback()
        {
            problems.push(format!(
                "plaintext is refused on http.listen {http}: plaintext serves only on a loopback address"
            ));
        }
        if self.real_fleet() && self.sim_hosts > 0 {
            problems
                .push("sim_hosts needs the simulated fleet; remove [ipmi] and [redfish] or set sim_hosts = 0".into());
        }
        if let Some(r) = &self.redfish {
            if let Err(e) = r.driver_config() {
                problems.push(e);
            }
            for (name, path) in r
                .ca_file
                .iter()
                .map(|p| ("ca_file".to_string(), p))
                .chain(r.ca_bundles.iter().map(|(n, p)| (format!("ca_bundles.{n}"), p)))
            {
                if !path.is_file() {
                    problems.push(format!("redfish.{name}: {} is not a readable file", path.display()));
                }
            }
        }
        if let Some(boot) = &self.boot {
            if !(boot.public_url.starts_with("http://") || boot.public_url.starts_with("https://")) {
                problems.push(format!("boot.public_url {:?} must be an http:// URL hosts can reach", boot.public_url));
            }
            if boot.images.is_empty() {
                problems.push("[boot] has no [[boot.images]]: nothing could be installed".into());
            }
        }
        if self.limits.max_batch_hosts == 0 || self.limits.expansion_cap == 0 {
            problems.push("limits.max_batch_hosts and limits.expansion_cap must be at least 1".into());
        }
        if self.limits.max_message_bytes < 1024 {
            problems.push(format!("limits.max_message_bytes = {} is below 1024", self.limits.max_message_bytes));
        }
        if self.workers.per_pool == 0 && self.role != Role::Api {
            problems.push("workers.per_pool must be at least 1 (or role = \"api\")".into());
        }
        if let Err(e) = self.pools() {
            problems.push(e.to_string());
        }
        if let Err(e) = self.metrics_addr() {
            problems.push(e.to_string());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.push(format!("log.level {:?}: {e}", self.log.level));
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            if let Err(e) = crate::webhook::check_url(&w.url, w.allow_plain_http) {
                problems.push(format!("webhooks[{i}].url: {e}"));
            }
            if w.tickets && !w.submitters.is_empty() {
                problems.push(format!("webhooks[{i}]: tickets = true takes no submitters"));
            }
            if self.webhooks[..i]
                .iter()
                .any(|o| (&o.url, o.tickets, &o.submitters) == (&w.url, w.tickets, &w.submitters))
            {
                problems.push(format!("webhooks[{i}] repeats an earlier webhook ({})", w.url));
            }
        }
        if let Err(e) = self.reclaim.policy() {
            problems.push(e);
        }
        for (i, ch) in self.channels.iter().enumerate() {
            let name_ok = !ch.name.is_empty()
                && ch.name.len() <= 64
                && ch.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok {
                problems.push(format!("channels[{i}].name {:?}: 1 to 64 letters, digits, - and _", ch.name));
            }
            if self.channels[..i].iter().any(|o| o.name == ch.name) {
                problems.push(format!("channels[{i}] repeats the name {:?}", ch.name));
            }
            if let Err(e) = crate::webhook::check_url(&ch.url, ch.allow_plain_http) {
                problems.push(format!("channels[{i}].url: {e}"));
            }
            if ch.format == maas_core::notify::ChannelFormat::Json && ch.secret_file.is_none() {
                problems.push(format!("channels[{i}]: format json needs a secret_file to sign with"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid { problems }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults_and_checks() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c, Config::default());
        c.check().unwrap();
        assert_eq!(c.pools().unwrap()[0].site.as_str(), "dc1");
        assert_eq!(c.metrics_addr().unwrap(), Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn the_example_file_parses_and_checks() {
        let c = Config::from_toml(include_str!("../../deploy/maasd.example.toml")).unwrap();
        c.check().unwrap();
        let defaults = Config::default();
        assert_eq!((&c.limits, &c.workers, &c.log), (&defaults.limits, &defaults.workers, &defaults.log));
        assert_eq!(c.ipmi.as_ref().map(|i| i.driver_config().deadline), Some(Duration::from_secs(20)));
        assert_eq!(c.webhooks.len(), 3);
        assert_eq!(c.http_addr().unwrap(), None);
        let bad = Config::from_toml("[http]\nlisten = \"port 80\"").unwrap().http_addr().unwrap_err().to_string();
        assert!(bad.contains("http.listen: \"port 80\""), "{bad}");
    }

    #[test]
    fn the_redfish_section_maps_to_the_driver_and_bad_values_are_named() {
        let dir = std::env::temp_dir().join(format!("maas-config-redfish-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "not checked here").unwrap();
        let c = Config::from_toml(&format!(
            "[redfish]\nca_file = {ca:?}\nca_bundles = {{ dc2 = {ca:?} }}\ndeadline_secs = 30\nboot_mode = \"uefi\"\n\
             console_check = true\n"
        ))
        .unwrap();
        c.check().unwrap();
        assert!(c.real_fleet() && c.console_check());
        let d = c.redfish.as_ref().unwrap().driver_config().unwrap();
        assert_eq!((d.deadline, d.boot_mode), (Duration::from_secs(30), Some(maas_redfish::BootMode::Uefi)));
        assert_eq!(d.trust.bundles.get("dc2"), Some(&ca));
        let bad =
            Config::from_toml("sim_hosts = 3\n[redfish]\nca_file = \"/nonexistent/ca.pem\"\nboot_mode = \"efi\"\n")
                .unwrap();
        let err = bad.check().unwrap_err().to_string();
        for expected in
            ["redfish.ca_file: /nonexistent/ca.pem is not a readable file", "boot_mode \"efi\"", "sim_hosts"]
        {
            assert!(err.contains(expected), "{expected}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reclaim_and_history_sections_map_to_the_engine_and_bad_values_are_named() {
        let c = Config::from_toml(
            "[reclaim]\nenabled = true\nimage = \"ubuntu-24.04\"\ninterval_secs = 60\nmax_hosts = 5\ngive_up_after = 2\n\
             [history]\nretention_secs = 86400\nidempotency_horizon_secs = 3600\n",
        )
        .unwrap();
        c.check().unwrap();
        let policy = c.reclaim.policy().unwrap().unwrap();
        assert_eq!((policy.os.as_str(), policy.max_hosts_per_batch, policy.give_up_after), ("ubuntu-24.04", 5, 2));
        assert_eq!(policy.priority, maas_core::priority::PriorityClass::Low);
        assert_eq!((c.history.retention_secs, c.history.idempotency_horizon_secs), (86_400, 3_600));
        assert_eq!(Config::default().reclaim.policy(), Ok(None), "off by default");
        let bad = Config::from_toml("[reclaim]\nenabled = true\nimage = \"\"\npriority = \"asap\"\n").unwrap();
        let ConfigError::Invalid { problems } = bad.check().unwrap_err() else { panic!() };
        assert!(problems.iter().any(|p| p.starts_with("reclaim.image")), "{problems:?}");
    }

    #[test]
    fn the_two_role_example_files_parse_and_check() {
        let api = Config::from_toml(include_str!("../../deploy/maasd-api.example.toml")).unwrap();
        api.check().unwrap();
        let worker = Config::from_toml(include_str!("../../deploy/maasd-worker.example.toml")).unwrap();
        worker.check().unwrap();
        assert_eq!((api.role, worker.role), (Role::Api, Role::Worker));
        assert_eq!(api.db, worker.db, "one database");
        assert_ne!(api.instance, worker.instance, "names are unique per process");
        assert_eq!(worker.pools().unwrap().len(), 2);
    }

    #[test]
    fn a_full_file_parses() {
        let c = Config::from_toml(
            r#"
            listen = "0.0.0.0:8443"
            db = "postgres://maas@db/maas"
            role = "worker"
            [log]
            format = "json"
            level = "warn,maas_grpc=debug"
            [limits]
            max_batch_hosts = 500
            [workers]
            pools = ["dc2/db"]
            per_pool = 16
            [metrics]
            listen = "off"
            [ipmi]
            secrets_file = "/etc/maas/bmc"
            deadline_secs = 5
            [[webhooks]]
            url = "http://127.0.0.1:9000/h"
            secret_file = "s"
            submitters = ["alice"]
            [[webhooks]]
            url = "http://127.0.0.1:9001/t"
            secret_file = "t"
            tickets = true
            "#,
        )
        .unwrap();
        c.check().unwrap();
        assert_eq!((c.role, c.log.format, c.limits.max_batch_hosts), (Role::Worker, LogFormat::Json, 500));
        assert_eq!(c.limits.expansion_cap, LimitsConfig::default().expansion_cap, "unset keys keep defaults");
        assert_eq!(c.core_limits().max_batch_hosts, 500);
        assert_eq!(c.metrics_addr().unwrap(), None);
        let ipmi = c.ipmi.unwrap();
        assert_eq!((ipmi.deadline_secs, ipmi.retries), (5, IpmiSection::default().retries));
        assert_eq!(ipmi.driver_config().deadline, Duration::from_secs(5));
        assert_eq!(c.webhooks.len(), 2);
        assert!(c.webhooks[1].tickets);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::from_toml("listne = \"127.0.0.1:1\"").unwrap_err().to_string();
        assert!(e.contains("listne"), "{e}");
        let e = Config::from_toml("[limits]\nmax_batch_host = 3").unwrap_err().to_string();
        assert!(e.contains("max_batch_host"), "{e}");
        let e = Config::from_toml("role = \"boss\"").unwrap_err().to_string();
        assert!(e.contains("boss"), "{e}");
        let e = Config::from_toml("listen = \"nowhere\"").unwrap_err().to_string();
        assert!(e.contains("listen") || e.contains("nowhere"), "{e}");
    }

    #[test]
    fn check_reports_every_problem() {
        let c = Config::from_toml(
            r#"
            listen = "0.0.0.0:7443"
            plaintext = true
            sim_hosts = 3
            [ipmi]
            [workers]
            pools = ["nopool"]
            [metrics]
            listen = "here"
            [http]
            listen = "0.0.0.0:7444"
            [[webhooks]]
            url = "http://hooks.internal/"
            secret_file = "s"
            [[webhooks]]
            url = "http://hooks.internal/"
            secret_file = "t"
            "#,
        )
        .unwrap();
        let ConfigError::Invalid { problems } = c.check().unwrap_err() else { panic!("every problem at once") };
        let e = problems.join("\n");
        for needle in [
            "plaintext is refused",
            "sim_hosts",
            "SITE/POOL",
            "metrics.listen",
            "plaintext is refused on http.listen 0.0.0.0:7444",
            "webhooks[0].url: webhook URL \"http://hooks.internal/\": plain http leaves the machine",
            "webhooks[1] repeats",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from {e}");
        }
    }
}
