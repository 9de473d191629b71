//! Helpers for the MySQL tests: real MariaDB servers from tests/support/mariadb.sh (stopped by
//! PID when the guard drops), the real `shardgate` binary in front of them, the real clients
//! (`mariadb`, `mariadb-admin`, `sysbench`, `mysql_async`), and a parser for
//! `show traffic mysql`. Every external command is bounded in time.
#![allow(dead_code)]

pub mod delay;
pub mod raw;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::proxy::run_bounded;
use crate::common::Proxy;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/mariadb.sh");
/// Bound on installing packages (apt-get update + install on a fresh machine).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on one script call (start N instances, stop, restart one).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on one client program run.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Install MariaDB once per test process. `Err` only when it cannot be installed.
fn installed() -> &'static Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let child = Command::new("bash")
            .arg(SCRIPT)
            .arg("install")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
        let out = run_bounded(child, INSTALL_TIMEOUT, "mariadb.sh install");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
}

/// Say loudly that a test did not run. Written to the process's stderr directly (not through
/// the test harness's capture) so it shows in every run's output.
fn skip_loudly(test: &str, why: &str) {
    let mut e = std::io::stderr();
    let _ = writeln!(
        e,
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED {test}: MariaDB could not be installed, nothing was tested.\n\
         !!! {}\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        why.trim().replace('\n', "\n!!! ")
    );
}

fn script(args: &[&str]) -> Output {
    script_env(args, &[])
}

