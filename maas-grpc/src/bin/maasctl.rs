//! `maasctl`: the command line for maas's gRPC API.
//!
//! Exit codes: 0 success; 1 the request was refused (rejected, denied, not found), a dry
//! run found problems, or a waited-for batch did not complete cleanly; 2 usage,
//! configuration or connection errors. `--json` prints one JSON document (or one per line
//! for streams) on stdout for every command. `maasctl completions bash|zsh|fish` prints
//! shell completions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use futures::StreamExt;
use maas_grpc::client::{self, Client};
use maas_grpc::pb;
use maas_grpc::tls::TlsFiles;

#[derive(Debug, Parser)]
#[command(name = "maasctl", version, about = "Submit and follow batches of destructive actions on bare-metal hosts")]
struct Cli {
    /// The maasd API.
    #[arg(long, env = "MAAS_SERVER", default_value = "https://localhost:7443", global = true)]
    server: String,
    /// Directory with ca.pem and the client certificate NAME.pem / NAME-key.pem.
    #[arg(long, env = "MAAS_CERTS", default_value = "certs", global = true)]
    certs: PathBuf,
    /// The client certificate's name in --certs.
    #[arg(long, env = "MAAS_USER", default_value = "admin", global = true)]
    user: String,
    /// Connect without TLS (a maasd started with --plaintext on loopback).
    #[arg(long, global = true)]
    plaintext: bool,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a development CA, a server certificate and client certificates into DIR.
    DevCerts {
        /// Target directory.
        dir: PathBuf,
        /// Client certificate names.
        #[arg(long = "client", default_values = ["admin"])]
        clients: Vec<String>,
        /// Make a new CA and every certificate again (by default, what is in DIR is kept
        /// and new clients are signed by its CA).
        #[arg(long)]
        force: bool,
    },
    /// Submit a batch: `maasctl submit reboot 'web[001-100].dc1'`.
    Submit {
        /// reimage:OS | reboot | reboot-soft | power-on | power-off | power-off-soft | power-cycle | wipe | decommission
        action: String,
        /// Hostlists.
        #[arg(required = true)]
        hosts: Vec<String>,
        /// low | normal | high | urgent
        #[arg(long, default_value = "normal")]
        priority: String,
        /// Hosts at once.
        #[arg(long, default_value_t = 0)]
        max_in_flight: u32,
        /// Failed hosts tolerated before pausing.
        #[arg(long)]
        failure_budget: Option<u32>,
        /// Resubmitting with the same key returns the same batch.
        #[arg(long, default_value = "")]
        idempotency_key: String,
        /// Act on in-use hosts, with this reason.
        #[arg(long, default_value = "")]
        force: String,
        /// Report what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Follow the batch until it finishes.
        #[arg(long)]
        wait: bool,
        /// A value for the image's configuration template, KEY=VALUE or KEY=@FILE (the
        /// file's contents: cloud-init user-data, say); repeatable.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Reimage only: how long the installer (and then the first boot) may take.
        #[arg(long, value_parser = age)]
        install_timeout: Option<Duration>,
        /// Probe every host's BMC console before accepting: true | false (default: the
        /// daemon's setting).
        #[arg(long, value_name = "BOOL")]
        console_check: Option<bool>,
        /// Tell this receiver about the batch: an https:// URL, or channel:NAME for a
        /// channel maasd configures (repeatable, at most 5).
        #[arg(long, value_name = "URL|channel:NAME")]
        notify: Vec<String>,
    },
    /// The OS images (and the wipe image) maasd's boot service serves.
    Images,
    /// A batch and its hosts.
    Status {
        /// The batch id.
        batch: String,
    },
    /// Batches, newest first.
    List {
        /// Only these states.
        #[arg(long)]
        state: Vec<String>,
        /// Only this submitter's.
        #[arg(long)]
        submitter: Option<String>,
        /// Only this action (reimage, reboot, power_on, power_off, power_cycle, wipe_disks, decommission).
        #[arg(long)]
        action: Option<String>,
        /// Only batches created within this long (30m, 24h, 7d).
        #[arg(long, value_parser = age)]
        since: Option<Duration>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Outcomes, success rate and duration percentiles over a window.
    Stats {
        /// The window: host runs finished (and batches created) within this long (30m, 24h, 7d, 365d).
        #[arg(long, value_parser = age, default_value = "24h")]
        since: Duration,
        /// Also per action by period: day, week or month (from the rollups retention keeps).
        #[arg(long)]
        by: Option<String>,
    },
    /// Per site: hosts in flight, jobs queued, running and waiting, live workers.
    Active,
    /// Tickets raised (failure budgets, wedged hosts, stragglers), newest first.
    Tickets {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// The audit trail, newest first: every mutating call, accepted or refused (readable
    /// by groups the policy grants `audit`, and admins).
    Audit {
        /// Only this principal's calls.
        #[arg(long)]
        principal: Option<String>,
        /// Only this operation (submit, cancel, pause, resume, import_hosts, set_host_state, set_pool_kinds).
        #[arg(long)]
        op: Option<String>,
        /// Only calls that named this host.
        #[arg(long)]
        host: Option<String>,
        /// Only this batch's.
        #[arg(long)]
        batch: Option<String>,
        /// Only entries within this long (30m, 24h, 365d).
        #[arg(long, value_parser = age)]
        since: Option<Duration>,
        /// Only entries older than this id (the last id of the previous page).
        #[arg(long)]
        before: Option<u64>,
        /// At most this many (up to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Inventory: list, import, set a host's state.
    Hosts {
        #[command(subcommand)]
        command: HostsCommand,
    },
    /// Wait until maasd answers (for scripts that start it and use it at once); exit 0
    /// when ready, 2 when not ready in time or when the address or certificates are wrong.
    WaitReady {
        /// How long to wait: 30s, 2m.
        #[arg(long, default_value = "60s", value_parser = age)]
        timeout: Duration,
    },
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Cancel a batch.
    Cancel {
        /// The batch id.
        batch: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Pause a batch.
    Pause {
        /// The batch id.
        batch: String,
    },
    /// Resume a batch.
    Resume {
        /// The batch id.
        batch: String,
    },
    /// Print a batch's events as they happen.
    Watch {
        /// The batch id (all batches when omitted).
        batch: Option<String>,
        /// Resume after this event position.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

#[derive(Debug, Subcommand)]
enum HostsCommand {
    /// Hosts by site, pool and state (every page).
    List {
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
        /// Only this pool.
        #[arg(long)]
        pool: Option<String>,
        /// Only this state (ready, allocated, defunct, decommissioned).
        #[arg(long)]
        state: Option<String>,
        /// Only the host with this MAC.
        #[arg(long)]
        mac: Option<String>,
    },
    /// Add or replace hosts from a JSON file (an array of host objects) or a CSV file with
    /// a header row (hostname,site,rack,pool,owner_group,sku,bmc_address,bmc_port,credentials_ref,state,mac,
    /// bmc_protocol,redfish_system_id,bmc_tls,boot_method; any subset with hostname, site,
    /// pool, sku, bmc_address, credentials_ref). A record whose settings do not go together
    /// refuses the whole import, naming the host.
    Import {
        /// The file (`-`: stdin, JSON).
        file: PathBuf,
    },
    /// Set a host's state (ready, allocated, defunct, decommissioned).
    SetState {
        /// The host.
        hostname: String,
        /// The state.
        state: String,
        /// Who holds it, with `allocated` (a service, a team, a ticket): a batch step
        /// refused on the host later names them.
        #[arg(long)]
        allocated_to: Option<String>,
    },
}

/// Parses an import file: JSON (an array of objects) or, for `.csv`, a header row and
/// comma-separated records. Errors name the line or record.
fn read_hosts(path: &std::path::Path) -> Result<Vec<pb::Host>, String> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let hosts: Vec<pb::Host> = if path.extension().is_some_and(|e| e == "csv") {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().ok_or("the CSV file is empty")?.1.split(',').map(str::trim).collect();
        lines
            .map(|(n, line)| {
                let values: Vec<&str> = line.split(',').map(str::trim).collect();
                if values.len() != header.len() {
                    return Err(format!("line {}: {} fields, the header has {}", n + 1, values.len(), header.len()));
                }
                let object: serde_json::Map<String, serde_json::Value> = header
                    .iter()
                    .zip(&values)
                    .map(|(k, v)| {
                        let value = match (*k, v.parse::<u32>()) {
                            ("bmc_port", Ok(port)) => serde_json::Value::from(port),
                            _ => serde_json::Value::from(*v),
                        };
                        (k.to_string(), value)
                    })
                    .collect();
                serde_json::from_value(object.into()).map_err(|e| format!("line {}: {e}", n + 1))
            })
            .collect::<Result<_, _>>()?
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    Ok(hosts)
}

/// `KEY=VALUE`, or `KEY=@FILE` for a file's contents.
fn read_param(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("--param {text:?}: expected KEY=VALUE"))?;
    let value = match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("--param {key}=@{path}: {e}"))?,
        None => value.to_string(),
    };
    Ok((key.to_string(), value))
}

/// `30s`, `15m`, `24h`, `7d`.
fn age(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?}: expected a number and s, m, h or d (24h)"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn usage(message: impl std::fmt::Display) -> ! {
    eprintln!("maasctl: {message}");
    std::process::exit(2);
}

fn refused(status: tonic::Status) -> ! {
    let report = client::rejection(&status);
    refused_with(status, report, false)
}

/// Reports a refusal and exits: 1 when the request was refused, 2 when the server could
/// not be reached or did not accept the caller. With `json`, one JSON object on stdout
/// with the status code, its message and the structured report (every conflict with its
/// batch, every unknown host, ...).
fn refused_with(status: tonic::Status, report: Option<pb::Rejection>, json: bool) -> ! {
    if json {
        let problems = report.as_ref().map(|r| serde_json::to_value(r).unwrap_or_default());
        println!(
            "{}",
            serde_json::json!({"error": {"code": format!("{:?}", status.code()), "message": status.message(),
                "problems": problems}})
        );
    } else {
        eprintln!("maasctl: {}", status.message());
        for c in report.map(|r| r.conflicts).unwrap_or_default() {
            eprintln!("  conflict: {} is held by batch {}", c.hostname, c.batch_id);
        }
    }
    let code = match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unauthenticated | tonic::Code::Unknown => 2,
        _ => 1,
    };
    std::process::exit(code);
}

fn tls_files(cli: &Cli) -> TlsFiles {
    TlsFiles {
        cert: cli.certs.join(format!("{}.pem", cli.user)),
        key: cli.certs.join(format!("{}-key.pem", cli.user)),
        ca: Some(cli.certs.join("ca.pem")),
    }
}

async fn connect(cli: &Cli) -> Client {
    let files = tls_files(cli);
    let tls = (!cli.plaintext).then_some(&files);
    client::connect(&cli.server, tls, Duration::from_secs(5)).await.unwrap_or_else(|e| usage(e))
}

fn show_batch(b: &pb::Batch, json: bool) {
    if json {
        let hosts: Vec<serde_json::Value> = b
            .hosts
            .iter()
            .map(|h| serde_json::json!({"hostname": h.hostname, "state": h.state, "step": h.step, "attempts": h.attempts, "last_error": h.last_error}))
            .collect();
        let c = b.counts.unwrap_or_default();
        println!(
            "{}",
            serde_json::json!({"id": b.id, "submitter": b.submitter, "action": b.action, "state": b.state,
                "counts": {"queued": c.queued, "running": c.running, "succeeded": c.succeeded, "failed": c.failed, "cancelled": c.cancelled},
                "hosts": hosts})
        );
    } else {
        let c = b.counts.unwrap_or_default();
        println!(
            "{} {} {} by {}: {} queued, {} running, {} succeeded, {} failed, {} cancelled",
            b.id, b.action, b.state, b.submitter, c.queued, c.running, c.succeeded, c.failed, c.cancelled
        );
        for h in &b.hosts {
            println!("  {:<24} {:<10} {:<14} {}", h.hostname, h.state, h.step, h.last_error);
        }
    }
}

/// A live progress bar for one batch (on stderr, when it is a terminal), fed by its events.
struct Progress {
    bar: indicatif::ProgressBar,
    json: bool,
    counts: std::cell::Cell<(u64, u64, u64)>,
}

impl Progress {
    fn new(batch: &str, hosts: usize, json: bool) -> Progress {
        let bar = if json { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(hosts as u64) };
        let style = indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} hosts {msg} ({elapsed})")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(batch.chars().take(8).collect::<String>());
        Progress { bar, json, counts: std::cell::Cell::new((0, 0, 0)) }
    }

