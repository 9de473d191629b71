//! The cache driven by generated traffic against a model of what it may and may not do.
//!
//! An origin answers every request with a body that names the URL, its version (bumped by
//! every successful POST), the request's `X-V` value and a unique id, under a policy drawn per
//! answer: storable (`max-age=60`), `no-store`, `private`, storable but with `Set-Cookie`,
//! `no-cache` with an ETag (revalidated each time; the origin answers 304 when it matches),
//! or varying on `X-V`. A client sends seeded random GET/HEAD/POST/PURGE requests with random
//! request directives on a few keep-alive connections, sometimes pipelined. The model checks,
//! for every answer:
//!
//! - it parses, belongs to the URL asked, and (for `Vary: X-V` answers) to the `X-V` asked;
//! - a body the origin made under a policy that forbids storing is never delivered twice;
//! - after a POST or PURGE of a URL was answered, nothing delivered for that URL before it is
//!   delivered again, and no older version comes back;
//! - `X-Cache: HIT` answers did not reach the origin (its request count did not move);
//! - `only-if-cached` with nothing stored gets 504, and a HEAD has no body;
//! - `Age` is at most the storable lifetime.
//!
//! One shard, so one cache sees every connection and the order of events is the client's.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Proxy;

const URLS: usize = 6;
const POLICIES: usize = 6;

/// Splitmix64: reproducible from the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Default)]
struct OriginState {
    requests: u64,
    version: HashMap<String, u64>,
    /// Per URL: the policy the next answers get (set by the client before each request).
    policy: HashMap<String, usize>,
    /// Ids of bodies made under a policy that forbids storing.
    unstorable: HashSet<u64>,
}

struct Origin {
    addr: String,
    state: Arc<Mutex<OriginState>>,
}

fn read_head(r: &mut BufReader<TcpStream>) -> Option<(String, Vec<(String, String)>)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let first = line.trim_end().to_owned();
    let mut fields = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':')?;
        fields.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    Some((first, fields))
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

impl Origin {
    fn start() -> Origin {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(OriginState::default()));
        let ids = Arc::new(AtomicU64::new(1));
        let st = state.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                let (st, ids) = (st.clone(), ids.clone());
                std::thread::spawn(move || serve(c, st, ids));
            }
        });
        Origin { addr, state }
    }
}

fn serve(c: TcpStream, st: Arc<Mutex<OriginState>>, ids: Arc<AtomicU64>) {
    c.set_read_timeout(Some(Duration::from_secs(30))).ok();
    c.set_nodelay(true).ok();
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    while let Some((line, fields)) = read_head(&mut r) {
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        let len: usize = field(&fields, "content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let mut s = st.lock().unwrap();
        s.requests += 1;
        if method == "POST" {
            *s.version.entry(path.clone()).or_default() += 1;
            drop(s);
            w.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            continue;
        }
        let v = *s.version.get(&path).unwrap_or(&0);
        let policy = *s.policy.get(&path).unwrap_or(&0);
        let xv = field(&fields, "x-v").unwrap_or("-").to_owned();
        let etag = format!("\"{path}-{v}\"");
        if policy == 4 && field(&fields, "if-none-match") == Some(etag.as_str()) {
            drop(s);
            let head = format!(
                "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nCache-Control: no-cache\r\n\r\n"
            );
            w.write_all(head.as_bytes()).unwrap();
            continue;
        }
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let (cc, extra) = match policy {
            0 => ("max-age=60", String::new()),
            1 => ("no-store", String::new()),
            2 => ("private, max-age=60", String::new()),
            3 => ("max-age=60", format!("Set-Cookie: s={id}\r\n")),
            4 => ("no-cache", format!("ETag: {etag}\r\n")),
            _ => ("max-age=60", "Vary: X-V\r\n".to_owned()),
        };
        if matches!(policy, 1..=3) {
            s.unstorable.insert(id);
        }
        drop(s);
        let text = format!("url={path};v={v};xv={xv};id={id};p={policy}\n");
        let head = format!(
            "HTTP/1.1 200 OK\r\nCache-Control: {cc}\r\n{extra}Content-Length: {}\r\n\r\n",
            text.len()
        );
        w.write_all(head.as_bytes()).unwrap();
        if method != "HEAD" {
            w.write_all(text.as_bytes()).unwrap();
        }
    }
}

struct Req {
    method: &'static str,
    url: String,
    xv: Option<&'static str>,
    cc: Option<&'static str>,
}

struct Resp {
    status: u16,
    fields: Vec<(String, String)>,
    body: String,
}

fn read_resp(r: &mut BufReader<TcpStream>, head_only: bool) -> Resp {
    let (line, fields) = read_head(r).expect("a response head");
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = field(&fields, "content-length").map_or(0, |v| v.parse().unwrap());
    assert!(
        field(&fields, "transfer-encoding").is_none(),
        "unexpected chunked answer"
    );
    let mut body = vec![0; if head_only { 0 } else { len }];
    r.read_exact(&mut body).unwrap();
    Resp {
        status,
        fields,
        body: String::from_utf8(body).unwrap(),
    }
}

fn body_field<'a>(body: &'a str, key: &str) -> &'a str {
    body.trim_end()
        .split(';')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {body:?}"))
}

