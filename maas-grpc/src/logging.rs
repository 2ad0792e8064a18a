//! Structured logs through `tracing`: human-readable lines or one JSON object per line, to
//! stderr, filtered by a tracing filter (`info`, `warn,maas_grpc=debug`). `RUST_LOG`, when
//! set, wins over the configured filter.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::errors::SetupError;

/// Installs the global subscriber. Errors name a bad filter.
pub fn init(format: LogFormat, level: &str) -> Result<(), SetupError> {
    let bad = |what: String, e: &dyn std::fmt::Display| SetupError { what, message: e.to_string() };
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(&v).map_err(|e| bad(format!("RUST_LOG {v:?}"), &e))?,
        _ => EnvFilter::try_new(level).map_err(|e| bad(format!("log level {level:?}"), &e))?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    installed.map_err(|e| bad("installing the log subscriber".into(), &e))
}