fn script_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {SCRIPT}: {e}"));
    let out = run_bounded(child, SCRIPT_TIMEOUT, &format!("mariadb.sh {args:?}"));
    assert!(
        out.status.success(),
        "mariadb.sh {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// N MariaDB instances on loopback, stopped (by PID) when dropped.
pub struct MariaDb {
    env: PathBuf,
    pub ports: Vec<u16>,
}

impl MariaDb {
    /// Start `n` instances, or `None` (after a loud message) when MariaDB cannot be installed.
    pub fn start(test: &str, n: usize) -> Option<MariaDb> {
        MariaDb::start_env(test, n, &[])
    }

    /// As [`MariaDb::start`], with environment for the script (e.g. `MARIADB_SSL_DIR`).
    pub fn start_env(test: &str, n: usize, env: &[(&str, &str)]) -> Option<MariaDb> {
        if let Err(why) = installed() {
            skip_loudly(test, why);
            return None;
        }
        let out = script_env(&["start", &n.to_string()], env);
        let env = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
        let text =
            std::fs::read_to_string(&env).unwrap_or_else(|e| panic!("{}: {e}", env.display()));
        let ports = (0..n)
            .map(|i| {
                let key = format!("MARIADB_PORT_{i}=");
                text.lines()
                    .find_map(|l| l.strip_prefix(&key))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("no {key} in {}", env.display()))
            })
            .collect();
        Some(MariaDb { env, ports })
    }

    pub fn env_path(&self) -> &Path {
        &self.env
    }

    pub fn stop_one(&self, i: usize) {
        script(&["stop-one", self.env.to_str().unwrap(), &i.to_string()]);
    }

    pub fn start_one(&self, i: usize) {
        script(&["start-one", self.env.to_str().unwrap(), &i.to_string()]);
    }

    pub fn kill_one(&self, i: usize) {
        script(&["kill-one", self.env.to_str().unwrap(), &i.to_string()]);
    }

    /// Run SQL on instance `i` directly as the admin account; tab-separated rows, no header.
    pub fn sql(&self, i: usize, sql: &str) -> String {
        let out = cli(
            self.ports[i],
            "sg_root",
            "pw_root",
            None,
            &["-N", "-B", "-e", sql],
            None,
        );
        assert!(
            out.status.success(),
            "sql on instance {i} failed: {sql}\n{}",
            stderr(&out)
        );
        stdout(&out)
    }

    /// (BYTES_RECEIVED, BYTES_SENT, TOTAL_CONNECTIONS) of `user` summed over all instances.
    pub fn user_statistics(&self, user: &str) -> (u64, u64, u64) {
        let mut sum = (0, 0, 0);
        for i in 0..self.ports.len() {
            let rows = self.sql(
                i,
                &format!(
                    "SELECT BYTES_RECEIVED, BYTES_SENT, TOTAL_CONNECTIONS FROM information_schema.USER_STATISTICS WHERE USER = '{user}'"
                ),
            );
            for line in rows.lines() {
                let v: Vec<u64> = line.split('\t').map(|x| x.parse().unwrap()).collect();
                sum.0 += v[0];
                sum.1 += v[1];
                sum.2 += v[2];
            }
        }
        sum
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(SCRIPT)
            .arg("stop")
            .arg(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(|c| run_bounded(c, SCRIPT_TIMEOUT, "mariadb.sh stop"));
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run the `mariadb` CLI against 127.0.0.1:`port` with `args`, feeding `stdin` if given.
pub fn cli(
    port: u16,
    user: &str,
    pass: &str,
    db: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut cmd = Command::new("mariadb");
    cmd.arg("--no-defaults")
        .arg("-h127.0.0.1")
        .arg(format!("-P{port}"))
        .arg(format!("-u{user}"))
        .arg(format!("-p{pass}"))
        .args(args);
    if let Some(db) = db {
        cmd.arg(db);
    }
    run_with_stdin(cmd, stdin, "mariadb")
}

pub fn run_with_stdin(mut cmd: Command, stdin: Option<&str>, what: &str) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    if let Some(text) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(text.as_bytes()).unwrap();
    }
    run_bounded(child, CLIENT_TIMEOUT, what)
}

/// The proxy's config for one `[[mysql]]` frontend "db" on `{port:db}` in front of `ports`.
pub fn config(shards: u32, ports: &[u16], frontend_extra: &str, pool_extra: &str) -> String {
    let servers: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{{ name = \"m{i}\", addr = \"127.0.0.1:{p}\" }}"))
        .collect();
    format!(
        "{}\n[[mysql]]\nname = \"db\"\nlisten = [\"127.0.0.1:{{port:db}}\"]\npool = \"db\"\n{frontend_extra}\n\n\
         [pool.db]\nbalance = \"least_requests\"\nconnect_timeout = \"1s\"\n{pool_extra}\nservers = [{}]\n",
        crate::common::daemon(shards),
        servers.join(", ")
    )
}

/// One user's line of `show traffic mysql`.
#[derive(Debug, Clone, Default)]
pub struct UserLine {
    pub connections: u64,
    pub requests: u64,
    pub errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub time_total_ms: f64,
    pub time_mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub login_failures: u64,
    pub unparsed: u64,
    pub commands: HashMap<String, u64>,
}

impl UserLine {
    pub fn cmd(&self, name: &str) -> u64 {
        self.commands.get(name).copied().unwrap_or(0)
    }
}

/// `show traffic mysql` parsed: users, and `frontend` lines as key → value maps.
pub struct Traffic {
    pub text: String,
    pub users: HashMap<String, UserLine>,
    pub frontends: HashMap<String, HashMap<String, u64>>,
}

impl Traffic {
    pub fn user(&self, name: &str) -> UserLine {
        self.users
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no user {name} in show traffic mysql:\n{}", self.text))
    }

    pub fn front(&self, key: &str) -> u64 {
        self.frontends["db"][key]
    }
}

pub fn traffic(p: &Proxy) -> Traffic {
    let (code, text) = p.ctl("show traffic mysql");
    assert_eq!(code, 0, "show traffic mysql failed: {text}");
    let mut lines = text.lines();
    let header = lines.next().expect("header line");
    assert!(
        header.starts_with("user connections requests errors bytes_in bytes_out"),
        "{text}"
    );
    let mut users = HashMap::new();
    let mut frontends = HashMap::new();
    for l in lines {
        let f: Vec<&str> = l.split(' ').collect();
        if f[0] == "frontend" {
            let kv = f[2..]
                .iter()
                .filter_map(|x| x.split_once('='))
                .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
                .collect();
            frontends.insert(f[1].to_string(), kv);
            continue;
        }
        assert_eq!(f.len(), 15, "bad line {l:?} in\n{text}");
        let n = |i: usize| f[i].parse::<u64>().unwrap();
        let x = |i: usize| f[i].parse::<f64>().unwrap();
        let commands = if f[14] == "-" {
            HashMap::new()
        } else {
            f[14]
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_string(), v.parse().unwrap())
                })
                .collect()
        };
        users.insert(
            f[0].to_string(),
            UserLine {
                connections: n(1),
                requests: n(2),
                errors: n(3),
                bytes_in: n(4),
                bytes_out: n(5),
                time_total_ms: x(6),
                time_mean_ms: x(7),
                p50_ms: x(8),
                p99_ms: x(10),
                max_ms: x(11),
                login_failures: n(12),
                unparsed: n(13),
                commands,
            },
        );
    }
    Traffic {
        text,
        users,
        frontends,
    }
}

/// `show servers` as (server name → (state, inflight)).
pub fn servers(p: &Proxy) -> HashMap<String, (String, u64)> {
    let (code, text) = p.ctl("show servers");
    assert_eq!(code, 0, "{text}");
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[1].to_string(), (f[3].to_string(), f[4].parse().unwrap()))
        })
        .collect()
}

/// Poll `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// mysql_async options for a TCP connection (never the server's UNIX socket, which would
/// bypass the proxy).
pub fn opts(port: u16, user: &str, pass: &str, db: Option<&str>) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(pass))
        .db_name(db)
        .prefer_socket(false)
        .into()
}

/// Run a future on a current-thread tokio runtime, failing the test after `timeout`.
pub fn block_on<F: std::future::Future>(timeout: Duration, fut: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| panic!("mysql_async work did not finish within {timeout:?}"))
    })
}

/// Parse sysbench's `queries:` total.
pub fn sysbench_queries(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("queries:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no queries: line in sysbench output:\n{out}"))
}

pub fn sysbench(port: u16, user: &str, pass: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sysbench");
    cmd.arg("--db-driver=mysql")
        .arg("--mysql-host=127.0.0.1")
        .arg(format!("--mysql-port={port}"))
        .arg(format!("--mysql-user={user}"))
        .arg(format!("--mysql-password={pass}"))
        .arg("--mysql-db=sbtest")
        .args(args);
    cmd
}
