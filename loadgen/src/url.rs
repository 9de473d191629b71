//! Target URLs: `http://host[:port]/path?query`, resolved once at start. Only plain HTTP is
//! supported (the proxy under test terminates plain HTTP/1.1); anything else is refused with an
//! error that names the URL and what is wrong with it, before a single socket is opened.

use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Url {
    /// `host[:port]` exactly as written, for the Host header.
    pub(crate) authority: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path plus query, never empty (`/` at least).
    pub(crate) path: String,
}

pub(crate) fn parse(s: &str) -> Result<Url, String> {
    let bad = |why: &str| format!("bad URL '{s}': {why}");
    let rest = match s.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(bad(&format!(
                "scheme '{scheme}' is not supported (only http://)"
            )))
        }
        None => return Err(bad("expected http://host[:port]/path")),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err(bad("user info is not supported"));
    }
    if let Some(frag) = path.find('#') {
        if frag == 0 {
            return Err(bad("empty path"));
        }
    }
    let path = path.split('#').next().unwrap_or("/").to_string();
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("path contains spaces or control characters"));
    }
    let (host, port) = split_host_port(authority).map_err(|e| bad(&e))?;
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    Ok(Url {
        authority: authority.to_string(),
        host,
        port,
        path,
    })
}

fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => parse_port(p)?,
            None if after.is_empty() => 80,
            None => return Err(format!("unexpected '{after}' after IPv6 host")),
        };
        return Ok((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, p)) => Ok((host.to_string(), parse_port(p)?)),
        None => Ok((authority.to_string(), 80)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("bad port '{p}'")),
        Ok(n) => Ok(n),
    }
}

/// Resolves `host:port`, preferring IPv4 (loopback tests and the proxy listen on 127.0.0.1).
pub(crate) fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host '{host}': {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("cannot resolve host '{host}': no address"))
}

/// Resolves a `host:port` listen address (port 0: the kernel picks one).
pub(crate) fn resolve_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bad = |why: String| format!("bad listen address '{s}': {why}");
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port".into()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad(format!("bad port '{port}'")))?;
    resolve(host, port).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_good_urls() {
        let cases = [
            ("http://127.0.0.1:8080/a?b=1", "127.0.0.1", 8080, "/a?b=1"),
            ("http://localhost", "localhost", 80, "/"),
            ("HTTP://h:1?x", "h", 1, "/?x"),
            ("http://[::1]:9/p", "::1", 9, "/p"),
            ("http://h/p#frag", "h", 80, "/p"),
        ];
        for (s, host, port, path) in cases {
            let u = parse(s).unwrap();
            assert_eq!(
                (u.host.as_str(), u.port, u.path.as_str()),
                (host, port, path),
                "{s}"
            );
        }
    }

    #[test]
    fn rejects_bad_urls_with_reason() {
        let cases = [
            ("https://h/", "not supported"),
            ("h:80/", "expected http://"),
            ("http://h:0/", "bad port"),
            ("http://h:99999/", "bad port"),
            ("http://h:x/", "bad port"),
            ("http:///p", "missing host"),
            ("http://u@h/", "user info"),
            ("http://h/a b", "spaces"),
        ];
        for (s, why) in cases {
            let e = parse(s).unwrap_err();
            assert!(e.contains(why) && e.contains(s), "{s}: {e}");
        }
    }
}
