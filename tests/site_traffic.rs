//! One bill per site (`[[site]]`, `show traffic site`, the traffic log's `site` lines), with
//! the real binary in front of a real HTTP backend and a real MariaDB (tests/support/mariadb.sh):
//! HTTP to several hosts on two frontends and MySQL as two users, then every site's numbers
//! must equal the sums of the `show traffic http` and `show traffic mysql` lines of its hosts
//! and users, and the traffic log's `site` lines those of the `http` and `mysql` lines of each
//! period. Config errors name file and key; a reload changes the sites at once.

mod common;
mod mysql_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proxy::{run_bounded, temp_dir, BIN};
use common::{Backend, Conn, Proxy};
use mysql_support::{cli, stderr, wait_until, MariaDb};

/// `show traffic http` as (frontend, site) → [requests, bytes_in, bytes_out].
fn http_lines(p: &Proxy) -> BTreeMap<(String, String), [u64; 3]> {
    let (code, text) = p.ctl("show traffic http");
    assert_eq!(code, 0, "{text}");
    let mut out = BTreeMap::new();
    for l in text.lines().skip(1) {
        if l.starts_with("last_period") {
            continue;
        }
        let f: Vec<&str> = l.split(' ').collect();
        let n = |i: usize| f[i].parse::<u64>().unwrap_or_else(|_| panic!("{l}"));
        out.insert((f[0].to_owned(), f[1].to_owned()), [n(2), n(3), n(4)]);
    }
    out
}

/// `show traffic site` (totals only) as site → its ten numbers.
fn site_lines(p: &Proxy) -> BTreeMap<String, [u64; 10]> {
    let (code, text) = p.ctl("show traffic site");
    assert_eq!(code, 0, "{text}");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("site http_requests http_bytes_in http_bytes_out mysql_connections mysql_requests mysql_errors mysql_bytes_in mysql_bytes_out bytes_in bytes_out"),
        "{text}"
    );
    let mut out = BTreeMap::new();
    for l in lines.take_while(|l| !l.starts_with("last_period")) {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f.len(), 11, "{l}");
        let mut v = [0u64; 10];
        for (i, x) in f[1..].iter().enumerate() {
            v[i] = x.parse().unwrap_or_else(|_| panic!("{l}"));
        }
        out.insert(f[0].to_owned(), v);
    }
    out
}

/// `show traffic mysql` (its JSON form: the totals without the traffic log's `last_period`
/// lines) as user → [connections, requests, errors, bytes_in, bytes_out], and the `db`
/// frontend's open sessions.
struct Mysql {
    users: BTreeMap<String, [u64; 5]>,
    active: u64,
    text: String,
}

