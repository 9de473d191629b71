//! TLS termination with rustls (ring provider): what a frontend's `tls = {...}` becomes.
//!
//! - [`certs`]: PEM files, the names a certificate covers, the SNI resolver.
//! - [`tickets`]: session-ticket keys every shard shares, rotated without a lock.
//! - The session itself, and its cancel-safe socket I/O, is [`crate::rt::TlsStream`].
//!
//! A frontend's [`ServerTls`] is built when the config is, so `--check`, a start and a reload
//! all read the certificate files and name the one that is wrong; `ctl 'reload certs'` builds
//! them again from the same files. The rustls config is shared by every shard (it holds no
//! lock a handshake takes: tickets are ours, and there is no session cache to lock).
//!
//! Kernel TLS: see [`ktls_support`]. This build always runs TLS in user space.

pub mod certs;
pub mod client;
pub mod tickets;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::ServerConfig;

pub use client::ClientTls;
pub use tickets::Ticketer;

/// The crypto provider every TLS config uses.
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

static TICKETER: OnceLock<Result<Arc<Ticketer>, String>> = OnceLock::new();

/// The process's ticket keys (made on first use; shared by every frontend, shard and reload).
pub fn ticketer() -> Result<Arc<Ticketer>, String> {
    TICKETER.get_or_init(Ticketer::new).clone()
}

/// Where a certificate of a frontend comes from (kept to load it again on `reload certs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ocsp: Option<PathBuf>,
}

/// `ktls = "auto" | "off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ktls {
    Auto,
    Off,
}

/// The TLS versions a frontend offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub tls12: bool,
    pub tls13: bool,
}

/// A frontend's TLS: its rustls config and what the proxy adds around it.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub certs: Vec<CertPaths>,
    /// Every DNS name the certificates cover, for `show config` and the docs.
    pub names: Vec<String>,
    pub handshake_timeout: Duration,
    /// `Strict-Transport-Security` value for every answer (HTTP only).
    pub hsts: Option<String>,
    pub ktls: Ktls,
    pub versions: Versions,
    pub alpn: Vec<Vec<u8>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("certs", &self.certs)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("hsts", &self.hsts)
            .field("ktls", &self.ktls)
            .finish()
    }
}

impl ServerTls {
    /// Load every certificate and build the rustls config. The error names the file.
    pub fn build(
        certs: Vec<CertPaths>,
        handshake_timeout: Duration,
        hsts: Option<String>,
        ktls: Ktls,
        versions: Versions,
        alpn: Vec<Vec<u8>>,
    ) -> Result<ServerTls, String> {
        let mut loaded = Vec::with_capacity(certs.len());
        for c in &certs {
            loaded.push(certs::load(&c.cert, &c.key, c.ocsp.as_deref())?);
        }
        let mut names: Vec<String> = loaded.iter().flat_map(|l| l.names.clone()).collect();
        names.sort();
        names.dedup();
        let mut vers: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
        if versions.tls13 {
            vers.push(&rustls::version::TLS13);
        }
        if versions.tls12 {
            vers.push(&rustls::version::TLS12);
        }
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&vers)
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(certs::Resolver::new(&loaded)));
        config.ticketer = ticketer()?;
        // Resumption is by ticket only (TLS 1.2 and 1.3): stateless, so any shard resumes any
        // session, and no cache lock is taken per handshake.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 2;
        config.alpn_protocols = alpn.clone();
        Ok(ServerTls {
            config: Arc::new(config),
            certs,
            names,
            handshake_timeout,
            hsts,
            ktls,
            versions,
            alpn,
        })
    }

    /// The same TLS with its files read again (`reload certs`).
    pub fn reloaded(&self) -> Result<ServerTls, String> {
        ServerTls::build(
            self.certs.clone(),
            self.handshake_timeout,
            self.hsts.clone(),
            self.ktls,
            self.versions,
            self.alpn.clone(),
        )
    }
}

/// Can this kernel take TLS sessions over (kernel TLS, the `tls` upper-layer protocol)?
/// Probed once: setting `TCP_ULP "tls"` on an unconnected socket fails with ENOENT when the
/// kernel has no TLS module, and with ENOTCONN when it has one.
///
/// This build does not hand sessions to the kernel: every TLS byte goes through rustls in
/// user space, and `show stats` says so next to this probe's answer.
pub fn ktls_support() -> &'static str {
    static PROBE: OnceLock<&'static str> = OnceLock::new();
    PROBE.get_or_init(|| {
        // SAFETY: a plain socket we close below; setsockopt reads `name` for its length.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return "unknown";
            }
            let name = b"tls";
            let r = libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_ULP,
                name.as_ptr() as *const libc::c_void,
                name.len() as libc::socklen_t,
            );
            let err = std::io::Error::last_os_error().raw_os_error();
            libc::close(fd);
            match (r, err) {
                (0, _) | (_, Some(libc::ENOTCONN)) => "available",
                (_, Some(libc::ENOENT)) => "unavailable (the kernel has no TLS module)",
                _ => "unavailable",
            }
        }
    })
}
