//! `loadgen verify`: the run that says whether a proxy meets the project's targets. It holds
//! 10,000 keep-alive connections open through the proxy for the whole run, sends a constant
//! rate (open loop, latency corrected for coordinated omission) spread over all of them in
//! turn, and exits 0 only if every target held:
//!
//! - all connections established before the load started, and none lost or reopened;
//! - achieved throughput >= `--min-rate` (3000 req/s);
//! - zero failed requests (no errors, no non-2xx/3xx reply, nothing left unsent or unanswered);
//! - corrected p99 latency <= `--max-p99-ms` (100 ms by default; see docs/loadgen.md).
//!
//! Given `--config`, it first starts what the run needs: one `loadgen serve` per pool server in
//! the proxy's TOML config and the proxy itself, and stops them (by PID) at the end.

use crate::cli::{LoadArgs, VerifyArgs};
use crate::engine::Plan;
use crate::http;
use crate::load;
use crate::report::Summary;
use crate::sys;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the proxy may take to start listening.
const PROXY_START: Duration = Duration::from_secs(15);
/// How long a stopped child may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub(crate) fn run(a: VerifyArgs) -> Result<i32, String> {
    // Ctrl-C ends the load phase early instead of killing us, so the children still get stopped.
    sys::catch_interrupts();
    let mut children = Children(Vec::new());
    let (url_text, backends) = match &a.config {
        Some(cfg) => start_from_config(cfg, &a, &mut children)?,
        None => (a.url.clone(), a.backends.clone()),
    };
    let result = verify(&a, &url_text, &backends);
    children.stop_all();
    result
}

fn verify(a: &VerifyArgs, url_text: &str, backends: &[String]) -> Result<i32, String> {
    let url = crate::url::parse(url_text)?;
    let addr = crate::url::resolve(&url.host, url.port)?;
    let spec = http::RequestSpec {
        method: "GET".into(),
        ..Default::default()
    };
    let load_args = LoadArgs {
        connections: a.connections,
        threads: a.threads,
        duration: Some(a.duration),
        requests: None,
        rate: Some(a.rate),
        ramp: a.ramp,
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        source: a.source.clone(),
        json: a.json.clone(),
        hgrm: a.hgrm.clone(),
        plot: a.plot.clone(),
    };
    let plan: Plan = load::plan(&load_args, vec![addr])?;
    load::preflight(&plan, &[url_text.to_string()])?;
    let before: Vec<Option<BackendStats>> =
        backends.iter().map(|b| backend_stats(b).ok()).collect();
    println!("{}", load::banner(url_text, &plan));
    println!(
        "verify: targets: {} connections held, >= {} req/s, 0 failed requests, corrected p99 <= {} ms",
        a.connections, a.min_rate, a.max_p99_ms
    );
    let proto = http::Http::new(
        vec![http::Group {
            requests: vec![http::render_request(&url, &spec)],
        }],
        &spec,
    );
    let outcome = load::execute(&proto, &plan)?;
    let (s, _) = load::finish(
        "verify",
        vec![url_text.to_string()],
        &plan,
        &proto,
        &outcome,
        &load_args,
    )?;

    for (b, before) in backends.iter().zip(before) {
        match (before, backend_stats(b)) {
            (Some(x), Ok(y)) => println!(
                "  Backend {b} ({}): {} connections opened by the proxy, {} requests served",
                y.name,
                y.connections.saturating_sub(x.connections + 1),
                y.requests - x.requests
            ),
            (_, Err(e)) => println!("  Backend {b}: stats unavailable ({e})"),
            (None, Ok(_)) => println!("  Backend {b}: stats unavailable before the run"),
        }
    }

    let checks = checks(a, &s);
    println!("verify:");
    for (ok, what) in &checks {
        println!("  [{}] {what}", if *ok { "PASS" } else { "FAIL" });
    }
    let pass = checks.iter().all(|(ok, _)| *ok);
    println!("verify: {}", if pass { "PASS" } else { "FAIL" });
    Ok(if pass { 0 } else { 1 })
}

/// The verdict, one line per target.
fn checks(a: &VerifyArgs, s: &Summary) -> Vec<(bool, String)> {
    let c = a.connections as u64;
    let failed = s.error_total + s.non_success + s.unsent + s.unfinished;
    let mut v = vec![
        (
            s.open_at_load_start == c && s.open_at_end == c && s.connections_opened == c,
            format!(
                "connections: {} open when load started, {} at the end, {} opened in all (want {c} each)",
                s.open_at_load_start, s.open_at_end, s.connections_opened
            ),
        ),
        (s.req_per_s >= a.min_rate, format!("throughput: {:.1} req/s (want >= {})", s.req_per_s, a.min_rate)),
        (
            failed == 0,
            format!(
                "failed requests: {failed} ({} errors, {} non-2xx/3xx, {} unsent, {} unanswered)",
                s.error_total, s.non_success, s.unsent, s.unfinished
            ),
        ),
        (
            s.latency_ms.p99 <= a.max_p99_ms,
            format!("p99 latency (corrected): {:.2} ms (want <= {} ms)", s.latency_ms.p99, a.max_p99_ms),
        ),
    ];
    if sys::interrupted() {
        v.push((false, "the run was interrupted before its end".into()));
    }
    v
}

struct BackendStats {
    name: String,
    connections: u64,
    requests: u64,
}

