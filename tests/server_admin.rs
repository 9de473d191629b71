//! Steering servers from the command socket: `set server POOL/SRV weight N` and `state
//! ready|drain|maint`, `disable`/`enable server`, and what `show servers` says about each,
//! observed from where requests go (each backend answers with its own name) on 2 shards.

mod common;

use common::*;
use std::collections::HashMap;

fn three_servers(a: &Backend, b: &Backend, c: &Backend, pool_extra: &str) -> Proxy {
    three_servers_with(2, a, b, c, pool_extra, "")
}

/// As [`three_servers`] on `shards` shards, with `subtables` (`[pool.app.sticky]`, ...) after
/// the pool.
fn three_servers_with(
    shards: u32,
    a: &Backend,
    b: &Backend,
    c: &Backend,
    pool_extra: &str,
    subtables: &str,
) -> Proxy {
    let cfg = common::daemon(shards)
        + &format!(
            r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"

[pool.app]
{pool_extra}
servers = [
  {{ name = "a", addr = "{}" }},
  {{ name = "b", addr = "{}" }},
  {{ name = "c", addr = "{}" }},
]
{subtables}
"#,
            a.addr_string(),
            b.addr_string(),
            c.addr_string()
        );
    Proxy::start(&cfg)
}

/// `n` requests over fresh connections (so both shards serve), counted by backend name.
fn spread(p: &Proxy, n: usize) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for i in 0..n {
        let mut c = Conn::connect(p.addr("web"));
        let r = c.get(&format!("/r{i}"), "h");
        assert_eq!(r.status, 200, "{}", r.summary());
        *by.entry(r.backend().to_owned()).or_insert(0) += 1;
    }
    by
}

/// `show servers` as a map from server name to its columns.
fn servers(p: &Proxy) -> HashMap<String, HashMap<String, String>> {
    let (code, text) = p.ctl("show servers");
    assert_eq!(code, 0, "{text}");
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(' ').collect();
    lines
        .map(|l| {
            let cols: HashMap<String, String> = head
                .iter()
                .zip(l.split(' '))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect();
            (cols["server"].clone(), cols)
        })
        .collect()
}

#[test]
fn weight_zero_drain_and_maint_take_a_server_out_of_new_requests() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let p = three_servers(&a, &b, &c, "");
    let by = spread(&p, 60);
    assert!(by.len() == 3, "all three serve at first: {by:?}");

    let (code, out) = p.ctl("set server app/a weight 0");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "app/a weight 0 (was 1)");
    let (code, out) = p.ctl("set server app/b state drain");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "app/b state drain (was ready)");
    let by = spread(&p, 40);
    assert_eq!(
        by.get("c"),
        Some(&40),
        "only c may take new requests: {by:?}"
    );
    let s = servers(&p);
    assert_eq!(s["a"]["weight"], "0");
    assert_eq!(s["a"]["state"], "drain", "{s:?}");
    assert_eq!(s["b"]["admin"], "drain");
    assert_eq!(s["b"]["state"], "drain");
    assert_eq!(s["c"]["state"], "up");

    // Every server out: 503 with Retry-After, nothing reaches a backend.
    let (code, out) = p.ctl("set server app/c state maint");
    assert_eq!(code, 0, "{out}");
    let before = a.requests() + b.requests() + c.requests();
    let mut conn = Conn::connect(p.addr("web"));
    let r = conn.get("/none", "h");
    assert_eq!(r.status, 503, "{}", r.summary());
    assert_eq!(a.requests() + b.requests() + c.requests(), before);
    assert_eq!(servers(&p)["c"]["state"], "maint");

    // Back: weights are honoured again.
    assert_eq!(p.ctl("set server app/a weight 3").0, 0);
    assert_eq!(p.ctl("set server app/b state ready").0, 0);
    assert_eq!(p.ctl("enable server app/c").0, 0);
    let by = spread(&p, 100);
    let (na, nb, nc) = (by["a"], by["b"], by["c"]);
    // Round-robin is per shard, weights 3:1:1 over 2 shards: a gets about 60 %.
    assert!((50..=70).contains(&na), "a {na}, b {nb}, c {nc}");
    assert!(nb >= 12 && nc >= 12, "a {na}, b {nb}, c {nc}");
    let s = servers(&p);
    assert_eq!(s["a"]["weight"], "3");
    assert_eq!(s["a"]["eff_weight"], "3");
}

#[test]
fn bad_set_server_commands_get_an_error_line_and_change_nothing() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let p = three_servers(&a, &b, &c, "");
    for (cmd, want) in [
        ("set server app/a weight 1001", "expected an integer 0-1000"),
        ("set server app/a weight -1", "expected an integer 0-1000"),
        ("set server app/a weight x", "expected an integer 0-1000"),
        (
            "set server app/a state up",
            "expected ready, drain or maint",
        ),
        (
            "set server app/zz weight 2",
            "pool 'app' has no server named 'zz'",
        ),
        ("set server nopool/a weight 2", "no pool named 'nopool'"),
        ("set server app/a", "expected POOL/SERVER weight N"),
        (
            "set server app/a colour red",
            "expected POOL/SERVER weight N",
        ),
        ("set server a weight 2", "expected POOL/SERVER"),
    ] {
        let (code, out, err) = p.ctl_full(cmd);
        assert_eq!(code, 1, "{cmd}: {out} {err}");
        let all = format!("{out}{err}");
        assert!(
            all.contains("error: set server: ") && all.contains(want),
            "{cmd}: {all}"
        );
    }
    let s = servers(&p);
    for n in ["a", "b", "c"] {
        assert_eq!(s[n]["weight"], "1", "{s:?}");
        assert_eq!(s[n]["admin"], "ready", "{s:?}");
    }
}

#[test]
fn show_servers_counts_queued_requests_and_sticky_clients() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    // One shard, one connection per server: the third concurrent request to a server waits.
    let pool = "balance = \"hash\"\nhash_key = \"uri\"\nmax_connections_per_server = 1\nmax_idle_per_server = 1";
    let p = three_servers_with(1, &a, &b, &c, pool, "");
    // Every request for this URI hashes to one server; three at once: one served, two queued.
    let path = "/delay/1500";
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let addr = p.addr("web");
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                c.get(path, "h").status
            })
        })
        .collect();
    let (s, ok) = common::observe::poll_until(
        std::time::Duration::from_secs(5),
        || servers(&p),
        |s| s.values().any(|cols| cols["queue"] == "2"),
    );
    assert!(ok, "no server shows 2 queued: {s:?}");
    let busy: Vec<_> = s.values().filter(|c| c["inflight"] == "1").collect();
    assert_eq!(busy.len(), 1, "{s:?}");
    assert_eq!(busy[0]["queue"], "2");
    for st in clients {
        assert_eq!(st.join().unwrap(), 200);
    }
    let s = servers(&p);
    assert!(
        s.values().all(|c| c["queue"] == "0" && c["sticky"] == "-"),
        "{s:?}"
    );

    // source_ip stickiness: the one client (127.0.0.1) is counted on the server it sticks to.
    drop(p);
    let cfg_sticky = "\n[pool.app.sticky]\nmode = \"source_ip\"\n";
    let p = three_servers_with(2, &a, &b, &c, "", cfg_sticky);
    let by = spread(&p, 10);
    assert_eq!(by.len(), 1, "one client, one server: {by:?}");
    let (name, _) = by.into_iter().next().unwrap();
    let s = servers(&p);
    for (n, cols) in &s {
        let want = if *n == name { "1" } else { "0" };
        assert_eq!(cols["sticky"], want, "{s:?}");
    }
}
