//! `maasctl`: the command line for maas's gRPC API.
//!
//! Exit codes: 0 success; 1 the request was refused (rejected, denied, not found) or a
//! waited-for batch did not complete; 2 usage or connection errors.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures::StreamExt;
use maas_grpc::pb::maas_client::MaasClient;
use maas_grpc::pb::{self, action::Kind};
use maas_grpc::tls::TlsFiles;
use prost::Message;
use tonic::transport::{Channel, Endpoint};

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
    },
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
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
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

fn usage(message: impl std::fmt::Display) -> ! {
    eprintln!("maasctl: {message}");
    std::process::exit(2);
}

fn refused(status: tonic::Status) -> ! {
    eprintln!("maasctl: {}", status.message());
    if let Ok(r) = pb::Rejection::decode(status.details()) {
        for c in &r.conflicts {
            eprintln!("  conflict: {} is held by batch {}", c.hostname, c.batch_id);
        }
    }
    let code = match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unauthenticated | tonic::Code::Unknown => 2,
        _ => 1,
    };
    std::process::exit(code);
}

async fn connect(cli: &Cli) -> MaasClient<Channel> {
    let mut endpoint = Endpoint::from_shared(cli.server.clone()).unwrap_or_else(|e| usage(format!("--server: {e}")));
    if !cli.plaintext {
        let host = endpoint.uri().host().unwrap_or("localhost").to_string();
        let files = TlsFiles {
            cert: cli.certs.join(format!("{}.pem", cli.user)),
            key: cli.certs.join(format!("{}-key.pem", cli.user)),
            ca: Some(cli.certs.join("ca.pem")),
        };
        let tls = files.client(&host).unwrap_or_else(|e| usage(e));
        endpoint = endpoint.tls_config(tls).unwrap_or_else(|e| usage(format!("TLS: {e}")));
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| usage(format!("cannot connect to {}: {e}", cli.server)));
    MaasClient::new(channel)
}

fn action(spec: &str) -> pb::Action {
    let kind = match spec {
        "reboot" => Kind::Reboot(pb::action::Reboot { soft: false }),
        "reboot-soft" => Kind::Reboot(pb::action::Reboot { soft: true }),
        "power-on" => Kind::PowerOn(pb::action::PowerOn {}),
        "power-off" => Kind::PowerOff(pb::action::PowerOff { soft: false }),
        "power-off-soft" => Kind::PowerOff(pb::action::PowerOff { soft: true }),
        "power-cycle" => Kind::PowerCycle(pb::action::PowerCycle {}),
        "wipe" => Kind::WipeDisks(pb::action::Wipe { method: 0 }),
        "decommission" => Kind::Decommission(pb::action::Wipe { method: 0 }),
        other => match other.strip_prefix("reimage:") {
            Some(os) => Kind::Reimage(pb::action::Reimage { os: os.to_string(), install_timeout_secs: None }),
            None => usage(format!("unknown action {other:?} (reimage:OS, reboot, power-on, ...)")),
        },
    };
    pb::Action { kind: Some(kind) }
}

fn priority(p: &str) -> i32 {
    (match p {
        "low" => pb::Priority::Low,
        "normal" => pb::Priority::Normal,
        "high" => pb::Priority::High,
        "urgent" => pb::Priority::Urgent,
        other => usage(format!("unknown priority {other:?} (low, normal, high, urgent)")),
    }) as i32
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

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Command::DevCerts { dir, clients } = &cli.command {
        let names: Vec<&str> = clients.iter().map(String::as_str).collect();
        let written = maas_grpc::devcerts::write_dev_certs(dir, &names).unwrap_or_else(|e| usage(e));
        for f in written {
            println!("{}", f.display());
        }
        return;
    }
    let mut client = connect(&cli).await;
    match &cli.command {
        Command::DevCerts { .. } => unreachable!("handled above"),
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
        } => {
            let request = pb::SubmitBatchRequest {
                action: Some(action(a)),
                hosts: hosts.clone(),
                priority: priority(p),
                max_in_flight: *max_in_flight,
                failure_budget: *failure_budget,
                idempotency_key: idempotency_key.clone(),
                force_reason: force.clone(),
                dry_run: *dry_run,
                ..Default::default()
            };
            let r = client.submit_batch(request).await.unwrap_or_else(|s| refused(s)).into_inner();
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"batch_id": r.batch_id, "created": r.created, "warnings": r.warnings,
                        "acceptable": r.acceptable, "hosts": r.expanded_hosts, "plan": r.plan,
                        "problems": r.problems.as_ref().map(|p| p.summary.clone())})
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
                while let Some(e) = events.next().await {
                    let e = e.unwrap_or_else(|s| refused(s));
                    if !cli.json {
                        eprintln!("{} {}", e.kind, e.json);
                    }
                }
                let b = client
                    .get_batch(pb::GetBatchRequest { batch_id: r.batch_id, hostnames: vec![] })
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
                .get_batch(pb::GetBatchRequest { batch_id: batch.clone(), hostnames: vec![] })
                .await
                .unwrap_or_else(|s| refused(s))
                .into_inner();
            show_batch(&b, cli.json);
        }
        Command::List { state, limit } => {
            let r = client
                .list_batches(pb::ListBatchesRequest { states: state.clone(), limit: *limit, ..Default::default() })
                .await
                .unwrap_or_else(|s| refused(s))
                .into_inner();
            for b in &r.batches {
                show_batch(b, cli.json);
            }
        }
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