/// Reads a `loadgen serve` backend's `/__stats` (one connection, counted by the backend).
fn backend_stats(addr: &str) -> Result<BackendStats, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(b"GET /__stats HTTP/1.1\r\nHost: stats\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write {addr}: {e}"))?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .map_err(|e| format!("read {addr}: {e}"))?;
    let json = body.split("\r\n\r\n").nth(1).ok_or("no body")?;
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("bad stats: {e}"))?;
    Ok(BackendStats {
        name: v["name"].as_str().unwrap_or("").to_string(),
        connections: v["connections"].as_u64().unwrap_or(0),
        requests: v["requests"].as_u64().unwrap_or(0),
    })
}

/// Processes verify started; stopped by PID (SIGTERM, then kill after a grace period).
struct Children(Vec<(String, Child)>);

impl Children {
    fn stop_all(&mut self) {
        for (_, c) in &self.0 {
            let _ = sys::kill(c.id(), sys::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (name, c) in &mut self.0 {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(c.try_wait(), Ok(None)) {
                eprintln!("verify: {name} did not stop on SIGTERM; killing it");
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Starts one `loadgen serve` per pool server and the proxy from `cfg`; returns the proxy URL
/// and the backend addresses.
fn start_from_config(
    cfg: &Path,
    a: &VerifyArgs,
    children: &mut Children,
) -> Result<(String, Vec<String>), String> {
    let text =
        std::fs::read_to_string(cfg).map_err(|e| format!("cannot read {}: {e}", cfg.display()))?;
    let (listen, servers) = parse_config(&text).map_err(|e| format!("{}: {e}", cfg.display()))?;
    let me = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    for (name, addr) in &servers {
        let mut child = Command::new(&me)
            .args(["serve", "--listen", addr, "--name", name])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start loadgen serve for {name}: {e}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut reader = BufReader::new(stdout);
        let _ = reader.read_line(&mut line);
        children.0.push((format!("backend {name}"), child));
        if !line.contains("listening") {
            return Err(format!("backend {name} did not start on {addr}"));
        }
        // Keep draining its output so it never blocks on a full pipe (it prints on exit).
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = reader.read_to_string(&mut sink);
        });
        println!("verify: started backend {name} on {addr}");
    }
    let bin = a
        .shardgate
        .clone()
        .unwrap_or_else(|| me.with_file_name("shardgate"));
    let log_path = std::env::temp_dir().join(format!(
        "loadgen-verify-shardgate-{}.log",
        std::process::id()
    ));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(&bin)
        .arg("--config")
        .arg(cfg)
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot start the proxy {}: {e}", bin.display()))?;
    children.0.push(("shardgate".into(), child));
    let addr: SocketAddr = crate::url::resolve_listen(&listen)?;
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        if sys::interrupted() {
            return Err("interrupted while waiting for the proxy".into());
        }
        let exited = children
            .0
            .last_mut()
            .and_then(|(_, c)| c.try_wait().ok().flatten());
        if exited.is_some() || start.elapsed() > PROXY_START {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "the proxy ({}) did not start listening on {addr}; its log:\n{}",
                bin.display(),
                tail.join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "verify: started {} (log: {})",
        bin.display(),
        log_path.display()
    );
    let backends = servers.into_iter().map(|(_, addr)| addr).collect();
    Ok((format!("http://{listen}/"), backends))
}

/// The first HTTP listener and every pool server (name, addr) of a shardgate config.
fn parse_config(text: &str) -> Result<(String, Vec<(String, String)>), String> {
    let v: toml::Table = text.parse().map_err(|e| format!("invalid TOML: {e}"))?;
    let listen = v
        .get("http")
        .and_then(|h| h.as_array())
        .and_then(|h| h.first())
        .and_then(|h| h.get("listen"))
        .and_then(|l| l.as_array())
        .and_then(|l| l.first())
        .and_then(|l| l.as_str())
        .ok_or("no [[http]] listener with a listen address")?
        .to_string();
    let mut servers = Vec::new();
    if let Some(pools) = v.get("pool").and_then(|p| p.as_table()) {
        for (pool, p) in pools {
            for s in p
                .get("servers")
                .and_then(|s| s.as_array())
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                let addr = s
                    .get("addr")
                    .and_then(|a| a.as_str())
                    .ok_or(format!("pool.{pool}: server without addr"))?;
                let name = s.get("name").and_then(|n| n.as_str()).unwrap_or(addr);
                servers.push((name.to_string(), addr.to_string()));
            }
        }
    }
    if servers.is_empty() {
        return Err("no [pool.*] servers to start backends for".into());
    }
    Ok((listen, servers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listener_and_servers_from_config() {
        let cfg = r#"
[daemon]
shards = 0
[[http]]
name = "www"
listen = ["127.0.0.1:18080"]
default_pool = "app"
[pool.app]
balance = "least_requests"
servers = [ { name = "app1", addr = "127.0.0.1:19001" }, { name = "app2", addr = "127.0.0.1:19002" } ]
"#;
        let (listen, servers) = parse_config(cfg).unwrap();
        assert_eq!(listen, "127.0.0.1:18080");
        assert_eq!(
            servers,
            vec![
                ("app1".into(), "127.0.0.1:19001".into()),
                ("app2".into(), "127.0.0.1:19002".into())
            ]
        );
        assert!(parse_config("[daemon]\n").unwrap_err().contains("[[http]]"));
    }
}
