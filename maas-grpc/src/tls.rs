//! Certificates and keys, loaded through rustls-pki-types' maintained `PemObject` API (the
//! design card's rustls-pemfile is archived and now only wraps it) and checked at startup:
//! a missing file, a file without a certificate or key, or a certificate outside its
//! validity period is an error naming the file, before any client connects.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No PEM certificate in the file.
    #[error("{path} holds no PEM certificate ({detail})")]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// No PEM private key in the file.
    #[error("{path} holds no PEM private key ({detail})")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The certificate is expired or not yet valid.
    #[error("the certificate in {path} is not valid now: valid from {not_before} to {not_after}")]
    NotValidNow {
        /// The file.
        path: PathBuf,
        /// Validity start.
        not_before: String,
        /// Validity end.
        not_after: String,
    },
    /// The certificate is not X.509 that rustls accepts.
    #[error("the certificate in {path} cannot be parsed: {detail}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

/// The certificates in a PEM file (leaf first), checked for validity now.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::NoCertificate { path: path.to_path_buf(), detail: e.to_string() })?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::NoCertificate { path: path.to_path_buf(), detail: "the file is empty".into() });
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| TlsError::BadCertificate { path: path.to_path_buf(), detail: e.to_string() })?;
    if !parsed.validity().is_valid() {
        return Err(TlsError::NotValidNow {
            path: path.to_path_buf(),
            not_before: parsed.validity().not_before.to_string(),
            not_after: parsed.validity().not_after.to_string(),
        });
    }
    Ok(certs)
}

/// Checks that a PEM file holds a private key.
pub fn check_key(path: &Path) -> Result<(), TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map(|_| ())
        .map_err(|e| TlsError::NoKey { path: path.to_path_buf(), detail: e.to_string() })
}

/// The files of one side of a TLS connection.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This side's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that signs the other side's certificates (PEM). For a server, `None` turns
    /// client certificates off (TLS without mTLS).
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    /// maasd's side, as `maasctl dev-certs` (and `[certs]` in the config) lays out `dir`:
    /// `server.pem`, `server-key.pem`, and `ca.pem` for its clients.
    pub fn server_in(dir: &Path) -> TlsFiles {
        TlsFiles { cert: dir.join("server.pem"), key: dir.join("server-key.pem"), ca: Some(dir.join("ca.pem")) }
    }

    fn identity(&self) -> Result<Identity, TlsError> {
        load_certs(&self.cert)?;
        check_key(&self.key)?;
        Ok(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
    }

    fn ca(&self) -> Result<Option<Certificate>, TlsError> {
        match &self.ca {
            Some(ca) => {
                load_certs(ca)?;
                Ok(Some(Certificate::from_pem(read(ca)?)))
            }
            None => Ok(None),
        }
    }

    /// A server config: this identity, and client certificates required from `ca`.
    pub fn server(&self) -> Result<ServerTlsConfig, TlsError> {
        let mut config = ServerTlsConfig::new().identity(self.identity()?);
        if let Some(ca) = self.ca()? {
            config = config.client_ca_root(ca).client_auth_optional(false);
        }
        Ok(config)
    }

    /// The same server side as a rustls configuration (ring), for the HTTPS listener (REST
    /// and console): this identity, client certificates required from `ca` when it is set,
    /// ALPN h2 and http/1.1.
    pub fn rustls_server(&self) -> Result<std::sync::Arc<rustls::ServerConfig>, TlsError> {
        let chain = load_certs(&self.cert)?;
        let bytes = read(&self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|e| TlsError::NoKey { path: self.key.clone(), detail: e.to_string() })?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let refused = |path: &Path, e: &dyn std::fmt::Display| TlsError::BadCertificate {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| refused(&self.cert, &e))?;
        let builder = match &self.ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in load_certs(ca)? {
                    roots.add(cert).map_err(|e| refused(ca, &e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| refused(ca, &e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| refused(&self.cert, &e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(std::sync::Arc::new(config))
    }

    /// A client config presenting this identity and trusting servers signed by `ca`.
    pub fn client(&self, server_name: &str) -> Result<ClientTlsConfig, TlsError> {
        let mut config = ClientTlsConfig::new().identity(self.identity()?).domain_name(server_name);
        if let Some(ca) = self.ca()? {
            config = config.ca_certificate(ca);
        }
        Ok(config)
    }
}
