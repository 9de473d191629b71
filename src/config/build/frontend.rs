//! What every frontend passes whatever its protocol: a name that is one plain word (the same
//! rule names pools and servers) and unique across frontends, and listen addresses that parse
//! and overlap no other frontend's (every shard binds with SO_REUSEPORT, so the kernel would
//! not refuse an overlap).

use std::collections::HashSet;
use std::net::SocketAddr;

use super::syntax::is_bare_key;
use super::{Builder, ConfigError};

impl Builder<'_> {
    pub(super) fn frontend_name<'n>(
        &self,
        key: &str,
        name: &'n str,
        names: &mut HashSet<&'n str>,
    ) -> Result<(), ConfigError> {
        self.check_name(&format!("{key}.name"), name)?;
        if !names.insert(name) {
            return Err(self.err(
                format!("{key}.name"),
                format!("{name:?} is already the name of another frontend"),
            ));
        }
        Ok(())
    }

    /// Names appear in logs, stats and command-socket arguments: keep them to one plain word.
    pub(super) fn check_name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        if !is_bare_key(name) {
            return Err(self.err(
                key,
                format!(
                    "{name:?}: a name must be non-empty and use only letters, digits, '-' and '_'"
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn listen(
        &self,
        key: &str,
        list: &[String],
        seen: &mut Vec<(SocketAddr, String)>,
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        if list.is_empty() {
            return Err(self.err(
                format!("{key}.listen"),
                "must list at least one \"IP:PORT\"",
            ));
        }
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let k = format!("{key}.listen[{i}]");
            let addr: SocketAddr = s.trim().parse().map_err(|_| {
                self.err(
                    &k,
                    format!("{s:?} is not IP:PORT (e.g. \"0.0.0.0:80\" or \"[::]:80\")"),
                )
            })?;
            if addr.port() != 0 && out.contains(&addr) {
                return Err(self.err(&k, format!("{s:?} is listed twice")));
            }
            // Every shard binds with SO_REUSEPORT, so an overlapping bind would not fail: two
            // frontends would silently share the port's connections. Refuse it here. (Within
            // one frontend, 0.0.0.0:80 beside [::]:80 is harmless: both serve the same site.)
            if let Some((_, other)) = seen.iter().find(|(a, _)| listen_overlaps(a, &addr)) {
                return Err(self.err(&k, format!("{s:?} overlaps {other}")));
            }
            out.push(addr);
        }
        seen.extend(
            out.iter()
                .enumerate()
                .map(|(i, a)| (*a, format!("{key}.listen[{i}]"))),
        );
        Ok(out)
    }
}

/// Two listen addresses overlap when they share a port and either the IPs are equal or one is
/// a wildcard (`0.0.0.0` / `[::]`, which on Linux also covers IPv4 unless v6only is set).
/// Port 0 asks the kernel for a fresh port each time, so it never overlaps.
pub(super) fn listen_overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let wild_any = |x: &SocketAddr| x.is_ipv6() && x.ip().is_unspecified();
    a.ip() == b.ip()
        || wild_any(a)
        || wild_any(b)
        || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_overlap_rules() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(listen_overlaps(&a("127.0.0.1:80"), &a("127.0.0.1:80")));
        assert!(listen_overlaps(&a("0.0.0.0:80"), &a("127.0.0.2:80")));
        assert!(listen_overlaps(&a("[::]:80"), &a("127.0.0.1:80")));
        assert!(!listen_overlaps(&a("127.0.0.1:80"), &a("127.0.0.2:80")));
        assert!(!listen_overlaps(&a("127.0.0.1:80"), &a("127.0.0.1:81")));
        assert!(!listen_overlaps(&a("127.0.0.1:0"), &a("127.0.0.1:0")));
        assert!(!listen_overlaps(&a("0.0.0.0:80"), &a("[::1]:80")));
    }
}
