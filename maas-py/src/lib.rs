//! maas-py: the Rust half of the Python package `maas` (pyo3, built by maturin), the
//! extension module `maas._native`.
//!
//! It is a transport, not a second API: a [`Session`] holds a tokio runtime and a
//! `maas.v1` client — over mTLS to a remote `maasd`, or in process to an embedded engine on
//! a simulated fleet ([`maas_grpc::embedded`]) — and moves requests and answers across as
//! the proto's JSON. The typed Python API (results, exceptions, paging, `wait` with its
//! progress bar) is the pure-Python half in `python/maas/`, so both modes share every
//! line of it.
//!
//! Every blocking call releases the GIL (`py.detach`), has a deadline, and gives Python a
//! chance to raise `KeyboardInterrupt` every 100 ms, so Ctrl-C interrupts it. Sessions are
//! shared between Python threads: each call clones the client, which multiplexes on one
//! connection.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maas_core::Rules;
use maas_grpc::client::{self, Client};
use maas_grpc::embedded::{Embedded, EmbeddedConfig};
use maas_grpc::pb;
use maas_grpc::tls::TlsFiles;
use maas_sim::{FaultPlan, MemStore};
use maas_store::{OpenOptions, SqlStore};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// How often a blocked call lets Python handle signals (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// Why a blocking call returned early.
enum Interrupted {
    /// The deadline passed.
    Deadline(Duration),
    /// Python raised (KeyboardInterrupt).
    Signal(PyErr),
}

/// The Python exception for a refused or failed call, built by `maas.errors._from_status`
/// so that the mapping from status to exception class lives in one (Python) place.
fn status_error(status: &tonic::Status) -> PyErr {
    status_error_with(status, client::rejection(status))
}

/// [`status_error`] with the refusal's whole report (fetched by a dry run when the status
/// carried only its first problems).
fn status_error_with(status: &tonic::Status, report: Option<pb::Rejection>) -> PyErr {
    let details = report.and_then(|r| serde_json::to_string(&r).ok());
    let code = format!("{:?}", status.code());
    Python::attach(|py| {
        let built = py
            .import("maas.errors")
            .and_then(|m| m.getattr("_from_status"))
            .and_then(|f| f.call1((code, status.message().to_string(), details)));
        match built {
            Ok(exception) => PyErr::from_value(exception),
            Err(e) => e,
        }
    })
}

fn local_error(kind: &str, message: String) -> PyErr {
    Python::attach(|py| {
        let built = py.import("maas.errors").and_then(|m| m.getattr(kind)).and_then(|c| c.call1((message,)));
        match built {
            Ok(exception) => PyErr::from_value(exception),
            Err(e) => e,
        }
    })
}

