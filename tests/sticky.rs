//! Sticky sessions seen from the client, with 2 shards and backends that answer with their
//! own name: the application cookie's route (URL parameter before the cookie, Tomcat's
//! `.route` suffix), the inserted cookie (set once, its attributes, never forwarded, re-set
//! after a fallback), the client-IP table shared by both shards, and the stripping of our
//! cookie from random Cookie headers against a model.

mod common;

use common::observe::{stat, stats};
use common::*;

const NAMES: [&str; 3] = ["a", "b", "c"];

/// Three backends `a`, `b`, `c` with routes `n1`, `n2`, `n3` in pool `app`, the given sticky
/// section, 2 shards.
fn start(sticky: &str) -> (Proxy, Vec<Backend>) {
    let backends: Vec<Backend> = NAMES.iter().map(|n| Backend::start(n)).collect();
    let mut cfg = daemon(2);
    cfg.push_str(&format!(
        r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"

[pool.app]
servers = [
  {{ name = "a", addr = "{{a}}", route = "n1" }},
  {{ name = "b", addr = "{{b}}", route = "n2" }},
  {{ name = "c", addr = "{{c}}", route = "n3" }},
]

[pool.app.sticky]
{sticky}
"#
    ));
    let vars: Vec<(&str, String)> = NAMES
        .iter()
        .zip(&backends)
        .map(|(n, b)| (*n, b.addr_string()))
        .collect();
    (Proxy::start_with(&cfg, &vars), backends)
}

fn route_of(server: &str) -> &'static str {
    match server {
        "a" => "n1",
        "b" => "n2",
        "c" => "n3",
        other => panic!("no server {other}"),
    }
}

fn set_cookies(r: &Response) -> Vec<String> {
    r.head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.clone())
        .collect()
}

fn cookie_fields(h: &common::wire::Head) -> Vec<String> {
    h.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .map(|(_, v)| v.clone())
        .collect()
}

fn sticky_stat(p: &Proxy, name: &str) -> i64 {
    stat(&stats(p), &format!("sticky.{name}"))
}

#[test]
fn app_cookie_url_parameter_beats_the_cookie_and_the_route_follows_the_last_dot() {
    let (p, backends) =
        start("mode = \"app_cookie\"\ncookie = \"JSESSIONID\"\nurl_param = \"jsessionid\"");
    let mut c = Conn::connect(p.addr("web"));
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("/", &[("Cookie", "JSESSIONID=ABC123.n2")], "b"),
        ("/", &[("Cookie", "x=1; JSESSIONID=A.B.C.n3; y=2")], "c"),
        ("/?jsessionid=Q.n1", &[("Cookie", "JSESSIONID=ABC.n2")], "a"),
        (
            "/p;jsessionid=Q.n3?x=1",
            &[("Cookie", "JSESSIONID=ABC.n2")],
            "c",
        ),
        ("/p;jsessionid=Q.n1", &[], "a"),
    ];
    for round in 0..5 {
        for (target, headers, want) in cases {
            c.send(&req("GET", target, "h", headers, b""));
            let r = c.read_response();
            assert_eq!(r.backend(), *want, "round {round}: {target} {headers:?}");
            assert!(set_cookies(&r).is_empty(), "app_cookie never sets a cookie");
        }
    }
    // The application's cookie goes upstream untouched.
    let b = &backends[1];
    let seen = b
        .heads()
        .into_iter()
        .find(|h| !cookie_fields(h).is_empty())
        .unwrap();
    assert_eq!(
        cookie_fields(&seen),
        vec!["JSESSIONID=ABC123.n2".to_string()]
    );
    // Unknown routes and no session at all are balanced (a miss, not an error).
    for target in ["/?jsessionid=Q.n9", "/", "/?jsessionid=nodot"] {
        c.send(&req("GET", target, "h", &[], b""));
        assert_eq!(c.read_response().status, 200);
    }
    assert_eq!(sticky_stat(&p, "hits"), 25);
    assert_eq!(sticky_stat(&p, "misses"), 3);
    assert_eq!(sticky_stat(&p, "fallbacks"), 0);
    let (code, text) = p.ctl("show sticky app");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("mode: app_cookie") && text.contains("n2 b sticky"),
        "{text}"
    );
}