    fn event(&self, e: &pb::Event) {
        let (mut ok, mut failed, mut cancelled) = self.counts.get();
        match e.kind.as_str() {
            "batch_accepted" => {
                let hosts = serde_json::from_str::<serde_json::Value>(&e.json).ok().and_then(|v| v["hosts"].as_u64());
                if let Some(n) = hosts {
                    self.bar.set_length(n);
                }
            }
            "host_succeeded" => ok += 1,
            "host_failed" => {
                failed += 1;
                self.bar.println(format!("failed: {}", e.json));
            }
            "host_cancelled" => cancelled += 1,
            "batch_paused" | "straggler_flagged" => self.bar.println(format!("{}: {}", e.kind, e.json)),
            _ => {}
        }
        self.counts.set((ok, failed, cancelled));
        self.bar.set_position(ok + failed + cancelled);
        self.bar.set_message(format!("{ok} ok, {failed} failed, {cancelled} cancelled"));
        if self.json {
            println!(
                "{}",
                serde_json::json!({"seq": e.seq, "kind": e.kind, "event": serde_json::from_str::<serde_json::Value>(&e.json).unwrap_or_default()})
            );
        }
    }

    fn finish(&self) {
        self.bar.finish();
    }
}

fn show_stats(r: &pb::BatchStatsResponse, json: bool) {
    let rows = |list: &[pb::DurationStats]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|d| {
                let p = d.durations.unwrap_or_default();
                serde_json::json!({"action": d.action, "step": d.step, "sku": d.sku, "site": d.site, "count": p.count,
                    "p50_seconds": p.p50_seconds, "p90_seconds": p.p90_seconds, "p95_seconds": p.p95_seconds,
                    "p99_seconds": p.p99_seconds, "max_seconds": p.max_seconds})
            })
            .collect()
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"batches_by_state": r.batches_by_state, "succeeded": r.succeeded, "failed": r.failed,
                "cancelled": r.cancelled, "success_rate": r.success_rate, "host_runs": rows(&r.host_runs), "steps": rows(&r.steps),
                "periods": r.periods})
        );
        return;
    }
    let states: Vec<String> = r.batches_by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!("batches: {}", if states.is_empty() { "none".to_string() } else { states.join(", ") });
    let rate = r.success_rate.map_or("-".to_string(), |x| format!("{:.1}%", x * 100.0));
    println!("hosts: {} succeeded, {} failed, {} cancelled; success rate {rate}", r.succeeded, r.failed, r.cancelled);
    if !r.periods.is_empty() {
        println!("by period:");
        println!(
            "  {:<10} {:<13} {:>9} {:>7} {:>9} {:>8} {:>9} {:>9}",
            "start", "action", "succeeded", "failed", "cancelled", "success", "p50 s", "p95 s"
        );
        for p in &r.periods {
            let start = maas_core::time::Timestamp::from_millis(p.start_ms).to_string();
            let rate = p.success_rate.map_or("-".to_string(), |x| format!("{:.1}%", x * 100.0));
            let secs = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.0}"));
            println!(
                "  {:<10} {:<13} {:>9} {:>7} {:>9} {:>8} {:>9} {:>9}",
                &start[..start.len().min(10)],
                p.action,
                p.succeeded,
                p.failed,
                p.cancelled,
                rate,
                secs(p.p50_seconds),
                secs(p.p95_seconds)
            );
        }
    }
    for (title, list) in [("host runs", &r.host_runs), ("steps", &r.steps)] {
        if list.is_empty() {
            continue;
        }
        println!("{title}:");
        println!(
            "  {:<13} {:<15} {:<10} {:<8} {:>6} {:>9} {:>9} {:>9}",
            "action", "step", "sku", "site", "n", "p50 s", "p95 s", "max s"
        );
        for d in list {
            let p = d.durations.unwrap_or_default();
            println!(
                "  {:<13} {:<15} {:<10} {:<8} {:>6} {:>9.1} {:>9.1} {:>9.1}",
                d.action, d.step, d.sku, d.site, p.count, p.p50_seconds, p.p95_seconds, p.max_seconds
            );
        }
    }
}