/// Runs `work` on `runtime` with the GIL released, until it finishes, `deadline` passes,
/// or Python raises on a signal.
fn block<T: Send>(
    py: Python<'_>,
    runtime: &tokio::runtime::Runtime,
    deadline: Option<Duration>,
    work: impl Future<Output = T> + Send,
) -> Result<T, Interrupted> {
    py.detach(|| {
        runtime.block_on(async {
            tokio::pin!(work);
            let expiry = async {
                match deadline {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(expiry);
            loop {
                tokio::select! {
                    done = &mut work => return Ok(done),
                    _ = &mut expiry => return Err(Interrupted::Deadline(deadline.unwrap_or_default())),
                    _ = tokio::time::sleep(SIGNAL_POLL) => {
                        if let Err(e) = Python::attach(|py| py.check_signals()) {
                            return Err(Interrupted::Signal(e));
                        }
                    }
                }
            }
        })
    })
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> PyResult<T> {
    serde_json::from_str(json).map_err(|e| local_error("ValidationError", format!("{what}: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| PyRuntimeError::new_err(format!("encoding an answer: {e}")))
}

/// A connection to maas: a remote `maasd` or an embedded engine. Not used directly: see
/// `maas.Client` and `maas.Engine`.
#[pyclass(frozen, module = "maas._native")]
struct Session {
    runtime: Arc<tokio::runtime::Runtime>,
    client: Client,
    timeout: Duration,
    description: String,
    embedded: Mutex<Option<Embedded>>,
}

fn runtime() -> PyResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("maas-py")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the I/O runtime: {e}")))
}

fn seconds(what: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| PyValueError::new_err(format!("{what} must be a positive number of seconds, not {s}")))
}

impl Session {
    /// Runs one call with the session's deadline, mapping every failure to a Python error.
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        work: impl Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send,
    ) -> PyResult<T> {
        match block(py, &self.runtime, Some(self.timeout), work) {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status_error(&status)),
            Err(Interrupted::Deadline(d)) => {
                Err(status_error(&tonic::Status::deadline_exceeded(format!("no answer within {d:?}"))))
            }
            Err(Interrupted::Signal(e)) => Err(e),
        }
    }

    fn shutdown(&self, py: Python<'_>) {
        let embedded = self.embedded.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(e) = embedded {
            let _ = block(py, &self.runtime, Some(Duration::from_secs(60)), e.shutdown());
        }
    }
}

#[pymethods]
impl Session {
    /// Connects to `maasd` at `address` (https://host:port) with a client certificate, its
    /// key and the CA that signed the server's certificate; with none of the three, in
    /// plaintext (a maasd started with --plaintext on loopback).
    #[staticmethod]
    #[pyo3(signature = (address, cert, key, ca, timeout))]
    fn connect(
        py: Python<'_>,
        address: &str,
        cert: Option<std::path::PathBuf>,
        key: Option<std::path::PathBuf>,
        ca: Option<std::path::PathBuf>,
        timeout: f64,
    ) -> PyResult<Session> {
        let timeout = seconds("timeout", timeout)?;
        let files = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key, ca }),
            (None, None) if ca.is_none() => None,
            _ => {
                return Err(local_error(
                    "ValidationError",
                    "give cert, key and ca together (mTLS), or none of them (plaintext)".into(),
                ));
            }
        };
        let runtime = runtime()?;
        let connecting = client::connect(address, files.as_ref(), timeout);
        let client = match block(py, &runtime, None, connecting) {
            Ok(Ok(c)) => c,
            Ok(Err(client::ConnectError::Unreachable { address, detail })) => {
                return Err(local_error("Unavailable", format!("cannot connect to {address}: {detail}")));
            }
            Ok(Err(e)) => return Err(local_error("ValidationError", e.to_string())),
            Err(Interrupted::Signal(e)) => return Err(e),
            Err(Interrupted::Deadline(_)) => unreachable!("no deadline was set"),
        };
        let security = if files.is_some() { "mTLS" } else { "plaintext" };
        Ok(Session {
            runtime: Arc::new(runtime),
            client,
            timeout,
            description: format!("{address} ({security})"),
            embedded: Mutex::new(None),
        })
    }

    /// Starts an embedded engine: the store at `db` (a SQLite file; None keeps everything
    /// in memory), `sites` × `hosts_per_site` simulated hosts, `workers_per_site` workers.
    /// `faults` may set busy, timeout, wrong_state, install_failure (probabilities) and
    /// install_seconds ((min, max)).
    #[staticmethod]
    #[pyo3(signature = (db, sites, hosts_per_site, workers_per_site, user, seed, faults, timeout))]
    #[allow(clippy::too_many_arguments)]
    fn embedded(
        py: Python<'_>,
        db: Option<String>,
        sites: usize,
        hosts_per_site: usize,
        workers_per_site: usize,
        user: String,
        seed: u64,
        faults: Option<&Bound<'_, PyDict>>,
        timeout: f64,
    ) -> PyResult<Session> {
        let timeout = seconds("timeout", timeout)?;
        if sites == 0 || hosts_per_site == 0 || workers_per_site == 0 {
            return Err(local_error(
                "ValidationError",
                format!(
                    "sites, hosts_per_site and workers_per_site must be at least 1 (got {sites}, {hosts_per_site}, {workers_per_site})"
                ),
            ));
        }
        if sites > 99 || sites.saturating_mul(hosts_per_site) > 1_000_000 {
            return Err(local_error("ValidationError", "at most 99 sites and 1,000,000 simulated hosts".into()));
        }
        let config = EmbeddedConfig {
            sites,
            hosts_per_site,
            workers_per_site,
            user,
            faults: fault_plan(faults, EmbeddedConfig::default().faults)?,
            seed,
        };
        let runtime = runtime()?;
        let description = match &db {
            Some(path) => format!("embedded engine on sqlite://{path}"),
            None => "embedded engine in memory".to_string(),
        };
        let starting = async move {
            match db {
                Some(path) => {
                    let url = format!("sqlite://{path}");
                    let store = SqlStore::open(&url, &OpenOptions::default(), Rules::default())
                        .await
                        .map_err(|e| format!("{url}: {e}"))?;
                    Embedded::start(Arc::new(store), &config).await.map_err(|e| e.to_string())
                }
                None => {
                    Embedded::start(Arc::new(MemStore::new(Rules::default())), &config).await.map_err(|e| e.to_string())
                }
            }
        };
        let embedded = match block(py, &runtime, None, starting) {
            Ok(Ok(e)) => e,
            Ok(Err(message)) => return Err(local_error("Unavailable", message)),
            Err(Interrupted::Signal(e)) => return Err(e),
            Err(Interrupted::Deadline(_)) => unreachable!("no deadline was set"),
        };
        Ok(Session {
            runtime: Arc::new(runtime),
            client: embedded.client(),
            timeout,
            description,
            embedded: Mutex::new(Some(embedded)),
        })
    }

    /// Submits (or, with `dry_run` in the request, checks) a batch. `request` is a
    /// SubmitBatchRequest as JSON without its action and priority, which are named.
    fn submit(&self, py: Python<'_>, request: &str, action: &str, priority: &str) -> PyResult<String> {
        let mut r: pb::SubmitBatchRequest = parse("submit", request)?;
        r.action = Some(client::action(action).map_err(|e| local_error("ValidationError", e.to_string()))?);
        r.priority = client::priority(priority).map_err(|e| local_error("ValidationError", e.to_string()))? as i32;
        let mut c = self.client.clone();
        let answer = self.run(py, async move {
            let outcome = match c.submit_batch(r.clone()).await {
                Ok(answer) => Ok(answer.into_inner()),
                // A large refusal carries its first problems; a dry run returns them all.
                Err(status) => {
                    let report = client::full_rejection(&mut c, &r, &status).await;
                    Err((status, report))
                }
            };
            Ok(tonic::Response::new(outcome))
        })?;
        match answer {
            Ok(a) => to_json(&a),
            Err((status, report)) => Err(status_error_with(&status, report)),
        }
    }

    /// Calls the unary RPC `method` (its proto name) with `request` as JSON; the answer is
    /// JSON.
    fn call(&self, py: Python<'_>, method: &str, request: &str) -> PyResult<String> {
        let mut c = self.client.clone();
        macro_rules! rpcs {
            ($($name:literal => $rpc:ident($request:ident)),* $(,)?) => {
                match method {
                    $($name => {
                        let r: pb::$request = parse(method, request)?;
                        to_json(&self.run(py, async move { c.$rpc(r).await })?)
                    })*
                    other => Err(PyValueError::new_err(format!("no RPC {other:?}"))),
                }
            };
        }
        rpcs! {
            "GetBatch" => get_batch(GetBatchRequest),
            "ListBatches" => list_batches(ListBatchesRequest),
            "CancelBatch" => cancel_batch(CancelBatchRequest),
            "PauseBatch" => pause_batch(BatchRef),
            "ResumeBatch" => resume_batch(BatchRef),
            "BatchStats" => batch_stats(BatchStatsRequest),
            "ActiveCounts" => active_counts(ActiveCountsRequest),
            "ListTickets" => list_tickets(ListTicketsRequest),
            "ImportHosts" => import_hosts(ImportHostsRequest),
            "ListHosts" => list_hosts(ListHostsRequest),
            "SetHostState" => set_host_state(SetHostStateRequest),
            "ListAudit" => list_audit(ListAuditRequest),
            "GetPoolKinds" => get_pool_kinds(PoolRef),
            "SetPoolKinds" => set_pool_kinds(PoolKinds),
            "ReportInstallResult" => report_install_result(ReportInstallResultRequest),
        }
    }

    /// The events of `batch_id` (every batch when empty) after position `after`.
    fn watch(&self, py: Python<'_>, batch_id: String, after: u64) -> PyResult<EventStream> {
        let mut c = self.client.clone();
        let stream = self.run(py, async move { c.watch_batch(pb::WatchBatchRequest { batch_id, after }).await })?;
        Ok(EventStream { runtime: self.runtime.clone(), stream: Mutex::new(Some(stream)) })
    }

    /// Stops an embedded engine's workers (handing unfinished jobs back to the store).
    /// Further calls fail. A remote session just drops its connection.
    fn close(&self, py: Python<'_>) {
        self.shutdown(py);
    }

    /// Where this session goes.
    #[getter]
    fn description(&self) -> String {
        self.description.clone()
    }

    /// Whether this is an embedded engine.
    #[getter]
    fn is_embedded(&self) -> bool {
        self.embedded.lock().map(|e| e.is_some()).unwrap_or(false)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(e) = self.embedded.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            let runtime = self.runtime.clone();
            // Not inside the runtime (Python drops sessions on its own threads).
            let _ = std::thread::spawn(move || runtime.block_on(e.shutdown())).join();
        }
    }
}

