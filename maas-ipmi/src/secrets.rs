//! Credential sources for the `Secrets` seam: environment variables or a file, looked up
//! by a host's `credentials_ref` (one reference per BMC or per pool, as the inventory
//! says). Lookups read the source each time, so rotated credentials apply to the next
//! session. Errors name the reference, never a secret.

use std::path::PathBuf;

use async_trait::async_trait;
use maas_core::ports::services::{Credentials, Secrets, SecretsError};

/// The same credentials for every reference (a lab, a simulator fleet).
pub struct StaticSecrets {
    username: String,
    password: Vec<u8>,
}

impl std::fmt::Debug for StaticSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticSecrets").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

impl StaticSecrets {
    /// `username` / `password` for every BMC.
    pub fn new(username: impl Into<String>, password: impl Into<Vec<u8>>) -> Self {
        StaticSecrets { username: username.into(), password: password.into() }
    }
}

impl Drop for StaticSecrets {
    fn drop(&mut self) {
        self.password.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.password);
    }
}

#[async_trait]
impl Secrets for StaticSecrets {
    async fn credentials(&self, _reference: &str) -> Result<Credentials, SecretsError> {
        Ok(Credentials::new(self.username.clone(), self.password.clone()))
    }
}

/// `MAAS_BMC_<REF>_USER` and `MAAS_BMC_<REF>_PASSWORD`, where `<REF>` is the reference in
/// upper case with every other character than letters and digits turned into `_`.
#[derive(Debug, Clone, Default)]
pub struct EnvSecrets;

impl EnvSecrets {
    /// The variable names for `reference`.
    pub fn variables(reference: &str) -> (String, String) {
        let key: String =
            reference.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        (format!("MAAS_BMC_{key}_USER"), format!("MAAS_BMC_{key}_PASSWORD"))
    }
}

#[async_trait]
impl Secrets for EnvSecrets {
    async fn credentials(&self, reference: &str) -> Result<Credentials, SecretsError> {
        let (user, password) = Self::variables(reference);
        let missing =
            |var: &str| SecretsError { reference: reference.to_string(), detail: format!("{var} is not set") };
        let username = std::env::var(&user).map_err(|_| missing(&user))?;
        let password = std::env::var_os(&password).ok_or_else(|| missing(&password))?;
        Ok(Credentials::new(username, password.into_encoded_bytes()))
    }
}

/// A file of `reference user password` lines (the password is the rest of the line;
/// `#` starts a comment line). Keep it readable by the maas user only.
#[derive(Debug, Clone)]
pub struct FileSecrets {
    path: PathBuf,
}

impl FileSecrets {
    /// Credentials from `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSecrets { path: path.into() }
    }
}

#[async_trait]
impl Secrets for FileSecrets {
    async fn credentials(&self, reference: &str) -> Result<Credentials, SecretsError> {
        let fail = |detail: String| SecretsError { reference: reference.to_string(), detail };
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| fail(format!("cannot read {}: {}", self.path.display(), e.kind())))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(3, char::is_whitespace);
            let (Some(r), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(fail(format!(
                    "{} line {}: expected `reference user password`",
                    self.path.display(),
                    n + 1
                )));
            };
            if r == reference {
                return Ok(Credentials::new(user, password.trim_end_matches(['\r', '\n'])));
            }
        }
        Err(fail(format!("not in {}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_lookup_and_errors_without_secrets() {
        let path = std::env::temp_dir().join(format!("maas-secrets-{}", std::process::id()));
        std::fs::write(&path, "# comment\nrack-7 admin s3cret with spaces\nbroken-line\n").unwrap();
        let secrets = FileSecrets::new(&path);
        let c = secrets.credentials("rack-7").await.unwrap();
        assert_eq!((c.username.as_str(), c.password()), ("admin", &b"s3cret with spaces"[..]));
        let err = secrets.credentials("rack-9").await.unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn env_variable_names() {
        assert_eq!(
            EnvSecrets::variables("pool/web-1"),
            ("MAAS_BMC_POOL_WEB_1_USER".to_string(), "MAAS_BMC_POOL_WEB_1_PASSWORD".to_string())
        );
    }
}