fn mysql_lines(p: &Proxy) -> Mysql {
    let (code, text) = p.ctl("json show traffic mysql");
    assert_eq!(code, 0, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut users = BTreeMap::new();
    for r in v["rows"].as_array().unwrap() {
        let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
        let user = r["user"]
            .as_str()
            .map_or_else(|| r["user"].to_string(), str::to_owned);
        users.insert(
            user,
            [
                n("connections"),
                n("requests"),
                n("errors"),
                n("bytes_in"),
                n("bytes_out"),
            ],
        );
    }
    let active = v["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "db")
        .and_then(|f| f["active"].as_u64())
        .unwrap();
    Mysql {
        users,
        active,
        text,
    }
}

/// The bill `show traffic http` and `show traffic mysql` say a site with these hosts (exact
/// site keys) and users has.
fn expected(
    http: &BTreeMap<(String, String), [u64; 3]>,
    mysql: &Mysql,
    hosts: &[&str],
    users: &[&str],
) -> [u64; 10] {
    let mut v = [0u64; 10];
    for ((_, site), t) in http {
        if hosts.contains(&site.as_str()) {
            for (x, y) in v.iter_mut().zip(t) {
                *x += y;
            }
        }
    }
    for u in users {
        if let Some(l) = mysql.users.get(*u) {
            for (x, y) in v[3..8].iter_mut().zip(l) {
                *x += y;
            }
        }
    }
    v[8] = v[1] + v[6];
    v[9] = v[2] + v[7];
    v
}

fn get(p: &Proxy, frontend: &str, host: &str, n: usize) {
    let mut c = Conn::connect(p.addr(frontend));
    for i in 0..n {
        let r = c.get(&format!("/page/{i}"), host);
        assert_eq!(r.status, 200, "{host}: {}", r.summary());
    }
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The traffic log's complete periods: number → its lines (without the trailer), checking
/// that each trailer counts its period's lines.
fn periods(log: &Path) -> BTreeMap<u64, Vec<Vec<String>>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out: BTreeMap<u64, Vec<Vec<String>>> = BTreeMap::new();
    let mut open: Vec<Vec<String>> = Vec::new();
    for l in text.lines() {
        let f: Vec<String> = l.split(' ').map(str::to_owned).collect();
        if f[3] == "end" {
            let n: u64 = f[0].parse().unwrap();
            let lines: usize = f[4].parse().unwrap();
            assert_eq!(lines, open.len(), "period {n}'s trailer counts its lines");
            out.insert(n, std::mem::take(&mut open));
        } else {
            open.push(f);
        }
    }
    out
}

fn stop(p: &mut Proxy) {
    let (code, out) = p.ctl("stop daemon");
    assert_eq!(code, 0, "{out}");
    let st = p.wait_exit(Duration::from_secs(15)).expect("daemon exits");
    assert!(st.success(), "{st}");
}

fn config(db_port: u16, log: &Path) -> String {
    format!(
        r#"{daemon}log_statistics_period = "1s"
traffic_log = "{log}"

[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"

[[http]]
name = "web2"
listen = ["127.0.0.1:{{port:web2}}"]
default_pool = "app"

[[mysql]]
name = "db"
listen = ["127.0.0.1:{{port:db}}"]
pool = "db"

[pool.app]
servers = [ {{ name = "app", addr = "{{app}}" }} ]

[pool.db]
connect_timeout = "1s"
servers = [ {{ name = "m0", addr = "127.0.0.1:{db_port}" }} ]

[[site]]
name = "a.example"
hosts = ["a.example", "*.a.example"]
mysql_users = ["sg_a"]

[[site]]
name = "b.example"
hosts = ["b.example"]
mysql_users = ["sg_b"]

[[site]]
name = "idle.example"
hosts = ["idle.example"]
"#,
        daemon = common::daemon(2),
        log = log.display()
    )
}

#[test]
fn site_bills_equal_the_http_and_mysql_lines_they_sum() {
    let Some(db) = MariaDb::start("site_bills_equal_the_http_and_mysql_lines_they_sum", 1) else {
        return;
    };
    let app = Backend::start("app1");
    let dir = temp_dir("site-traffic");
    let log = dir.join("traffic.log");
    let mut p = Proxy::start_with(&config(db.ports[0], &log), &[("app", app.addr_string())]);
    wait_for(
        "the start-up probe's MySQL session to end",
        Duration::from_secs(10),
        || mysql_lines(&p).active == 0,
    );

    // HTTP: a.example on both frontends, a subdomain through the wildcard (Host with a port
    // and capitals), b.example, and a host of no site.
    get(&p, "web", "a.example", 5);
    get(&p, "web2", "a.example", 3);
    get(&p, "web", "WWW.A.example:8080", 2);
    get(&p, "web", "b.example", 4);
    get(&p, "web", "nobody.example", 6);
    // MySQL: two users, one error for sg_b.
    let port = p.port("db");
    for _ in 0..2 {
        let out = cli(
            port,
            "sg_a",
            "pw_a",
            Some("app"),
            &["-e", "select 1; select 2"],
            None,
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = cli(
        port,
        "sg_b",
        "pw_b",
        Some("app"),
        &["-e", "select 3; select * from no_such_table"],
        None,
    );
    assert!(!out.status.success(), "the error query fails");
    assert!(
        wait_until(Duration::from_secs(10), || mysql_lines(&p).active == 0),
        "client sessions still open"
    );

    let http = http_lines(&p);
    let mysql = mysql_lines(&p);
    let sites = site_lines(&p);
    assert_eq!(
        sites.keys().collect::<Vec<_>>(),
        ["a.example", "b.example", "idle.example"],
        "every configured site, none other"
    );
    let a = expected(&http, &mysql, &["a.example", "www.a.example"], &["sg_a"]);
    let b = expected(&http, &mysql, &["b.example"], &["sg_b"]);
    assert_eq!(sites["a.example"], a, "a: {http:?}\n{}", mysql.text);
    assert_eq!(sites["b.example"], b, "b: {http:?}\n{}", mysql.text);
    assert_eq!(sites["idle.example"], [0; 10]);
    // What the clients did, seen in the bills.
    assert_eq!(a[0], 10, "a.example on two frontends + www.a.example");
    assert_eq!(b[0], 4);
    assert_eq!(a[3], 2, "two logins as sg_a");
    assert!(a[4] >= 4, "at least the four selects: {a:?}");
    assert_eq!(a[5], 0);
    assert_eq!(b[3], 1);
    assert!(b[5] >= 1, "the failed select is an error: {b:?}");
    assert!(a[1] > 0 && a[2] > 0 && a[6] > 0 && a[7] > 0, "{a:?}");
    // nobody.example is in show traffic http and on no bill.
    assert_eq!(http[&("web".into(), "nobody.example".into())][0], 6);

    // JSON: the same numbers.
    let (code, json) = p.ctl("json show traffic site");
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["rows"][0]["site"], "a.example");
    assert_eq!(v["rows"][0]["http_requests"], a[0]);
    assert_eq!(v["rows"][1]["mysql_errors"], b[5]);
    assert_eq!(v["rows"][1]["bytes_out"], b[9]);

    // The traffic log: every period's site lines are the sums of its http and mysql lines,
    // and all periods together (the last written at the stop) are the totals shown.
    wait_for("a period with site lines", Duration::from_secs(5), || {
        periods(&log).values().flatten().any(|l| l[3] == "site")
    });
    let (_, shown) = p.ctl("show traffic site");
    assert!(shown.contains("\nlast_period number="), "{shown}");
    let before_stop = site_lines(&p);
    stop(&mut p);
    let periods = periods(&log);
    let mut summed: BTreeMap<String, [u64; 10]> = BTreeMap::new();
    for (n, lines) in &periods {
        let mut from_rows: BTreeMap<&str, [u64; 10]> = BTreeMap::new();
        for l in lines {
            let num = |i: usize| l[i].parse::<u64>().unwrap();
            let site = match (l[3].as_str(), l[5].as_str()) {
                ("http", "a.example" | "www.a.example") => Some("a.example"),
                ("http", "b.example") => Some("b.example"),
                ("mysql", "sg_a") => Some("a.example"),
                ("mysql", "sg_b") => Some("b.example"),
                _ => None,
            };
            if let Some(s) = site {
                // http: requests, bytes in, out → columns 0, 1, 2; mysql: commands, bytes
                // in, out → columns 4, 6, 7.
                let cols = if l[3] == "http" { [0, 1, 2] } else { [4, 6, 7] };
                let e = from_rows.entry(s).or_default();
                for (c, i) in cols.into_iter().zip(6..) {
                    e[c] += num(i);
                }
            }
            if l[3] == "site" {
                assert_eq!(l[4], "-", "{l:?}");
                assert_eq!(l.len(), 16, "{l:?}");
                let mut v = [0u64; 10];
                for (i, x) in v.iter_mut().enumerate() {
                    *x = num(6 + i);
                }
                assert_eq!(v[8], v[1] + v[6], "{l:?}");
                assert_eq!(v[9], v[2] + v[7], "{l:?}");
                let got = from_rows.get(l[5].as_str()).copied().unwrap_or_default();
                // http requests and bytes, mysql commands and bytes: the period's own lines.
                for i in [0, 1, 2, 4, 6, 7] {
                    assert_eq!(v[i], got[i], "period {n}, {l:?} vs its lines {got:?}");
                }
                let e = summed.entry(l[5].clone()).or_default();
                for (x, y) in e.iter_mut().zip(v) {
                    *x += y;
                }
            }
        }
        // A site with traffic in the period has its line.
        for s in from_rows.keys() {
            assert!(
                lines.iter().any(|l| l[3] == "site" && l[5] == *s),
                "period {n}: no site line for {s}: {lines:?}"
            );
        }
    }
    assert!(
        !summed.contains_key("idle.example"),
        "no line for a site without traffic"
    );
    for s in ["a.example", "b.example"] {
        assert_eq!(summed[s], before_stop[s], "{s}: periods sum to the totals");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const HTTP_ONLY: &str = r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{port:web}"]
default_pool = "app"

[pool.app]
servers = [ { name = "app", addr = "{app}" } ]

[[site]]
name = "a"
hosts = ["a.example"]
mysql_users = ["sg_a"]
"#;

#[test]
fn a_user_claimed_by_two_sites_is_refused_naming_file_and_key() {
    let dir = temp_dir("site-refused");
    let path = dir.join("sites.toml");
    let text = format!(
        "{}{}\n[[site]]\nname = \"b\"\nmysql_users = [\"sg_b\", \"sg_a\"]\n",
        common::daemon(1),
        HTTP_ONLY
    )
    .replace("{io_driver}", "epoll")
    .replace("{socket}", &dir.join("ctl.sock").display().to_string())
    .replace("{port:web}", &common::free_port().to_string())
    .replace("{app}", "127.0.0.1:1");
    std::fs::write(&path, text).unwrap();
    for check in [true, false] {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&path);
        if check {
            cmd.arg("--check");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = run_bounded(child, Duration::from_secs(10), "shardgate");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "check={check}: {err}");
        assert!(
            err.contains(&format!(
                "{}: site[1].mysql_users[1]: \"sg_a\" is already a MySQL user of site[0] (\"a\")",
                path.display()
            )),
            "check={check}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reload_that_changes_sites_applies_and_a_bad_one_is_refused() {
    let app = Backend::start("app1");
    let cfg = format!("{}{}", common::daemon(2), HTTP_ONLY);
    let mut p = Proxy::start_with(&cfg, &[("app", app.addr_string())]);
    get(&p, "web", "a.example", 2);
    get(&p, "web", "b.example", 3);
    get(&p, "web", "x.c.example", 1);
    let before = site_lines(&p);
    assert_eq!(before.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(before["a"][0], 2);

    // Add site b (b.example and a wildcard), move nothing else: b's past traffic is billed at
    // once, since bills are computed from the counters through the running config.
    let changed = format!(
        "{}\n[[site]]\nname = \"b\"\nhosts = [\"b.example\", \"*.c.example\"]\n",
        cfg
    );
    p.rewrite(&changed, &[("app", app.addr_string())]);
    let (code, out) = p.ctl("reload");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok generation"), "{out}");
    let after = site_lines(&p);
    assert_eq!(after.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(after["b"][0], 4, "b.example and x.c.example");
    assert_eq!(after["a"], before["a"]);

    // A reload claiming a.example for b too is refused, naming file and key; the sites stay.
    let bad = changed.replace("\"*.c.example\"", "\"*.c.example\", \"A.example\"");
    p.rewrite(&bad, &[("app", app.addr_string())]);
    let (code, out, err) = p.ctl_full("reload");
    assert_ne!(code, 0, "{out}");
    let said = format!("{out}{err}");
    assert!(
        said.contains(&p.config_path.display().to_string())
            && said
                .contains("site[1].hosts[2]: \"A.example\" is already a host of site[0] (\"a\")"),
        "{said}"
    );
    assert_eq!(site_lines(&p), after, "the running sites stay");

    // SIGHUP applies a list without b.
    p.rewrite(&cfg, &[("app", app.addr_string())]);
    p.signal(libc::SIGHUP);
    wait_for("SIGHUP's reload", Duration::from_secs(10), || {
        site_lines(&p).len() == 1
    });
    stop(&mut p);
}