fn fault_plan(faults: Option<&Bound<'_, PyDict>>, base: FaultPlan) -> PyResult<FaultPlan> {
    let mut plan = base;
    let Some(faults) = faults else { return Ok(plan) };
    let bad = |m: String| local_error("ValidationError", m);
    for (key, value) in faults.iter() {
        let key: String = key.extract().map_err(|_| bad("faults: keys are strings".into()))?;
        let probability = |target: &mut f64| -> PyResult<()> {
            let p: f64 = value.extract().map_err(|_| bad(format!("faults[{key:?}] must be a number")))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(bad(format!("faults[{key:?}] = {p} is not a probability (0 to 1)")));
            }
            *target = p;
            Ok(())
        };
        match key.as_str() {
            "busy" => probability(&mut plan.busy)?,
            "timeout" => probability(&mut plan.timeout)?,
            "wrong_state" => probability(&mut plan.wrong_state)?,
            "install_failure" => probability(&mut plan.install_failure)?,
            "install_seconds" => {
                let (low, high): (f64, f64) =
                    value.extract().map_err(|_| bad("faults[\"install_seconds\"] must be (min, max)".into()))?;
                let (Ok(min), Ok(max)) = (Duration::try_from_secs_f64(low), Duration::try_from_secs_f64(high)) else {
                    return Err(bad(format!("faults[\"install_seconds\"] = ({low}, {high}) are not durations")));
                };
                if min > max {
                    return Err(bad(format!("faults[\"install_seconds\"]: min {low} is above max {high}")));
                }
                (plan.install_min, plan.install_max) = (min, max);
            }
            other => {
                return Err(bad(format!(
                    "faults: unknown key {other:?} (busy, timeout, wrong_state, install_failure, install_seconds)"
                )));
            }
        }
    }
    Ok(plan)
}

