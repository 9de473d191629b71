//! Server names and SRV discovery against a DNS server the test runs on loopback
//! (`tests/common/dns.rs`): a name that resolves later, an address that moves, SRV members that
//! come and go, and a DNS outage that keeps the last known members.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::dns::DnsServer;
use common::{Backend, BackendOpts, Conn, Proxy};

/// Which backends answer `n` requests (fresh connection each, so every request is balanced).
fn who_answers(p: &Proxy, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let mut c = Conn::connect(p.addr("web"));
            let r = c.get("/", "x");
            if r.status == 200 {
                r.backend().to_string()
            } else {
                format!("status {}", r.status)
            }
        })
        .collect()
}

/// Poll until `f` holds (or panic after `secs` with `what`).
fn until(secs: u64, what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn proxy(dns: &DnsServer, pool: &str, vars: &[(&str, String)]) -> Proxy {
    let mut v: Vec<(&str, String)> = vec![("dns", dns.addr().to_string())];
    v.extend(vars.iter().cloned());
    Proxy::start_with(
        &(common::daemon(2)
            + "resolvers = [\"{dns}\"]\n"
            + r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
resolve_interval = "200ms"
"# + pool),
        &v,
    )
}

#[test]
fn a_name_that_resolves_later_is_used_then_follows_its_address() {
    let dns = DnsServer::start();
    let a = Backend::start("a");
    let port = a.addr.port();
    let b = Backend::start_at(
        "b",
        SocketAddr::from(([127, 0, 0, 2], port)),
        BackendOpts::default(),
    );
    // Nothing in DNS yet: the server takes nothing, the proxy answers 503.
    let p = proxy(
        &dns,
        "servers = [ { name = \"app\", addr = \"app.test:{port}\" } ]\n",
        &[("port", port.to_string())],
    );
    assert!(who_answers(&p, 2).iter().all(|w| w == "status 503"));
    let (_, servers) = p.ctl("show servers");
    assert!(servers.contains(" down "), "{servers}");

    dns.set_a("app.test", vec![Ipv4Addr::new(127, 0, 0, 1)]);
    until(5, "the name resolved", || {
        let w = who_answers(&p, 1);
        (w == ["a"]).then_some(()).ok_or(format!("{w:?}"))
    });
    // The address moves: requests follow, and the server's count goes on.
    let (_, before) = p.ctl("show servers");
    let count = |t: &str| -> u64 {
        let l = t
            .lines()
            .find(|l| l.starts_with("app app "))
            .unwrap_or_default();
        l.split(' ')
            .nth(10)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let n0 = count(&before);
    assert!(n0 >= 1, "{before}");
    dns.set_a("app.test", vec![Ipv4Addr::new(127, 0, 0, 2)]);
    until(5, "the address moved", || {
        let w = who_answers(&p, 1);
        (w == ["b"]).then_some(()).ok_or(format!("{w:?}"))
    });
    let (_, after) = p.ctl("show servers");
    assert!(
        count(&after) > n0,
        "counters carried to the new address: {before}\n{after}"
    );
    assert!(p.log().contains("dns_changed"), "{}", p.log());

    // Round-robin DNS listing both: the address in use stays (no move at every lookup).
    dns.set_a(
        "app.test",
        vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)],
    );
    let gen = |p: &Proxy| {
        p.ctl("show info")
            .1
            .lines()
            .find(|l| l.starts_with("generation: "))
            .map(String::from)
    };
    let g0 = gen(&p);
    std::thread::sleep(Duration::from_millis(800));
    assert!(who_answers(&p, 3).iter().all(|w| w == "b"));
    assert_eq!(
        gen(&p),
        g0,
        "no new generation for an answer that still has the address"
    );

    // DNS goes silent: the last known address stays in use.
    dns.set_silent(true);
    std::thread::sleep(Duration::from_millis(800));
    assert!(who_answers(&p, 3).iter().all(|w| w == "b"));
    // And NXDOMAIN too: still the last known address.
    dns.set_silent(false);
    dns.remove("app.test");
    std::thread::sleep(Duration::from_millis(800));
    assert!(who_answers(&p, 3).iter().all(|w| w == "b"));
    drop(b);
}

#[test]
fn srv_discovery_adds_and_removes_members() {
    let dns = DnsServer::start();
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    for name in ["a.test", "b.test", "c.test"] {
        dns.set_a(name, vec![Ipv4Addr::LOCALHOST]);
    }
    let srv = "_http._tcp.app.test";
    dns.set_srv(
        srv,
        vec![
            (10, 1, a.addr.port(), "a.test"),
            (10, 1, b.addr.port(), "b.test"),
        ],
    );
    let p = proxy(&dns, "discover = \"srv:_http._tcp.app.test\"\n", &[]);
    until(5, "a and b discovered", || {
        let mut w = who_answers(&p, 6);
        w.sort();
        w.dedup();
        (w == ["a", "b"]).then_some(()).ok_or(format!("{w:?}"))
    });
    // c joins, b leaves.
    dns.set_srv(
        srv,
        vec![
            (10, 1, a.addr.port(), "a.test"),
            (10, 1, c.addr.port(), "c.test"),
        ],
    );
    until(5, "c joined and b left", || {
        let mut w = who_answers(&p, 8);
        w.sort();
        w.dedup();
        (w == ["a", "c"]).then_some(()).ok_or(format!("{w:?}"))
    });
    let (_, servers) = p.ctl("show servers");
    assert!(
        servers.contains(&format!("app c.test:{} ", c.addr.port())),
        "{servers}"
    );
    assert!(
        servers.contains(" removed "),
        "b shown as removed until the next change: {servers}"
    );
    // A member of a lower priority is a backup: used only when the others are gone.
    dns.set_srv(
        srv,
        vec![
            (10, 1, a.addr.port(), "a.test"),
            (20, 1, c.addr.port(), "c.test"),
        ],
    );
    until(5, "c is a backup", || {
        let w = who_answers(&p, 6);
        w.iter()
            .all(|x| x == "a")
            .then_some(())
            .ok_or(format!("{w:?}"))
    });
    // An outage keeps the members.
    dns.set_silent(true);
    std::thread::sleep(Duration::from_millis(800));
    assert!(who_answers(&p, 4).iter().all(|w| w == "a"));
    // `show config` prints the file, not the answers.
    let (_, cfg) = p.ctl("show config");
    assert!(
        cfg.contains("discover = \"srv:_http._tcp.app.test\""),
        "{cfg}"
    );
    assert!(!cfg.contains("a.test"), "{cfg}");
}
