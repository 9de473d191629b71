//! Sites (`[[site]]`): one bill per hosted site, its HTTP and its MySQL traffic together.
//!
//! A site is a name, HTTP hosts and MySQL users. Nothing is counted per site on the request
//! path: a bill is computed when it is read (`show traffic site`, each traffic log period)
//! from the counters that exist anyway, HTTP per frontend and site key (lower-cased Host
//! without port) and MySQL per user, summed over shards and over every HTTP frontend.
//!
//! A site key belongs to the site that names it exactly; else to the site with the longest
//! wildcard (`*.example.com`) that covers it; else to no site (it stays visible in
//! `show traffic http`). A MySQL user belongs to the site that lists it (names compare
//! exactly, as MySQL compares them). The config refuses a host or user claimed twice, so the
//! mapping is a function: no traffic is ever billed to two sites.
//!
//! The keys `(other)` (HTTP sites beyond 1024 per frontend and shard, MySQL users beyond 1024
//! per shard), `-` (no Host) and `(unknown)` (connections that never logged in) belong to no
//! site: traffic counted there is in no bill.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::config::HostPattern;
use crate::log::traffic::{Key, Kind, Traffic};

/// One validated `[[site]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub mysql_users: Vec<String>,
}

/// The running config's sites and the lookups from a site key or a user to a site.
#[derive(Debug, Clone, Default)]
pub struct Sites {
    pub list: Vec<Site>,
    exact: HashMap<Vec<u8>, usize>,
    /// Wildcard suffixes (`.example.com`) and their site, longest first.
    suffix: Vec<(Vec<u8>, usize)>,
    users: HashMap<Vec<u8>, usize>,
}

impl Sites {
    /// The lookups of `list`, which the config builder has checked: no host pattern and no
    /// user appears in two sites.
    pub fn new(list: Vec<Site>) -> Sites {
        let mut exact = HashMap::new();
        let mut suffix = Vec::new();
        let mut users = HashMap::new();
        for (i, s) in list.iter().enumerate() {
            for h in &s.hosts {
                match h {
                    HostPattern::Exact(name) => {
                        exact.entry(name.as_bytes().to_vec()).or_insert(i);
                    }
                    HostPattern::Suffix(sfx) => suffix.push((sfx.as_bytes().to_vec(), i)),
                }
            }
            for u in &s.mysql_users {
                users.entry(u.as_bytes().to_vec()).or_insert(i);
            }
        }
        // Longest first; equal lengths keep config order (the builder refuses equal suffixes).
        suffix.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Sites {
            list,
            exact,
            suffix,
            users,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The site of an HTTP site key (`show traffic http`'s: lower-cased, without port).
    pub fn of_host(&self, key: &[u8]) -> Option<usize> {
        if let Some(i) = self.exact.get(key) {
            return Some(*i);
        }
        self.suffix
            .iter()
            .find(|(sfx, _)| {
                key.len() > sfx.len() && key.ends_with(sfx) && key.first() != Some(&b'.')
            })
            .map(|(_, i)| *i)
    }

    /// The site of a MySQL user.
    pub fn of_user(&self, user: &[u8]) -> Option<usize> {
        self.users.get(user).copied()
    }

    /// Every site's bill from traffic rows (cumulative totals or one period's rows): one
    /// [`Bill`] per site, in config order.
    pub fn bills<'a>(&self, rows: impl IntoIterator<Item = (&'a Key, &'a Traffic)>) -> Vec<Bill> {
        let mut out = vec![Bill::default(); self.list.len()];
        for ((kind, _, key), t) in rows {
            let site = match kind {
                Kind::Http => self.of_host(key),
                Kind::Mysql => self.of_user(key),
            };
            if let Some(b) = site.and_then(|i| out.get_mut(i)) {
                b.add(*kind, t);
            }
        }
        out
    }
}

/// One site's traffic: HTTP and MySQL side by side, and both together.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Bill {
    pub http_requests: u64,
    pub http_bytes_in: u64,
    pub http_bytes_out: u64,
    pub mysql_connections: u64,
    pub mysql_requests: u64,
    pub mysql_errors: u64,
    pub mysql_bytes_in: u64,
    pub mysql_bytes_out: u64,
}

impl Bill {
    fn add(&mut self, kind: Kind, t: &Traffic) {
        match kind {
            Kind::Http => {
                self.http_requests += t.requests;
                self.http_bytes_in += t.bytes_in;
                self.http_bytes_out += t.bytes_out;
            }
            Kind::Mysql => {
                self.mysql_connections += t.connections;
                self.mysql_requests += t.requests;
                self.mysql_errors += t.errors;
                self.mysql_bytes_in += t.bytes_in;
                self.mysql_bytes_out += t.bytes_out;
            }
        }
    }

    /// Client → proxy bytes, HTTP and MySQL.
    pub fn bytes_in(&self) -> u64 {
        self.http_bytes_in + self.mysql_bytes_in
    }

    /// Proxy → client bytes, HTTP and MySQL.
    pub fn bytes_out(&self) -> u64 {
        self.http_bytes_out + self.mysql_bytes_out
    }

    pub fn is_zero(&self) -> bool {
        *self == Bill::default()
    }

