//! Whom a BMC's certificate must satisfy, per the inventory's [`BmcTls`]: the default CA
//! bundle (a site's BMC CA, or the system's roots), a named CA bundle, a pinned SHA-256
//! fingerprint of the leaf certificate, or nothing at all (an explicit per-host opt-in the
//! driver logs on every connection). One rustls provider (ring) for all of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use maas_core::host::BmcTls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Why the TLS settings could not be loaded (a CA file missing, unreadable or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustError(pub String);

impl std::fmt::Display for TrustError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TrustError {}

/// Where BMC certificates chain to: the default bundle and the named ones.
#[derive(Debug, Clone, Default)]
pub struct TrustConfig {
    /// The CA bundle (PEM) BMCs with the default setting chain to; `None`: the system's
    /// root certificates.
    pub ca_file: Option<PathBuf>,
    /// Named CA bundles (PEM) that hosts select with `ca:NAME` (a site's, a vendor's).
    pub bundles: HashMap<String, PathBuf>,
}

/// The loaded TLS client configurations, one per setting in use.
pub(crate) struct Trust {
    provider: Arc<CryptoProvider>,
    default: Arc<ClientConfig>,
    bundles: HashMap<String, Arc<ClientConfig>>,
    insecure: Arc<ClientConfig>,
}

fn roots_from(path: &Path) -> Result<RootCertStore, TrustError> {
    let bad = |e: String| TrustError(format!("CA file {}: {e}", path.display()));
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(path).and_then(|c| c.collect()).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TrustError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    for cert in found.certs {
        // A system bundle may hold certificates rustls cannot use; the rest serve.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(TrustError(format!(
            "no system root certificates found ({:?}): set the Redfish ca_file",
            found.errors
        )));
    }
    Ok(roots)
}

impl Trust {
    /// Loads every bundle now, so that a bad path is refused at start, naming it.
    pub(crate) fn load(config: &TrustConfig) -> Result<Self, TrustError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chained = |roots: RootCertStore| -> Result<Arc<ClientConfig>, TrustError> {
            Ok(Arc::new(
                ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TrustError(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ))
        };
        let default = match &config.ca_file {
            Some(path) => chained(roots_from(path)?)?,
            // The system's roots; a machine without any leaves the store empty, so hosts
            // with the default setting are refused with a certificate error naming the BMC.
            None => chained(system_roots().unwrap_or_else(|_| RootCertStore::empty()))?,
        };
        let mut bundles = HashMap::new();
        for (name, path) in &config.bundles {
            bundles.insert(name.clone(), chained(roots_from(path).map_err(|e| TrustError(format!("{name}: {e}")))?)?);
        }
        let insecure = Self::custom(&provider, Arc::new(Leaf { pin: None, provider: provider.clone() }))?;
        Ok(Trust { provider, default, bundles, insecure })
    }

    fn custom(
        provider: &Arc<CryptoProvider>,
        verifier: Arc<dyn ServerCertVerifier>,
    ) -> Result<Arc<ClientConfig>, TrustError> {
        Ok(Arc::new(
            ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| TrustError(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth(),
        ))
    }

    /// The client configuration for a BMC with setting `tls`.
    pub(crate) fn client(&self, tls: &BmcTls) -> Result<Arc<ClientConfig>, String> {
        match tls {
            BmcTls::Verify => Ok(self.default.clone()),
            BmcTls::Bundle(name) => self.bundles.get(name).cloned().ok_or_else(|| {
                let mut known: Vec<&str> = self.bundles.keys().map(String::as_str).collect();
                known.sort_unstable();
                format!("no CA bundle named {name:?} is configured (known: {})", known.join(", "))
            }),
            BmcTls::Pinned(pin) => {
                Self::custom(&self.provider, Arc::new(Leaf { pin: Some(*pin), provider: self.provider.clone() }))
                    .map_err(|e| e.0)
            }
            BmcTls::Insecure => Ok(self.insecure.clone()),
        }
    }
}

/// The SHA-256 fingerprint of a DER certificate, as `sha256:` and lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    format!("sha256:{}", digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Accepts the leaf certificate whose SHA-256 is `pin`, or any certificate without one
/// (`insecure`); the handshake's signatures are checked with the certificate's key either way.
#[derive(Debug)]
struct Leaf {
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Leaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else { return Ok(ServerCertVerified::assertion()) };
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if got.as_ref() == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "its fingerprint {} is not the pinned sha256:{}",
                fingerprint(end_entity.as_ref()),
                pin.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