/// A batch's events as they happen. Not used directly: see `maas.Client.watch`.
#[pyclass(frozen, module = "maas._native")]
struct EventStream {
    runtime: Arc<tokio::runtime::Runtime>,
    stream: Mutex<Option<tonic::Streaming<pb::Event>>>,
}

#[pymethods]
impl EventStream {
    /// The next event as JSON, waiting at most `timeout` seconds: `("event", json)`,
    /// `("idle", None)` when none came in time, `("end", None)` once the stream has ended
    /// (the batch finished).
    fn next(&self, py: Python<'_>, timeout: f64) -> PyResult<(&'static str, Option<String>)> {
        let timeout = seconds("timeout", timeout)?;
        let mut guard = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        let Some(stream) = guard.as_mut() else { return Ok(("end", None)) };
        match block(py, &self.runtime, Some(timeout), stream.message()) {
            Ok(Ok(Some(event))) => Ok(("event", Some(to_json(&event)?))),
            Ok(Ok(None)) => {
                *guard = None;
                Ok(("end", None))
            }
            Ok(Err(status)) => {
                *guard = None;
                Err(status_error(&status))
            }
            Err(Interrupted::Deadline(_)) => Ok(("idle", None)),
            Err(Interrupted::Signal(e)) => Err(e),
        }
    }

    /// Stops listening.
    fn close(&self) {
        self.stream.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// The Rust half of the `maas` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Session>()?;
    m.add_class::<EventStream>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