#[test]
fn inserted_cookie_is_set_once_never_forwarded_and_reset_after_a_fallback() {
    let (p, backends) = start(
        "mode = \"insert_cookie\"\ncookie = \"SG\"\ncookie_secure = true\ncookie_samesite = \"Lax\"\ncookie_max_age = \"1h\"",
    );
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req("GET", "/", "h", &[("Cookie", "a=1")], b""));
    let first = c.read_response();
    let server = first.backend().to_string();
    let route = route_of(&server);
    assert_eq!(
        set_cookies(&first),
        vec![format!(
            "SG={route}; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"
        )]
    );
    assert_eq!(
        first.header("cache-control"),
        Some("no-cache=\"set-cookie\"")
    );

    let cookie = format!("a=1; SG={route}; b=2");
    for i in 0..20 {
        c.send(&req("GET", "/", "h", &[("Cookie", &cookie)], b""));
        let r = c.read_response();
        assert_eq!(r.backend(), server, "request {i}");
        assert!(set_cookies(&r).is_empty(), "set once: {}", r.summary());
        assert_eq!(r.header("cache-control"), None);
    }
    let b = backends.iter().find(|b| b.name == server).unwrap();
    for h in b.heads() {
        assert!(
            !String::from_utf8_lossy(&h.raw).contains("SG="),
            "{:?}",
            h.raw
        );
    }
    assert_eq!(
        cookie_fields(&b.last_head().unwrap()),
        vec!["a=1; b=2".to_string()]
    );
    // A request with nothing but our cookie reaches the server with no Cookie field at all.
    c.send(&req(
        "GET",
        "/",
        "h",
        &[("Cookie", &format!("SG={route}"))],
        b"",
    ));
    assert_eq!(c.read_response().backend(), server);
    assert!(cookie_fields(&b.last_head().unwrap()).is_empty());

    // The server goes into maintenance: quietly balanced elsewhere, and re-stuck.
    let (code, out) = p.ctl(&format!("disable server app/{server}"));
    assert_eq!(code, 0, "{out}");
    c.send(&req("GET", "/", "h", &[("Cookie", &cookie)], b""));
    let moved = c.read_response();
    assert_eq!(moved.status, 200);
    assert_ne!(moved.backend(), server);
    let new_route = route_of(moved.backend());
    assert!(
        set_cookies(&moved)[0].starts_with(&format!("SG={new_route};")),
        "{}",
        moved.summary()
    );
    let new_cookie = format!("SG={new_route}");
    for _ in 0..5 {
        c.send(&req("GET", "/", "h", &[("Cookie", &new_cookie)], b""));
        let r = c.read_response();
        assert_eq!(r.backend(), moved.backend());
        assert!(set_cookies(&r).is_empty());
    }
    assert_eq!(sticky_stat(&p, "inserted"), 2);
    assert_eq!(sticky_stat(&p, "fallbacks"), 1);
    assert_eq!(sticky_stat(&p, "misses"), 1);
    assert_eq!(sticky_stat(&p, "hits"), 26);
    let (_, text) = p.ctl("show sticky app");
    assert!(
        text.contains(&format!("{route} {server} fallback")),
        "{text}"
    );

    // Back in service: its old clients return to it.
    p.ctl(&format!("enable server app/{server}"));
    c.send(&req("GET", "/", "h", &[("Cookie", &cookie)], b""));
    assert_eq!(c.read_response().backend(), server);
}

#[test]
fn a_client_ip_entry_is_honoured_by_the_other_shard_and_follows_a_fallback() {
    let (p, _backends) = start("mode = \"source_ip\"\nttl = \"10m\"\ntable_size = 1000");
    let one = |p: &Proxy| {
        // A new connection each time: SO_REUSEPORT spreads them over both shards.
        let mut c = Conn::connect(p.addr("web"));
        c.send(&req("GET", "/", "h", &[("Connection", "close")], b""));
        c.read_response().backend().to_string()
    };
    let server = one(&p);
    let both_shards_hit = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("hits: "))
            .and_then(|l| l.split("per shard: ").nth(1))
            .is_some_and(|per| per.trim_end_matches(')').split(' ').all(|n| n != "0"))
    };
    let mut n = 0;
    loop {
        assert_eq!(one(&p), server, "connection {n}");
        n += 1;
        let (_, text) = p.ctl("show sticky app");
        if both_shards_hit(&text) {
            break;
        }
        assert!(
            n < 200,
            "200 connections never reached both shards:\n{text}"
        );
    }
    let (_, text) = p.ctl("show sticky app");
    assert!(text.contains("entries: 1 (at most 1000)"), "{text}");
    assert!(text.contains(&format!("\n127.0.0.1 {server} ")), "{text}");

    p.ctl(&format!("disable server app/{server}"));
    let moved = one(&p);
    assert_ne!(moved, server);
    for _ in 0..10 {
        assert_eq!(one(&p), moved, "the entry follows the fallback");
    }
    let (_, text) = p.ctl("show sticky app");
    assert!(text.contains(&format!("\n127.0.0.1 {moved} ")), "{text}");
    assert_eq!(sticky_stat(&p, "fallbacks"), 1);
}

