//! TLS to backend servers (`[pool.NAME] tls = { verify, ca, sni, client_cert }`).
//!
//! The certificate is verified against `ca` (a PEM bundle), or the system's bundle when `ca` is
//! not given, for the name `sni` (or the server's host name, or its IP address). `verify =
//! false` skips the certificate check, as HAProxy's `verify none`, for self-signed backends on
//! a trusted network; the handshake's signatures are still checked. Each shard resumes its own
//! sessions (see [`ClientTls::for_shard`]), so no lock is shared between shards.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Debian's bundle of the system's trusted CAs (package ca-certificates).
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Sessions each shard keeps for resumption, per pool.
const SESSIONS_PER_SHARD: usize = 256;

/// A pool's TLS towards its servers.
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    /// The name sent in SNI and verified; `None`: the server's host name, else its address.
    pub sni: Option<ServerName<'static>>,
    pub verify: bool,
    pub ca: Option<PathBuf>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("ca", &self.ca)
            .finish()
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &ClientTls) -> bool {
        self.sni == other.sni && self.verify == other.verify && self.ca == other.ca
    }
}

impl Eq for ClientTls {}

impl ClientTls {
    /// Build from the pool's keys; the error names the file at fault.
    pub fn build(
        verify: bool,
        ca: Option<&Path>,
        sni: Option<&str>,
        client_cert: Option<(&Path, &Path)>,
        alpn: &[&[u8]],
    ) -> Result<ClientTls, String> {
        let provider = Arc::new(super::provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if verify {
            let path = ca.unwrap_or(Path::new(SYSTEM_CA));
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e:?}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("{}: {e:?}", path.display()))?;
                roots.add(c).map_err(|e| {
                    format!("{}: a CA certificate cannot be used: {e}", path.display())
                })?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no CA certificate in the file", path.display()));
            }
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                    provider.signature_verification_algorithms,
                )))
        };
        let mut config = match client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| format!("{}: {e:?}", cert.display()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{}: {e:?}", cert.display()))?;
                let der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("{}: {e:?}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, der)
                    .map_err(|e| format!("{}: {e}", key.display()))?
            }
        };
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let sni = match sni {
            None => None,
            Some(name) => Some(
                ServerName::try_from(name.to_string())
                    .map_err(|_| format!("{name:?} is not a DNS name or an IP address"))?,
            ),
        };
        Ok(ClientTls {
            config: Arc::new(config),
            sni,
            verify,
            ca: ca.map(Path::to_path_buf),
        })
    }

    /// This pool's config for one shard: the same settings with a session cache of its own.
    pub fn for_shard(&self) -> Arc<ClientConfig> {
        let mut c = (*self.config).clone();
        c.resumption = Resumption::in_memory_sessions(SESSIONS_PER_SHARD);
        Arc::new(c)
    }

    /// The name to present and verify for a server at `addr`, known as `host` if given.
    pub fn name_for(&self, host: Option<&str>, addr: std::net::SocketAddr) -> ServerName<'static> {
        if let Some(n) = &self.sni {
            return n.clone();
        }
        if let Some(n) = host.and_then(|h| ServerName::try_from(h.to_string()).ok()) {
            return n;
        }
        ServerName::IpAddress(addr.ip().into())
    }
}

/// `verify = false`: any certificate, but signatures still checked (the peer holds the key of
/// the certificate it sent).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
