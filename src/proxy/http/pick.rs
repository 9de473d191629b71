//! What a request gives the balancer beyond the clock: for `balance = "hash"`, the hash of the
//! pool's `hash_key` read from the request head. Pools balanced otherwise pay one comparison.
//!
//! A request without the key (no such header or cookie) is hashed by its client address
//! instead, so it still lands on one server per client rather than all on one server.

use std::net::IpAddr;

use crate::balance::hash::{hash64, ip_hash};
use crate::config::{Balance, HashKey, Pool};
use crate::route::RequestView;

/// The hash of `pool`'s key for this request; 0 when the pool does not balance by hash.
pub fn hash(pool: &Pool, req: &RequestView, peer: IpAddr) -> u64 {
    if pool.balance != Balance::Hash {
        return 0;
    }
    let key = match &pool.hash_key {
        Some(HashKey::Uri) => Some(req.target),
        Some(HashKey::Header(name)) => req.header_values(name).next().map(<[u8]>::trim_ascii),
        Some(HashKey::Cookie(name)) => req
            .cookies()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v),
        Some(HashKey::SourceIp) | None => None,
    };
    match key {
        Some(k) => hash64(k),
        None => ip_hash(peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::parse::{parse_request, Limits};
    use crate::proto::http::Status;

    fn pool(key: Option<HashKey>) -> Pool {
        let toml = "[[http]]\nname = \"w\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"p\"\n\
                    [pool.p]\nbalance = \"hash\"\nservers = [{ name = \"a\", addr = \"127.0.0.1:2\" }]\n";
        let mut p = crate::config::from_str(toml, "<test>").unwrap().pools[0].clone();
        p.hash_key = key;
        p
    }

    fn hash_of(key: Option<HashKey>, raw: &str, peer: &str) -> u64 {
        let buf = raw.as_bytes();
        let head = match parse_request(buf, &Limits::default(), Vec::new()) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        };
        let view = RequestView {
            buf,
            host: head.host.map(|s| s.of(buf)),
            path: head.path.of(buf),
            target: head.origin.of(buf),
            headers: &head.headers,
        };
        hash(&pool(key), &view, peer.parse().unwrap())
    }

    #[test]
    fn each_key_reads_its_part_of_the_request() {
        let ip = "10.0.0.1";
        let req = "GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nX-User:  alice \r\n\
                   Cookie: a=1; sid=s42; z=9\r\n\r\n";
        let table = [
            (Some(HashKey::Uri), hash64(b"/a/b?x=1")),
            (Some(HashKey::Header("x-user".into())), hash64(b"alice")),
            (Some(HashKey::Cookie("sid".into())), hash64(b"s42")),
            (Some(HashKey::SourceIp), ip_hash(ip.parse().unwrap())),
            // Missing header or cookie: the client address.
            (
                Some(HashKey::Header("x-none".into())),
                ip_hash(ip.parse().unwrap()),
            ),
            (
                Some(HashKey::Cookie("none".into())),
                ip_hash(ip.parse().unwrap()),
            ),
        ];
        for (key, want) in table {
            assert_eq!(hash_of(key.clone(), req, ip), want, "{key:?}");
        }
    }

    #[test]
    fn v4_mapped_v6_hashes_as_v4() {
        assert_eq!(
            ip_hash("::ffff:10.0.0.1".parse().unwrap()),
            ip_hash("10.0.0.1".parse().unwrap())
        );
    }
}
