//! Development certificates: a CA, a server certificate (for `localhost`, 127.0.0.1 and
//! ::1) and client certificates, written as PEM files, so a new user runs mTLS in one step
//! (`maasctl dev-certs DIR`). Not for production: the CA key sits next to the certificates.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// rcgen refused.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// Files could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A certificate authority in memory.
pub struct DevCa {
    params: CertificateParams,
    key: KeyPair,
    cert: rcgen::Certificate,
}

fn write(path: PathBuf, text: &str) -> Result<(), DevCertError> {
    std::fs::write(&path, text).map_err(|source| DevCertError::Write { path, source })
}

impl DevCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<DevCa, DevCertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(DevCa { params, key, cert })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    fn issue(&self, params: CertificateParams) -> Result<(String, String), DevCertError> {
        let key = KeyPair::generate()?;
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A server certificate for the loopback names (and `extra` DNS names): (cert, key) PEM.
    pub fn server(&self, extra: &[String]) -> Result<(String, String), DevCertError> {
        let mut names = vec!["localhost".to_string()];
        names.extend(extra.iter().cloned());
        let mut params = CertificateParams::new(names)?;
        params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().expect("literal")));
        params.subject_alt_names.push(SanType::IpAddress("::1".parse().expect("literal")));
        params.distinguished_name.push(DnType::CommonName, "maasd");
        self.issue(params)
    }

    /// A client certificate for principal `name` with organizational unit `ou`.
    pub fn client(&self, name: &str, ou: Option<&str>) -> Result<(String, String), DevCertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(ou) = ou {
            params.distinguished_name.push(DnType::OrganizationalUnitName, ou);
        }
        self.issue(params)
    }
}

/// Writes `ca.pem`, `server.pem`/`server-key.pem` and, per principal, `NAME.pem`/`NAME-key.pem`
/// into `dir`. Returns the files written.
pub fn write_dev_certs(dir: &Path, clients: &[&str]) -> Result<Vec<PathBuf>, DevCertError> {
    std::fs::create_dir_all(dir).map_err(|source| DevCertError::Write { path: dir.to_path_buf(), source })?;
    let ca = DevCa::new("maas development CA")?;
    let mut written = Vec::new();
    let mut put = |name: &str, text: &str| -> Result<(), DevCertError> {
        let path = dir.join(name);
        write(path.clone(), text)?;
        written.push(path);
        Ok(())
    };
    put("ca.pem", &ca.cert_pem())?;
    let (cert, key) = ca.server(&[])?;
    put("server.pem", &cert)?;
    put("server-key.pem", &key)?;
    for name in clients {
        let (cert, key) = ca.client(name, None)?;
        put(&format!("{name}.pem"), &cert)?;
        put(&format!("{name}-key.pem"), &key)?;
    }
    Ok(written)
}