#[test]
fn generated_traffic_never_breaks_the_model() {
    let origin = Origin::start();
    let cfg = common::daemon(1)
        + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
purge_from = ["127.0.0.1"]
[[http.route]]
pool = "app"
cache = { size = "4MiB", max_object = "64KiB" }
[pool.app]
servers = [ { name = "o", addr = "{origin}" } ]
"#;
    let proxy = Proxy::start_with(&cfg, &[("origin", origin.addr.clone())]);
    let addr = proxy.addr("web");
    let seed: u64 = std::env::var("CACHE_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let steps: usize = std::env::var("CACHE_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    eprintln!("cache model: seed {seed} ({steps} steps; CACHE_MODEL_SEED to replay)");
    let mut rng = Rng(seed);
    let mut conns: Vec<(TcpStream, BufReader<TcpStream>)> = Vec::new();
    for _ in 0..3 {
        let c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.set_nodelay(true).unwrap();
        let r = BufReader::new(c.try_clone().unwrap());
        conns.push((c, r));
    }
    // Model state.
    let mut delivered: HashSet<u64> = HashSet::new();
    // Per URL: ids delivered before its last invalidation, and the lowest version allowed.
    let mut stale_ids: HashMap<String, HashSet<u64>> = HashMap::new();
    let mut ids_of: HashMap<String, HashSet<u64>> = HashMap::new();
    let mut min_version: HashMap<String, u64> = HashMap::new();
    let mut stats = [0usize; 4];
    let mut step = 0;
    while step < steps {
        let which = rng.below(conns.len());
        let batch = 1 + rng.below(3);
        let mut reqs = Vec::new();
        for _ in 0..batch {
            let url = format!("/u{}", rng.below(URLS));
            let method = match rng.below(20) {
                0 => "POST",
                1 => "PURGE",
                2 | 3 => "HEAD",
                _ => "GET",
            };
            let xv = [None, Some("a"), Some("b")][rng.below(3)];
            let cc = match rng.below(12) {
                0 => Some("no-cache"),
                1 => Some("max-age=0"),
                2 => Some("only-if-cached"),
                3 => Some("no-store"),
                _ => None,
            };
            reqs.push(Req {
                method,
                url,
                xv,
                cc,
            });
        }
        // The origin's policy for each URL asked in this batch changes now and then; a batch
        // keeps one policy per URL so the model knows which applied.
        {
            let mut s = origin.state.lock().unwrap();
            for r in &reqs {
                if rng.below(4) == 0 {
                    s.policy.insert(r.url.clone(), rng.below(POLICIES));
                }
            }
        }
        let (c, rd) = &mut conns[which];
        let mut wire = Vec::new();
        for r in &reqs {
            let body = if r.method == "POST" { "x" } else { "" };
            wire.extend_from_slice(
                format!("{} {} HTTP/1.1\r\nHost: shop.example\r\n", r.method, r.url).as_bytes(),
            );
            if let Some(v) = r.xv {
                wire.extend_from_slice(format!("X-V: {v}\r\n").as_bytes());
            }
            if let Some(cc) = r.cc {
                wire.extend_from_slice(format!("Cache-Control: {cc}\r\n").as_bytes());
            }
            wire.extend_from_slice(
                format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
            );
        }
        c.write_all(&wire).unwrap();
        for (i, r) in reqs.iter().enumerate() {
            let resp = read_resp(rd, r.method == "HEAD");
            let ctx = format!(
                "seed {seed} step {step}.{i}: {} {} xv={:?} cc={:?} -> {} {:?} {:?}",
                r.method, r.url, r.xv, r.cc, resp.status, resp.fields, resp.body
            );
            let xcache = field(&resp.fields, "x-cache").unwrap_or("");
            match r.method {
                "POST" => {
                    assert_eq!(resp.status, 204, "{ctx}");
                    let v = origin.state.lock().unwrap().version[&r.url];
                    min_version.insert(r.url.clone(), v);
                    let old = ids_of.remove(&r.url).unwrap_or_default();
                    stale_ids.entry(r.url.clone()).or_default().extend(old);
                    stats[3] += 1;
                }
                "PURGE" => {
                    assert!(matches!(resp.status, 200 | 404), "{ctx}");
                    let old = ids_of.remove(&r.url).unwrap_or_default();
                    stale_ids.entry(r.url.clone()).or_default().extend(old);
                    stats[3] += 1;
                }
                "HEAD" => {
                    assert!(matches!(resp.status, 200 | 504), "{ctx}");
                }
                _ => {
                    if r.cc == Some("only-if-cached") && resp.status == 504 {
                        assert_eq!(xcache, "MISS", "{ctx}");
                        continue;
                    }
                    assert_eq!(resp.status, 200, "{ctx}");
                    assert_eq!(body_field(&resp.body, "url"), r.url, "{ctx}");
                    let id: u64 = body_field(&resp.body, "id").parse().unwrap();
                    let v: u64 = body_field(&resp.body, "v").parse().unwrap();
                    let policy: usize = body_field(&resp.body, "p").parse().unwrap();
                    if policy == 5 {
                        assert_eq!(
                            body_field(&resp.body, "xv"),
                            r.xv.unwrap_or("-"),
                            "Vary: {ctx}"
                        );
                    }
                    assert!(
                        v >= *min_version.get(&r.url).unwrap_or(&0),
                        "an older version after a POST: {ctx}"
                    );
                    assert!(
                        !stale_ids.get(&r.url).is_some_and(|s| s.contains(&id)),
                        "a copy from before a POST or PURGE: {ctx}"
                    );
                    let unstorable = origin.state.lock().unwrap().unstorable.contains(&id);
                    assert!(
                        !(unstorable && delivered.contains(&id)),
                        "a response that may not be stored came from the cache: {ctx}"
                    );
                    if let Some(age) = field(&resp.fields, "age") {
                        assert!(age.parse::<u64>().unwrap() <= 61, "{ctx}");
                    }
                    if xcache == "HIT" {
                        stats[0] += 1;
                    } else {
                        stats[1] += 1;
                    }
                    delivered.insert(id);
                    ids_of.entry(r.url.clone()).or_default().insert(id);
                }
            }
        }
        if batch == 1 && reqs[0].method == "GET" {
            stats[2] += 1;
        }
        step += batch;
    }
    // Single-request HIT check, separately and strictly: a HIT never reaches the origin.
    {
        let (c, rd) = &mut conns[0];
        origin.state.lock().unwrap().policy.insert("/hit".into(), 0);
        for i in 0..20 {
            let before = origin.state.lock().unwrap().requests;
            c.write_all(b"GET /hit HTTP/1.1\r\nHost: shop.example\r\n\r\n")
                .unwrap();
            let resp = read_resp(rd, false);
            let after = origin.state.lock().unwrap().requests;
            let xcache = field(&resp.fields, "x-cache").unwrap_or("");
            if i == 0 {
                assert_eq!(xcache, "MISS");
                assert_eq!(after, before + 1);
            } else {
                assert_eq!(xcache, "HIT", "{:?}", resp.fields);
                assert_eq!(after, before, "a HIT reached the origin");
            }
        }
    }
    eprintln!(
        "cache model: {} hits, {} fetched, {} single GETs, {} invalidations",
        stats[0], stats[1], stats[2], stats[3]
    );
    assert!(stats[0] > 50, "the run exercised too few hits: {stats:?}");
    drop(proxy);
}
