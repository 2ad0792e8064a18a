//! Development certificates: a CA, a server certificate (for `localhost`, 127.0.0.1 and
//! ::1) and client certificates, written as PEM files, so a new user runs mTLS in one step
//! (`maasctl dev-certs DIR`). Not for production: the CA key sits next to the certificates.
//!
//! Running it again on the same directory adds what is missing and keeps what is there:
//! the CA (`ca.pem` with its key `ca-key.pem`) signs the new client certificates, so a
//! running maasd and the existing clients keep working. Replacing the CA takes `force`.
//! Private keys are written readable by their owner only (0600).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// rcgen refused.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// Files could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory has a CA certificate but not its key, so nothing more can be signed.
    #[error(
        "{}: the CA certificate is there without its key (ca-key.pem); pass --force to make a new CA \
         (every certificate signed by the old one stops working)",
        dir.display()
    )]
    CaKeyMissing {
        /// The directory.
        dir: PathBuf,
    },
    /// The CA files do not parse.
    #[error("{}: {message}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// A certificate authority in memory.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// What [`write_dev_certs_with`] did.
#[derive(Debug, Default)]
pub struct DevCertsWritten {
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files that were there and were kept.
    pub kept: Vec<PathBuf>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DevCertError + '_ {
    move |source| DevCertError::Io { path: path.to_path_buf(), source }
}

/// Writes `text` to `path`; a private key (`secret`) is readable by its owner only.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), DevCertError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(io(path))?;
    // An existing file keeps its mode on open: set it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io(path))?;
    }
    file.write_all(text.as_bytes()).map_err(io(path))
}

impl DevCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<DevCa, DevCertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(DevCa { issuer: Issuer::new(params, key), cert_pem })
    }

    /// The CA in `cert_pem` with its private key `key_pem`.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<DevCa, DevCertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(DevCa { issuer, cert_pem: cert_pem.to_string() })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA's private key (PEM).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    fn issue(&self, params: CertificateParams) -> Result<(String, String), DevCertError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
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

/// Writes `ca.pem`/`ca-key.pem`, `server.pem`/`server-key.pem` and, per principal,
/// `NAME.pem`/`NAME-key.pem` into `dir`, keeping what is already there. Returns the files
/// written.
pub fn write_dev_certs(dir: &Path, clients: &[&str]) -> Result<Vec<PathBuf>, DevCertError> {
    Ok(write_dev_certs_with(dir, clients, false)?.written)
}

/// [`write_dev_certs`]; with `force`, a new CA and every certificate made again.
pub fn write_dev_certs_with(dir: &Path, clients: &[&str], force: bool) -> Result<DevCertsWritten, DevCertError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let mut done = DevCertsWritten::default();
    let existing = !force && ca_cert.exists();
    let ca = if existing {
        if !ca_key.exists() {
            return Err(DevCertError::CaKeyMissing { dir: dir.to_path_buf() });
        }
        let cert = std::fs::read_to_string(&ca_cert).map_err(io(&ca_cert))?;
        let key = std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
        let ca = DevCa::from_pem(&cert, &key)
            .map_err(|e| DevCertError::BadCa { path: ca_cert.clone(), message: e.to_string() })?;
        done.kept.extend([ca_cert, ca_key]);
        ca
    } else {
        let ca = DevCa::new("maas development CA")?;
        write(&ca_key, &ca.key_pem(), true)?;
        write(&ca_cert, &ca.cert_pem(), false)?;
        done.written.extend([ca_key, ca_cert]);
        ca
    };
    let mut pair = |name: &str, make: &dyn Fn() -> Result<(String, String), DevCertError>| {
        let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        if existing && cert_path.exists() && key_path.exists() {
            done.kept.extend([cert_path, key_path]);
            return Ok(());
        }
        let (cert, key) = make()?;
        write(&key_path, &key, true)?;
        write(&cert_path, &cert, false)?;
        done.written.extend([cert_path, key_path]);
        Ok::<(), DevCertError>(())
    };
    pair("server", &|| ca.server(&[]))?;
    for name in clients {
        pair(name, &|| ca.client(name, None))?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_adds_clients_under_the_same_ca_and_keys_are_private() {
        let dir = std::env::temp_dir().join(format!("maas-devcerts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_dev_certs(&dir, &["alice"]).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let (ca, server, alice) = (read("ca.pem"), read("server.pem"), read("alice.pem"));
        let again = write_dev_certs_with(&dir, &["alice", "bob"], false).unwrap();
        assert_eq!(again.written, [dir.join("bob.pem"), dir.join("bob-key.pem")]);
        assert_eq!((read("ca.pem"), read("server.pem"), read("alice.pem")), (ca.clone(), server, alice));
        // bob's certificate is signed by the same CA.
        let (_, bob) = x509_parser::pem::parse_x509_pem(read("bob.pem").as_bytes()).unwrap();
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(ca.as_bytes()).unwrap();
        let (bob, ca_cert) = (bob.parse_x509().unwrap(), ca_pem.parse_x509().unwrap());
        bob.verify_signature(Some(ca_cert.public_key())).expect("signed by the kept CA");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in ["ca-key.pem", "server-key.pem", "alice-key.pem", "bob-key.pem"] {
                let mode = std::fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{key}");
            }
        }
        // --force makes a new CA; a CA without its key is not silently replaced.
        write_dev_certs_with(&dir, &["alice"], true).unwrap();
        assert_ne!(read("ca.pem"), ca);
        std::fs::remove_file(dir.join("ca-key.pem")).unwrap();
        let e = write_dev_certs(&dir, &["carol"]).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
