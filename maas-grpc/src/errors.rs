//! The shells' own errors, typed: a bad configuration, a bad word on the command line, a bad
//! webhook URL, a process-wide facility that could not be installed. Each names what is
//! wrong; the binaries print them and exit with status 2.

use std::path::PathBuf;

/// maasd's configuration is unreadable or inconsistent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse, or names an unknown key or a bad value.
    #[error("{}{message}", path.as_ref().map(|p| format!("config {}: ", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// The parser's report (it names the key and the line).
        message: String,
    },
    /// One setting is invalid.
    #[error("{key}: {message}")]
    Setting {
        /// The setting, as written in the file (`workers.pools`, `metrics.listen`).
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// Every inconsistency [`crate::config::Config::check`] found, at once.
    #[error("{}", problems.join("; "))]
    Invalid {
        /// One line per problem.
        problems: Vec<String>,
    },
}

/// A word a shell accepts (an action, a priority class) was not one it knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {input:?}: expected {expected}")]
pub struct UnknownWord {
    /// What kind of word (`action`, `priority`).
    pub what: &'static str,
    /// What was given.
    pub input: String,
    /// The words accepted.
    pub expected: &'static str,
}

/// A webhook URL maas cannot POST to, or the trust it needs cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook URL {url:?}: {reason}")]
pub struct WebhookUrlError {
    /// The URL.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A process-wide facility (the log subscriber, the metrics recorder) could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct SetupError {
    /// What was being set up, with the value that failed (`log level "x"`).
    pub what: String,
    /// Why.
    pub message: String,
}
