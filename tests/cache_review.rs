//! Attacks on the cache found by review, each kept as a test: a 304 that brings a session
//! cookie, the port as a poisoning vector, `Vary` on a field the proxy rewrites, a chunked
//! answer just over `max_object` followed by another request, an `Age` that overflows, a Range
//! on a miss, and `stale-if-error` on a `no-cache` entry.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Proxy;

/// What the origin saw of one request: path, and the fields it cares about.
#[derive(Clone, Debug, Default)]
struct Seen {
    path: String,
    host: String,
    range: Option<String>,
    if_none_match: Option<String>,
}

type Script = dyn Fn(&Seen, usize) -> Vec<u8> + Send + Sync;

/// An origin whose answer to the Nth request (0-based, all paths) `script` writes.
struct Origin {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    fn start(script: Box<Script>) -> Origin {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let n = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::from(script);
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                let (seen, n, script) = (s2.clone(), n.clone(), script.clone());
                std::thread::spawn(move || {
                    c.set_read_timeout(Some(Duration::from_secs(20))).ok();
                    c.set_nodelay(true).ok();
                    let mut w = c.try_clone().unwrap();
                    let mut r = BufReader::new(c);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                        let mut s = Seen {
                            path,
                            ..Default::default()
                        };
                        loop {
                            let mut l = String::new();
                            if r.read_line(&mut l).unwrap_or(0) == 0 {
                                return;
                            }
                            let l = l.trim_end();
                            if l.is_empty() {
                                break;
                            }
                            let (k, v) = l.split_once(':').unwrap();
                            let v = v.trim().to_owned();
                            match k.to_ascii_lowercase().as_str() {
                                "host" => s.host = v,
                                "range" => s.range = Some(v),
                                "if-none-match" => s.if_none_match = Some(v),
                                _ => {}
                            }
                        }
                        let i = n.fetch_add(1, Ordering::SeqCst);
                        let answer = script(&s, i);
                        seen.lock().unwrap().push(s);
                        if w.write_all(&answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Origin { addr, seen }
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn proxy(origin: &Origin, cache: &str) -> Proxy {
    let cfg = common::daemon(1)
        + &format!(
            r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
[[http.route]]
pool = "app"
cache = {cache}
[pool.app]
response_timeout = "5s"
servers = [ {{ name = "o", addr = "{{origin}}" }} ]
"#
        );
    Proxy::start_with(&cfg, &[("origin", origin.addr.clone())])
}

struct Answer {
    status: u16,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_answer(r: &mut BufReader<TcpStream>) -> Answer {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line.split(' ').nth(1).expect("status").parse().unwrap();
    let mut fields = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        fields.push((k.to_owned(), v.trim().to_owned()));
    }
    let len: usize = fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    Answer {
        status,
        fields,
        body,
    }
}

/// One GET on a new connection with extra request fields.
fn get(p: &Proxy, path: &str, extra: &str) -> Answer {
    let c = TcpStream::connect(p.addr("web")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = c.try_clone().unwrap();
    let host = if extra.to_ascii_lowercase().contains("host:") {
        String::new()
    } else {
        "Host: shop.example\r\n".to_owned()
    };
    write!(
        w,
        "GET {path} HTTP/1.1\r\n{host}{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    read_answer(&mut BufReader::new(c))
}

fn ok(body: &str, fields: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\n{fields}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn a_304_with_set_cookie_never_reaches_another_client() {
    let origin = Origin::start(Box::new(|s, i| {
        if s.if_none_match.as_deref() == Some("\"v1\"") {
            format!("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=60\r\nSet-Cookie: session=SECRET{i}\r\n\r\n").into_bytes()
        } else {
            ok("page", "ETag: \"v1\"\r\nCache-Control: max-age=0\r\n")
        }
    }));
    let p = proxy(&origin, r#"{ size = "1MiB" }"#);
    assert_eq!(get(&p, "/p", "").field("x-cache"), Some("MISS"));
    // Stale at once: revalidated; the 304 sets this client's session and makes it fresh.
    let alice = get(&p, "/p", "");
    assert_eq!(alice.field("x-cache"), Some("REVALIDATED"));
    assert!(alice
        .field("set-cookie")
        .is_some_and(|c| c.starts_with("session=SECRET")));
    let anon = get(&p, "/p", "");
    assert_eq!(anon.field("x-cache"), Some("HIT"), "{:?}", anon.fields);
    assert_eq!(
        anon.field("set-cookie"),
        None,
        "alice's session went to another client"
    );
    assert_eq!(anon.body, b"page");
}

#[test]
fn a_304_that_turns_private_ends_the_entry() {
    let origin = Origin::start(Box::new(|s, _| {
        if s.if_none_match.is_some() {
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: private, no-store\r\n\r\n"
                .to_vec()
        } else {
            ok("page", "ETag: \"v1\"\r\nCache-Control: max-age=0\r\n")
        }
    }));
    let p = proxy(&origin, r#"{ size = "1MiB" }"#);
    get(&p, "/p", "");
    assert_eq!(get(&p, "/p", "").status, 200);
    let before = origin.requests();
    let third = get(&p, "/p", "");
    assert_ne!(third.field("x-cache"), Some("HIT"));
    assert!(
        origin.requests() > before,
        "a private response was served from the cache"
    );
}

#[test]
fn the_port_is_part_of_the_key() {
    let origin = Origin::start(Box::new(|s, _| {
        ok(&format!("host={}", s.host), "Cache-Control: max-age=60\r\n")
    }));
    let p = proxy(&origin, r#"{ size = "1MiB" }"#);
    let evil = get(
        &p,
        "/h",
        "Host: victim.example:1337'onmouseover=alert(1)\r\n",
    );
    assert_eq!(evil.status, 200);
    let plain = get(&p, "/h", "Host: victim.example\r\n");
    assert_eq!(plain.field("x-cache"), Some("MISS"));
    assert_eq!(plain.body, b"host=victim.example");
    // The default port is the same object.
    let port80 = get(&p, "/h", "Host: victim.example:80\r\n");
    assert_eq!(port80.field("x-cache"), Some("HIT"));
}

#[test]
fn vary_on_a_field_the_proxy_writes_is_not_stored() {
    let origin = Origin::start(Box::new(|_, i| {
        ok(
            &format!("for {i}"),
            "Cache-Control: max-age=60\r\nVary: X-Forwarded-For\r\n",
        )
    }));
    let p = proxy(&origin, r#"{ size = "1MiB" }"#);
    get(&p, "/v", "");
    let again = get(&p, "/v", "");
    assert_eq!(again.field("x-cache"), Some("MISS"));
    assert_eq!(origin.requests(), 2);
}

#[test]
fn a_chunked_answer_over_max_object_leaves_the_connection_usable() {
    let origin = Origin::start(Box::new(|s, _| {
        if s.path == "/big" {
            let data = vec![b'x'; 70_000];
            let mut out = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n0\r\n\r\n");
            out
        } else {
            ok("small", "Cache-Control: max-age=60\r\n")
        }
    }));
    let p = proxy(&origin, r#"{ size = "1MiB", max_object = "64KiB" }"#);
    let c = TcpStream::connect(p.addr("web")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    w.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /small HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    // The first answer is relayed as it came (chunked): read it through its framing.
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut chunked = false;
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l.trim_end().is_empty() {
            break;
        }
        chunked |= l
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked");
    }
    assert!(chunked);
    let mut total = 0;
    loop {
        let mut size = String::new();
        r.read_line(&mut size).unwrap();
        let n = usize::from_str_radix(size.trim_end(), 16).unwrap();
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).unwrap();
        total += n;
        if n == 0 {
            break;
        }
    }
    assert_eq!(total, 70_000);
    let second = read_answer(&mut r);
    assert_eq!(
        second.body, b"small",
        "the next request on the connection was answered"
    );
}

#[test]
fn a_huge_age_does_not_break_the_entry() {
    let origin = Origin::start(Box::new(|_, _| {
        ok(
            "aged",
            "Cache-Control: max-age=60\r\nAge: 18446744073709551615\r\n",
        )
    }));
    let p = proxy(&origin, r#"{ size = "1MiB" }"#);
    for _ in 0..3 {
        let a = get(&p, "/a", "");
        assert_eq!(a.status, 200);
        assert_eq!(a.body, b"aged");
        // Older than its lifetime on arrival: never a HIT.
        assert_ne!(a.field("x-cache"), Some("HIT"));
    }
}

#[test]
fn a_range_on_a_miss_goes_to_the_origin_unchanged() {
    let origin = Origin::start(Box::new(|s, _| {
        match &s.range {
        Some(_) => b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-0/10\r\nContent-Length: 1\r\n\r\n0".to_vec(),
        None => ok("0123456789", "Cache-Control: max-age=60\r\n"),
    }
    }));
    let p = proxy(&origin, r#"{ size = "1MiB" }"#);
    let a = get(&p, "/r", "Range: bytes=0-0\r\n");
    assert_eq!(a.status, 206);
    assert_eq!(a.body, b"0");
    assert_eq!(
        origin.seen.lock().unwrap()[0].range.as_deref(),
        Some("bytes=0-0")
    );
    // Once the whole object is stored, a range is answered from it.
    get(&p, "/r", "");
    let b = get(&p, "/r", "Range: bytes=2-3\r\n");
    assert_eq!((b.status, b.field("x-cache")), (206, Some("HIT")));
    assert_eq!(b.body, b"23");
}

#[test]
fn stale_if_error_never_serves_a_no_cache_entry() {
    let origin = Origin::start(Box::new(|_, i| {
        if i == 0 {
            ok(
                "secret",
                "Cache-Control: no-cache, stale-if-error=600\r\nETag: \"e\"\r\n",
            )
        } else {
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nfail".to_vec()
        }
    }));
    let p = proxy(&origin, r#"{ size = "1MiB" }"#);
    get(&p, "/n", "");
    let a = get(&p, "/n", "");
    assert_eq!(a.status, 500);
    assert_eq!(a.body, b"fail");
}