async fn hosts(client: &mut Client, command: &HostsCommand, json: bool) {
    match command {
        HostsCommand::List { site, pool, state, mac } => {
            let mut after = String::new();
            loop {
                let request = pb::ListHostsRequest {
                    site: site.clone().unwrap_or_default(),
                    pool: pool.clone().unwrap_or_default(),
                    state: state.clone().unwrap_or_default(),
                    after: after.clone(),
                    limit: 1000,
                    mac: mac.clone().unwrap_or_default(),
                };
                let page = client.list_hosts(request).await.unwrap_or_else(|s| refused(s)).into_inner().hosts;
                for h in &page {
                    if json {
                        println!("{}", serde_json::to_string(h).unwrap_or_default());
                    } else {
                        let state = if h.allocated_to.is_empty() {
                            h.state.clone()
                        } else {
                            format!("{} ({})", h.state, h.allocated_to)
                        };
                        let system = if h.redfish_system_id.is_empty() {
                            String::new()
                        } else {
                            format!(" {}", h.redfish_system_id)
                        };
                        let media = if h.boot_method == "virtual_media" { " virtual-media" } else { "" };
                        println!(
                            "{:<28} {:<8} {:<10} {:<10} {:<14} {} {}:{}{system}{media}",
                            h.hostname, h.site, h.pool, h.sku, state, h.bmc_protocol, h.bmc_address, h.bmc_port
                        );
                    }
                }
                match page.last() {
                    Some(last) if page.len() == 1000 => after = last.hostname.clone(),
                    _ => break,
                }
            }
        }
        HostsCommand::Import { file } => {
            let hosts = read_hosts(file).unwrap_or_else(|e| usage(e));
            let r = client.import_hosts(pb::ImportHostsRequest { hosts }).await.unwrap_or_else(|s| refused(s));
            let written = r.into_inner().written;
            if json {
                println!("{}", serde_json::json!({ "written": written }));
            } else {
                println!("{written} hosts written");
            }
        }
        HostsCommand::SetState { hostname, state, allocated_to } => {
            let request = pb::SetHostStateRequest {
                hostname: hostname.clone(),
                state: state.clone(),
                allocated_to: allocated_to.clone().unwrap_or_default(),
            };
            client.set_host_state(request).await.unwrap_or_else(|s| refused(s));
            if json {
                println!("{}", serde_json::json!({ "hostname": hostname, "state": state }));
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Command::DevCerts { dir, clients, force } = &cli.command {
        let names: Vec<&str> = clients.iter().map(String::as_str).collect();
        let done = maas_grpc::devcerts::write_dev_certs_with(dir, &names, *force).unwrap_or_else(|e| usage(e));
        for f in done.written {
            println!("{}", f.display());
        }
        if !done.kept.is_empty() {
            eprintln!("kept {} existing file(s) in {} (--force makes a new CA)", done.kept.len(), dir.display());
        }
        return;
    }
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(*shell, &mut Cli::command(), "maasctl", &mut std::io::stdout());
        return;
    }
    if let Command::WaitReady { timeout } = &cli.command {
        let files = tls_files(&cli);
        let tls = (!cli.plaintext).then_some(&files);
        match client::wait_ready(&cli.server, tls, *timeout).await {
            Ok(_) if cli.json => println!("{}", serde_json::json!({"ready": true, "server": cli.server})),
            Ok(_) => println!("{} is ready", cli.server),
            Err(e) => usage(e),
        }
        return;
    }
    let mut client = connect(&cli).await;
    match &cli.command {
        Command::DevCerts { .. } | Command::WaitReady { .. } => unreachable!("handled above"),
        Command::Submit {
            action: a,
            hosts,
            priority: p,
            max_in_flight,
            failure_budget,
            idempotency_key,
            force,
            dry_run,
            wait,
            params,
            install_timeout,
            console_check,
            notify,
        } => {
            let mut action = client::action(a).unwrap_or_else(|e| usage(e));
            if let Some(t) = install_timeout {
                match &mut action.kind {
                    Some(pb::action::Kind::Reimage(r)) => r.install_timeout_secs = Some(t.as_secs()),
                    _ => usage("--install-timeout applies to reimage:OS only"),
                }
            }
            let request = pb::SubmitBatchRequest {
                params: params.iter().map(|p| read_param(p).unwrap_or_else(|e| usage(e))).collect(),
                action: Some(action),
                hosts: hosts.clone(),
                priority: client::priority(p).unwrap_or_else(|e| usage(e)) as i32,
                max_in_flight: *max_in_flight,
                failure_budget: *failure_budget,
                idempotency_key: idempotency_key.clone(),
                force_reason: force.clone(),
                dry_run: *dry_run,
                console_check: *console_check,
                notify: notify.clone(),
                ..Default::default()
            };
            let r = match client.submit_batch(request.clone()).await {
                Ok(r) => r.into_inner(),
                // A large refusal carries only its first problems: the rest come from a
                // dry run of the same request.
                Err(status) => {
                    let report = client::full_rejection(&mut client, &request, &status).await;
                    refused_with(status, report, cli.json)
                }
            };
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"batch_id": r.batch_id, "created": r.created, "warnings": r.warnings,
                        "acceptable": r.acceptable, "hosts": r.expanded_hosts, "plan": r.plan,
                        "problems": r.problems.as_ref().map(|p| serde_json::to_value(p).unwrap_or_default())})
                );
            } else if *dry_run {
                println!("{} hosts; plan: {}", r.expanded_hosts.len(), r.plan.join(" -> "));
                match &r.problems {
                    Some(p) => println!("{}", p.summary),
                    None => println!("acceptable"),
                }
            } else {
                println!("{}", r.batch_id);
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
            }
            if *dry_run && !r.acceptable {
                std::process::exit(1);
            }
            if *wait && !*dry_run {
                let mut events = client
                    .watch_batch(pb::WatchBatchRequest { batch_id: r.batch_id.clone(), after: 0 })
                    .await
                    .unwrap_or_else(|s| refused(s))
                    .into_inner();
                let progress = Progress::new(&r.batch_id, r.expanded_hosts.len(), cli.json);
                while let Some(e) = events.next().await {
                    progress.event(&e.unwrap_or_else(|s| refused(s)));
                }
                progress.finish();
                let b = client
                    .get_batch(pb::GetBatchRequest { batch_id: r.batch_id, ..Default::default() })
                    .await
                    .unwrap_or_else(|s| refused(s))
                    .into_inner();
                show_batch(&b, cli.json);
                let c = b.counts.unwrap_or_default();
                if b.state != "completed" || c.failed > 0 {
                    std::process::exit(1);
                }
            }
        }
        Command::Status { batch } => {
            let b = client
                .get_batch(pb::GetBatchRequest { batch_id: batch.clone(), ..Default::default() })
                .await
                .unwrap_or_else(|s| refused(s))
                .into_inner();
            show_batch(&b, cli.json);
        }
        Command::List { state, submitter, action, since, limit } => {
            let request = pb::ListBatchesRequest {
                states: state.clone(),
                submitter: submitter.clone().unwrap_or_default(),
                action: action.clone().unwrap_or_default(),
                created_from_ms: since.map(|d| now_ms() - d.as_millis() as i64),
                limit: *limit,
                ..Default::default()
            };
            let r = client.list_batches(request).await.unwrap_or_else(|s| refused(s)).into_inner();
            for b in &r.batches {
                show_batch(b, cli.json);
            }
        }
        Command::Stats { since, by } => {
            let request = pb::BatchStatsRequest {
                from_ms: Some(now_ms() - since.as_millis() as i64),
                until_ms: None,
                by: by.clone().unwrap_or_default(),
            };
            let r = client.batch_stats(request).await.unwrap_or_else(|s| refused(s)).into_inner();
            show_stats(&r, cli.json);
        }
        Command::Active => {
            let r = client.active_counts(pb::ActiveCountsRequest {}).await.unwrap_or_else(|s| refused(s)).into_inner();
            for s in &r.sites {
                if cli.json {
                    println!(
                        "{}",
                        serde_json::json!({"site": s.site, "hosts_in_flight": s.hosts_in_flight, "jobs_queued": s.jobs_queued,
                            "jobs_running": s.jobs_running, "jobs_waiting": s.jobs_waiting, "live_workers": s.live_workers})
                    );
                } else {
                    println!(
                        "{:<10} {} hosts in flight; jobs {} queued, {} running, {} waiting; {} live workers",
                        s.site, s.hosts_in_flight, s.jobs_queued, s.jobs_running, s.jobs_waiting, s.live_workers
                    );
                }
            }
        }
        Command::Tickets { limit } => {
            let r = client
                .list_tickets(pb::ListTicketsRequest { limit: *limit })
                .await
                .unwrap_or_else(|s| refused(s))
                .into_inner();
            for t in &r.tickets {
                if cli.json {
                    println!(
                        "{}",
                        serde_json::json!({"id": t.id, "kind": t.kind, "batch_id": t.batch_id, "host": t.host,
                            "step": t.step, "summary": t.summary, "at_ms": t.at_ms})
                    );
                } else {
                    println!("{} {:<14} {}", t.id, t.kind, t.summary);
                }
            }
        }
        Command::Hosts { command } => hosts(&mut client, command, cli.json).await,
        Command::Audit { principal, op, host, batch, since, before, limit } => {
            let request = pb::ListAuditRequest {
                principal: principal.clone().unwrap_or_default(),
                op: op.clone().unwrap_or_default(),
                host: host.clone().unwrap_or_default(),
                batch_id: batch.clone().unwrap_or_default(),
                from_ms: since.map_or(0, |d| now_ms() - d.as_millis() as i64),
                until_ms: 0,
                before_id: before.unwrap_or(0),
                limit: *limit,
            };
            let r = client.list_audit(request).await.unwrap_or_else(|s| refused(s)).into_inner();
            for e in &r.entries {
                if cli.json {
                    println!("{}", serde_json::to_string(e).unwrap_or_default());
                } else {
                    let at = maas_core::time::Timestamp::from_millis(e.at_ms);
                    let outcome = if e.accepted { "accepted".to_string() } else { format!("REFUSED: {}", e.error) };
                    let reason = if e.reason.is_empty() { String::new() } else { format!(" reason={:?}", e.reason) };
                    let forced = if e.forced { " FORCED" } else { "" };
                    println!(
                        "{:>6} {at} {:<12} {:<15} {} [{}]{reason}{forced} {outcome}",
                        e.id, e.principal, e.op, e.summary, e.hosts
                    );
                }
            }
        }
        Command::Images => {
            let r = client.list_images(pb::ListImagesRequest {}).await.unwrap_or_else(|s| refused(s)).into_inner();
            for i in &r.images {
                if cli.json {
                    println!(
                        "{}",
                        serde_json::json!({"name": i.name, "kind": i.kind, "firmware": i.firmware,
                            "has_config_template": i.has_config_template, "template_params": i.template_params})
                    );
                } else {
                    let params = if i.template_params.is_empty() {
                        String::new()
                    } else {
                        format!("  params: {}", i.template_params.join(", "))
                    };
                    println!("{:<24} {:<8} {:<7}{params}", i.name, i.kind, i.firmware);
                }
            }
        }
        Command::Completions { .. } => unreachable!("handled above"),
        Command::Cancel { batch, reason } => {
            let b = client
                .cancel_batch(pb::CancelBatchRequest { batch_id: batch.clone(), reason: reason.clone() })
                .await
                .unwrap_or_else(|s| refused(s))
                .into_inner();
            show_batch(&b, cli.json);
        }
        Command::Pause { batch } => {
            let b = client.pause_batch(pb::BatchRef { batch_id: batch.clone() }).await.unwrap_or_else(|s| refused(s));
            show_batch(&b.into_inner(), cli.json);
        }
        Command::Resume { batch } => {
            let b = client.resume_batch(pb::BatchRef { batch_id: batch.clone() }).await.unwrap_or_else(|s| refused(s));
            show_batch(&b.into_inner(), cli.json);
        }
        Command::Watch { batch, after } => {
            let mut events = client
                .watch_batch(pb::WatchBatchRequest { batch_id: batch.clone().unwrap_or_default(), after: *after })
                .await
                .unwrap_or_else(|s| refused(s))
                .into_inner();
            while let Some(e) = events.next().await {
                let e = e.unwrap_or_else(|s| refused(s));
                if cli.json {
                    println!(
                        "{}",
                        serde_json::json!({"seq": e.seq, "batch_id": e.batch_id, "at_ms": e.at_ms, "kind": e.kind, "event": serde_json::from_str::<serde_json::Value>(&e.json).unwrap_or_default()})
                    );
                } else {
                    println!("{:>8} {} {} {}", e.seq, e.batch_id, e.kind, e.json);
                }
            }
        }
    }
}