/// xorshift64: deterministic random input without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What the server must see of `fields` (the request's Cookie field values) once cookie `SG`
/// is taken out: untouched when no field holds it; otherwise every field's other pairs,
/// trimmed, joined by `; `, and fields left empty gone.
fn model(fields: &[String]) -> Vec<String> {
    let ours = |pair: &str| pair.split_once('=').is_some_and(|(n, _)| n.trim() == "SG");
    if !fields.iter().any(|f| f.split(';').any(ours)) {
        return fields.to_vec();
    }
    fields
        .iter()
        .map(|f| {
            f.split(';')
                .map(|p| p.trim_matches([' ', '\t']))
                .filter(|p| !p.is_empty() && !ours(p))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|f| !f.is_empty())
        .collect()
}

#[test]
fn generated_cookie_headers_lose_exactly_our_cookie() {
    let (p, backends) = start("mode = \"insert_cookie\"\ncookie = \"SG\"");
    let pairs = [
        "SG=n1",
        "SG=n2",
        "SG=bogus",
        "SG=",
        " SG = n3 ",
        "SGX=1",
        "xSG=2",
        "sg=3",
        "a=1",
        "b=two",
        "c=\"q\"",
        "d=x=y",
        "e",
        "",
        " f=6 ",
        "JSESSIONID=ABC.n2",
    ];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut c = Conn::connect(p.addr("web"));
    for i in 0..300 {
        let nfields = 1 + rng.below(3);
        let fields: Vec<String> = (0..nfields)
            .map(|_| {
                let n = 1 + rng.below(5);
                let sep = ["; ", ";", " ; "][rng.below(3)];
                (0..n)
                    .map(|_| pairs[rng.below(pairs.len())])
                    .collect::<Vec<_>>()
                    .join(sep)
            })
            .collect();
        let headers: Vec<(&str, &str)> = fields.iter().map(|f| ("Cookie", f.as_str())).collect();
        c.send(&req("GET", &format!("/r{i}"), "h", &headers, b""));
        let r = c.read_response();
        assert_eq!(r.status, 200, "{fields:?}: {}", r.summary());
        let b = backends.iter().find(|b| b.name == r.backend()).unwrap();
        let head = b.last_head().unwrap();
        assert!(
            head.start_line.contains(&format!("/r{i} ")),
            "{}",
            head.start_line
        );
        // The backend's parser trims each field value; so does the model's input here.
        let sent: Vec<String> = fields.iter().map(|f| f.trim().to_string()).collect();
        assert_eq!(
            cookie_fields(&head),
            model(&sent),
            "request {i}: {fields:?}"
        );
    }
}

/// A MySQL "server" that greets every connection with an ERR packet carrying its name, then
/// closes: enough for the proxy to choose it (the ERR is passed on to the client).
fn greeter(name: &'static str) -> std::net::SocketAddr {
    use std::io::Write as _;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut payload = vec![0xFF, 0x10, 0x04];
            payload.extend_from_slice(name.as_bytes());
            let mut p = (payload.len() as u32).to_le_bytes()[..3].to_vec();
            p.push(0);
            p.extend_from_slice(&payload);
            let _ = s.write_all(&p);
        }
    });
    addr
}

