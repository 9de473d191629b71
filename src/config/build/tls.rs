//! What HTTP and MySQL frontends share at the edge: `tls = {...}` (certificates loaded here, so
//! a bad file stops `--check`, a start or a reload with its name), `accept_proxy` with
//! `trusted_proxies`, and a server's `send_proxy`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Builder, ConfigError};
use crate::config::file::{PoolTlsFile, TlsFile};
use crate::config::{Cidr, ProxyVersion};
use crate::tls::{CertPaths, ClientTls, Ktls, ServerTls, Versions};

/// Where the frontend's PROXY headers may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptProxy {
    pub trusted: Vec<Cidr>,
}

impl AcceptProxy {
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }
}

/// A Strict-Transport-Security value browsers obey (RFC 6797 §6.1): directives separated by
/// `;`, one of them `max-age=` with digits (optionally quoted), no control characters.
fn hsts_ok(v: &str) -> bool {
    if v.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return false;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut max_age = false;
    for d in v.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let (name, value) = match d.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (d.to_ascii_lowercase(), None),
        };
        // §6.1: a directive named twice makes the whole header ignored.
        if seen.contains(&name) {
            return false;
        }
        if name == "max-age" {
            let v = value.unwrap_or("");
            let digits = match v.strip_prefix('"') {
                Some(inner) => match inner.strip_suffix('"') {
                    Some(d) => d,
                    None => return false,
                },
                None => v,
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            max_age = true;
        }
        seen.push(name);
    }
    max_age
}

impl Builder<'_> {
    /// A path from the config: relative ones are taken from the config file's directory.
    fn near_config(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            return path.to_path_buf();
        }
        match Path::new(self.origin).parent() {
            Some(dir) => dir.join(path),
            None => path.to_path_buf(),
        }
    }

    pub(super) fn tls(
        &self,
        key: &str,
        t: &TlsFile,
        alpn: &[&[u8]],
        http: bool,
    ) -> Result<Arc<ServerTls>, ConfigError> {
        let k = |name: &str| format!("{key}.tls.{name}");
        if t.certs.is_empty() {
            return Err(self.err(k("certs"), "needs at least one { cert, key }"));
        }
        let mut certs = Vec::with_capacity(t.certs.len());
        for c in &t.certs {
            certs.push(CertPaths {
                cert: self.near_config(&c.cert),
                key: self.near_config(&c.key),
                ocsp: c.ocsp.as_deref().map(|o| self.near_config(o)),
            });
        }
        let ktls = match t.ktls.as_deref() {
            None | Some("auto") => Ktls::Auto,
            Some("off") => Ktls::Off,
            Some(other) => {
                return Err(self.err(
                    k("ktls"),
                    format!("{other:?}: expected \"auto\" or \"off\""),
                ))
            }
        };
        let versions = match &t.versions {
            None => Versions {
                tls12: true,
                tls13: true,
            },
            Some(list) => {
                let mut v = Versions {
                    tls12: false,
                    tls13: false,
                };
                for (i, s) in list.iter().enumerate() {
                    match s.as_str() {
                        "1.2" => v.tls12 = true,
                        "1.3" => v.tls13 = true,
                        other => {
                            return Err(self.err(
                                format!("{key}.tls.versions[{i}]"),
                                format!("{other:?}: expected \"1.2\" or \"1.3\" (older versions are not offered)"),
                            ))
                        }
                    }
                }
                if !v.tls12 && !v.tls13 {
                    return Err(self.err(k("versions"), "must name at least one version"));
                }
                v
            }
        };
        if t.hsts.is_some() && !http {
            return Err(self.err(
                k("hsts"),
                "HSTS is an HTTP header; a MySQL frontend has none",
            ));
        }
        if let Some(h) = &t.hsts {
            if !hsts_ok(h) {
                return Err(self.err(
                    k("hsts"),
                    format!("{h:?}: expected a Strict-Transport-Security value such as \"max-age=31536000; includeSubDomains\""),
                ));
            }
        }
        let handshake_timeout = self.duration(
            &k("handshake_timeout"),
            t.handshake_timeout.as_ref(),
            10,
            false,
        )?;
        let built = ServerTls::build(
            certs,
            handshake_timeout,
            t.hsts.clone(),
            ktls,
            versions,
            alpn.iter().map(|a| a.to_vec()).collect(),
        )
        .map_err(|m| self.err(k("certs"), m))?;
        Ok(Arc::new(built))
    }

    /// A pool's `tls = {...}` (towards its servers; HTTP/1.1 offered by ALPN).
    pub(super) fn pool_tls(
        &self,
        key: &str,
        t: &PoolTlsFile,
    ) -> Result<Arc<ClientTls>, ConfigError> {
        let verify = t.verify.unwrap_or(true);
        let ca = t.ca.as_deref().map(|c| self.near_config(c));
        if ca.is_some() && !verify {
            return Err(self.err(
                format!("{key}.ca"),
                "verify = false checks no certificate; drop ca or verify",
            ));
        }
        let cc = t
            .client_cert
            .as_ref()
            .map(|c| (self.near_config(&c.cert), self.near_config(&c.key)));
        let built = ClientTls::build(
            verify,
            ca.as_deref(),
            t.sni.as_deref(),
            cc.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            &[b"http/1.1"],
        )
        .map_err(|m| self.err(key, m))?;
        Ok(Arc::new(built))
    }

    /// `accept_proxy` and `trusted_proxies` of a frontend.
    pub(super) fn accept_proxy(
        &self,
        key: &str,
        on: Option<bool>,
        trusted: &[String],
    ) -> Result<Option<AcceptProxy>, ConfigError> {
        if !on.unwrap_or(false) {
            if !trusted.is_empty() {
                return Err(self.err(
                    format!("{key}.trusted_proxies"),
                    "only means something with accept_proxy = true",
                ));
            }
            return Ok(None);
        }
        if trusted.is_empty() {
            return Err(self.err(
                format!("{key}.trusted_proxies"),
                "accept_proxy = true needs the networks allowed to send PROXY headers (e.g. [\"10.0.0.0/8\"]); anybody else could claim any address",
            ));
        }
        let mut list = Vec::with_capacity(trusted.len());
        for (i, c) in trusted.iter().enumerate() {
            list.push(
                Cidr::parse(c).map_err(|m| self.err(format!("{key}.trusted_proxies[{i}]"), m))?,
            );
        }
        Ok(Some(AcceptProxy { trusted: list }))
    }

    /// A server's `send_proxy`.
    pub(super) fn send_proxy(
        &self,
        key: &str,
        v: Option<&str>,
    ) -> Result<Option<ProxyVersion>, ConfigError> {
        match v {
            None => Ok(None),
            Some("v1") => Ok(Some(ProxyVersion::V1)),
            Some("v2") => Ok(Some(ProxyVersion::V2)),
            Some(other) => Err(self.err(
                format!("{key}.send_proxy"),
                format!("{other:?}: expected \"v1\" or \"v2\""),
            )),
        }
    }
}