    /// The numbers in column order (see [`HEADER`]).
    pub fn columns(&self) -> [u64; 10] {
        [
            self.http_requests,
            self.http_bytes_in,
            self.http_bytes_out,
            self.mysql_connections,
            self.mysql_requests,
            self.mysql_errors,
            self.mysql_bytes_in,
            self.mysql_bytes_out,
            self.bytes_in(),
            self.bytes_out(),
        ]
    }
}

/// `show traffic site`'s header line: the site, then [`Bill::columns`].
pub const HEADER: &str = "site http_requests http_bytes_in http_bytes_out mysql_connections \
                          mysql_requests mysql_errors mysql_bytes_in mysql_bytes_out bytes_in bytes_out";

/// A site name and its bill as one line of space-separated columns (no newline).
pub fn line(name: &str, b: &Bill) -> String {
    let mut out = crate::log::traffic::encode_key(name.as_bytes());
    for n in b.columns() {
        let _ = write!(out, " {n}");
    }
    out
}

/// `show traffic site`: every configured site, in config order, with its traffic since start.
pub fn render(sites: &Sites, bills: &[Bill]) -> String {
    let mut out = format!("{HEADER}\n");
    for (s, b) in sites.list.iter().zip(bills) {
        out.push_str(&line(&s.name, b));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn site(name: &str, hosts: &[&str], users: &[&str]) -> Site {
        Site {
            name: name.into(),
            hosts: hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
            mysql_users: users.iter().map(|u| u.to_string()).collect(),
        }
    }

    fn key(kind: Kind, fe: &str, k: &str) -> Key {
        (kind, Arc::from(fe), k.as_bytes().to_vec())
    }

    fn t(r: u64, i: u64, o: u64) -> Traffic {
        Traffic {
            requests: r,
            bytes_in: i,
            bytes_out: o,
            time_us: 1,
            connections: 0,
            errors: 0,
        }
    }

    #[test]
    fn hosts_map_exact_first_then_longest_wildcard() {
        let s = Sites::new(vec![
            site("all", &["*.example.com"], &[]),
            site(
                "shop",
                &["shop.example.com", "*.shop.example.com"],
                &["shop"],
            ),
            site("v6", &["[::1]", "10.0.0.1"], &[]),
        ]);
        assert_eq!(s.of_host(b"example.com"), None, "a wildcard needs a label");
        assert_eq!(s.of_host(b"blog.example.com"), Some(0));
        assert_eq!(s.of_host(b"a.b.example.com"), Some(0));
        assert_eq!(s.of_host(b"shop.example.com"), Some(1));
        assert_eq!(s.of_host(b"www.shop.example.com"), Some(1));
        assert_eq!(s.of_host(b"[::1]"), Some(2));
        assert_eq!(s.of_host(b"10.0.0.1"), Some(2));
        assert_eq!(s.of_host(b".example.com"), None);
        for none in [&b"-"[..], b"(other)", b"other.org"] {
            assert_eq!(s.of_host(none), None);
        }
        assert_eq!(s.of_user(b"shop"), Some(1));
        assert_eq!(s.of_user(b"Shop"), None, "MySQL user names compare exactly");
        assert_eq!(s.of_user(b"(other)"), None);
    }

    #[test]
    fn bills_sum_frontends_and_users() {
        let s = Sites::new(vec![
            site("a", &["a.example", "www.a.example"], &["sg_a"]),
            site("b", &["b.example"], &["sg_b", "sg_b2"]),
            site("idle", &["idle.example"], &[]),
        ]);
        let mut rows = vec![
            (key(Kind::Http, "www", "a.example"), t(2, 10, 100)),
            (key(Kind::Http, "tls", "a.example"), t(1, 5, 50)),
            (key(Kind::Http, "www", "www.a.example"), t(1, 1, 1)),
            (key(Kind::Http, "www", "b.example"), t(7, 70, 700)),
            (key(Kind::Http, "www", "nobody.example"), t(100, 100, 100)),
            (key(Kind::Http, "www", "(other)"), t(100, 100, 100)),
            (key(Kind::Mysql, "-", "sg_a"), t(3, 30, 300)),
            (key(Kind::Mysql, "-", "sg_b"), t(4, 40, 400)),
            (key(Kind::Mysql, "-", "sg_b2"), t(1, 1, 1)),
            (key(Kind::Mysql, "-", "(unknown)"), t(9, 9, 9)),
        ];
        rows[6].1.connections = 2;
        rows[6].1.errors = 1;
        rows[7].1.connections = 1;
        let bills = s.bills(rows.iter().map(|(k, v)| (k, v)));
        assert_eq!(
            bills[0],
            Bill {
                http_requests: 4,
                http_bytes_in: 16,
                http_bytes_out: 151,
                mysql_connections: 2,
                mysql_requests: 3,
                mysql_errors: 1,
                mysql_bytes_in: 30,
                mysql_bytes_out: 300,
            }
        );
        assert_eq!(bills[0].bytes_in(), 46);
        assert_eq!(bills[0].bytes_out(), 451);
        assert_eq!(bills[1].http_requests, 7);
        assert_eq!(bills[1].mysql_requests, 5);
        assert_eq!(bills[1].mysql_connections, 1);
        assert!(bills[2].is_zero());
        let text = render(&s, &bills);
        assert_eq!(
            text,
            format!("{HEADER}\na 4 16 151 2 3 1 30 300 46 451\nb 7 70 700 1 5 0 41 401 111 1101\nidle 0 0 0 0 0 0 0 0 0 0\n")
        );
        let json = crate::control::data::table_json(&text);
        assert_eq!(json["rows"][1]["site"], "b");
        assert_eq!(json["rows"][1]["bytes_out"], 1101);
    }
}