#[test]
fn mysql_sessions_of_one_client_stick_to_one_server_on_both_shards() {
    use std::io::Read as _;
    let addrs: Vec<_> = ["m0", "m1", "m2"].into_iter().map(greeter).collect();
    let mut cfg = daemon(2);
    cfg.push_str(&format!(
        "[[mysql]]\nname = \"db\"\nlisten = [\"127.0.0.1:{{port:db}}\"]\npool = \"db\"\n\n\
         [pool.db]\nbalance = \"least_requests\"\nservers = [{}]\n\n\
         [pool.db.sticky]\nmode = \"source_ip\"\n",
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{{ name = \"m{i}\", addr = \"{a}\" }}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let p = Proxy::start(&cfg);
    let session = || {
        let mut s = std::net::TcpStream::connect(p.addr("db")).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got).into_owned();
        ["m0", "m1", "m2"]
            .into_iter()
            .find(|n| text.contains(n))
            .unwrap_or_else(|| panic!("no server name in {got:?}"))
    };
    // The harness's start-up probe connection opens a session too; two sessions of a new
    // client racing on two shards may pick different servers before the table converges
    // (docs/balancing.md). Let that one settle first.
    let _ = common::observe::poll_until(
        std::time::Duration::from_secs(3),
        || p.ctl("show sticky db").1,
        |t| t.contains("\nentries: 1 "),
    );
    let first = session();
    let mut n = 0;
    loop {
        assert_eq!(session(), first, "session {n}");
        n += 1;
        let (_, text) = p.ctl("show sticky db");
        let per = text
            .lines()
            .find(|l| l.starts_with("hits: "))
            .and_then(|l| l.split("per shard: ").nth(1))
            .unwrap_or_default()
            .trim_end_matches(')')
            .to_string();
        if per.split(' ').all(|h| h != "0") {
            break;
        }
        assert!(n < 200, "never reached both shards:\n{text}");
    }
    let (_, text) = p.ctl("show sticky db");
    assert!(text.contains(&format!("\n127.0.0.1 {first} ")), "{text}");
}

/// A client whose first request is a WebSocket upgrade gets our cookie on the 101, and the
/// tunnel still works; a second upgrade naming that server gets no new cookie and lands there.
#[test]
fn an_upgrade_as_first_request_gets_the_inserted_cookie() {
    let (p, _backends) = start("mode = \"insert_cookie\"\ncookie = \"SG\"");
    let upgrade = |cookie: Option<&str>| {
        let mut c = Conn::connect(p.addr("web"));
        let mut fields = vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "x3JJHMbDL1EzLkh9GBhXDw=="),
            ("Sec-WebSocket-Version", "13"),
        ];
        if let Some(v) = cookie {
            fields.push(("Cookie", v));
        }
        c.send(&req("GET", "/ws", "h", &fields, b""));
        let r = c.read_response();
        assert_eq!(r.status, 101, "{}", r.summary());
        // The tunnel echoes raw bytes after the cookie was added to the head.
        c.send(b"ping-bytes");
        let mut got = [0u8; 10];
        std::io::Read::read_exact(&mut c.stream(), &mut got).unwrap();
        assert_eq!(&got, b"ping-bytes");
        (r.backend().to_owned(), set_cookies(&r))
    };
    let (server, cookies) = upgrade(None);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let want = format!("SG={}", route_of(&server));
    assert!(cookies[0].starts_with(&want), "{cookies:?}");
    let (again, cookies) = upgrade(Some(&want));
    assert_eq!(again, server);
    assert!(cookies.is_empty(), "{cookies:?}");
}

/// `set server ... state drain` (and weight 0): the server takes no new clients but keeps
/// serving the ones stuck to it, on every shard; `maint` then moves them away (with a new
/// cookie).
#[test]
fn a_draining_server_keeps_its_sticky_clients_and_takes_no_new_ones() {
    let (p, _backends) = start("mode = \"insert_cookie\"\ncookie = \"SG\"");
    for admin in ["state drain", "weight 0"] {
        let cookie = "SG=n1"; // server a
        let (code, out) = p.ctl(&format!("set server app/a {admin}"));
        assert_eq!(code, 0, "{out}");
        // New clients (fresh connections, so both shards serve): never a.
        for i in 0..20 {
            let mut c = Conn::connect(p.addr("web"));
            let r = c.get(&format!("/new{i}"), "h");
            assert_ne!(r.backend(), "a", "{admin}: a new client went to a");
        }
        // Clients stuck to a: still a, and no new cookie.
        for i in 0..20 {
            let mut c = Conn::connect(p.addr("web"));
            c.send(&req(
                "GET",
                &format!("/old{i}"),
                "h",
                &[("Cookie", cookie)],
                b"",
            ));
            let r = c.read_response();
            assert_eq!(r.backend(), "a", "{admin}: a stuck client left a");
            assert!(set_cookies(&r).is_empty(), "{}", r.summary());
        }
        let undo = if admin == "weight 0" {
            "weight 1"
        } else {
            "state ready"
        };
        assert_eq!(p.ctl(&format!("set server app/a {undo}")).0, 0);
    }
    // Maintenance: stuck clients move, and get a new cookie.
    assert_eq!(p.ctl("set server app/a state maint").0, 0);
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req("GET", "/", "h", &[("Cookie", "SG=n1")], b""));
    let r = c.read_response();
    assert_ne!(r.backend(), "a");
    assert_eq!(set_cookies(&r).len(), 1, "{}", r.summary());
}
