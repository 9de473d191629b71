//! Runs the real `shardgate` binary for one test: writes the config into a fresh temp dir,
//! fills its placeholders, starts the daemon, waits until it listens, and kills it by PID when
//! the guard drops (printing its log if the test is failing).
//!
//! Placeholders in the TOML (any `{word}` made of letters, digits, `_` and `:`; inline tables
//! such as `{ name = "a" }` are left alone):
//! - `{port:NAME}`: a free loopback port picked for NAME (same NAME, same port);
//! - `{socket}`: the control socket path in the temp dir;
//! - `{io_driver}`: `$SHARDGATE_TEST_IO_DRIVER`, default `auto`;
//! - `{NAME}`: a value given to [`Proxy::start_with`] (typically a backend address).

use std::collections::HashMap;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const BIN: &str = env!("CARGO_BIN_EXE_shardgate");
/// How long the daemon gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one `shardgate ctl` run.
const CTL_TIMEOUT: Duration = Duration::from_secs(10);

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, unique per process and call.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "shardgate-{tag}-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

pub fn io_driver() -> String {
    std::env::var("SHARDGATE_TEST_IO_DRIVER").unwrap_or_else(|_| "auto".into())
}

/// The daemon with `shards` shards and one frontend `web` (on `{port:web}`) whose default pool
/// `app` has one server at `server`; each `*_extra` is spliced into its section.
pub fn single_pool(
    server: String,
    shards: u32,
    daemon_extra: &str,
    frontend_extra: &str,
    pool_extra: &str,
) -> Proxy {
    let cfg = super::daemon(shards)
        + daemon_extra
        + &format!(
            r#"
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"
{frontend_extra}

[pool.app]
{pool_extra}
servers = [ {{ name = "app", addr = "{{app}}" }} ]
"#
        );
    Proxy::start_with(&cfg, &[("app", server)])
}

pub struct Proxy {
    child: Child,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub socket: PathBuf,
    ports: HashMap<String, u16>,
    exit: Option<ExitStatus>,
}

impl Proxy {
    /// Starts the daemon and returns once every listen address accepted one probe connection
    /// (opened and closed at once: counters such as `connections.accepted` include it) and
    /// the control socket, if configured, exists.
    pub fn start(toml: &str) -> Proxy {
        Proxy::start_with(toml, &[])
    }

    pub fn start_with(toml: &str, vars: &[(&str, String)]) -> Proxy {
        Proxy::start_env(toml, vars, &[])
    }

    /// Like [`Proxy::start_with`], with extra environment variables for the daemon (e.g.
    /// `NOTIFY_SOCKET`).
    pub fn start_env(toml: &str, vars: &[(&str, String)], env: &[(&str, &str)]) -> Proxy {
        let dir = temp_dir("proxy");
        let socket = dir.join("ctl.sock");
        let mut ports = HashMap::new();
        let text = fill(toml, vars, &socket, &mut ports);
        let config_path = dir.join("shardgate.toml");
        fs::write(&config_path, &text).unwrap();
        let listens = listen_addrs(&text);
        let wants_socket = toml.contains("{socket}");

        let log = File::create(dir.join("daemon.log")).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&config_path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        let mut p = Proxy {
            child,
            dir,
            config_path,
            socket,
            ports,
            exit: None,
        };

        let deadline = Instant::now() + START_TIMEOUT;
        let mut pending = listens.clone();
        loop {
            pending.retain(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_err());
            let socket_ready = !wants_socket || p.socket.exists();
            if pending.is_empty() && socket_ready {
                return p;
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                p.exit = Some(st);
                panic!(
                    "shardgate exited ({st}) before listening on {pending:?}\n--- config ---\n{text}\n--- log ---\n{}",
                    p.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "shardgate not listening on {pending:?} (control socket ready: {socket_ready}) after {START_TIMEOUT:?}\n--- config ---\n{text}\n--- log ---\n{}",
                    p.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Rewrites the running daemon's config file (for a `reload`) from `toml`, filling its
    /// placeholders as [`Proxy::start_with`] does: a `{port:NAME}` seen before keeps its port,
    /// a new NAME gets a new free one. Returns the text written.
    pub fn rewrite(&mut self, toml: &str, vars: &[(&str, String)]) -> String {
        let text = fill(toml, vars, &self.socket, &mut self.ports);
        fs::write(&self.config_path, &text)
            .unwrap_or_else(|e| panic!("write {}: {e}", self.config_path.display()));
        text
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port picked for `{port:NAME}`.
    pub fn port(&self, name: &str) -> u16 {
        *self
            .ports
            .get(name)
            .unwrap_or_else(|| panic!("no {{port:{name}}} in the config"))
    }

    /// `127.0.0.1:` the port picked for `{port:NAME}`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port(name)))
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Runs `shardgate ctl --socket SOCKET CMD`: (exit code, stdout).
    pub fn ctl(&self, cmd: &str) -> (i32, String) {
        let (code, out, _) = ctl_at(&self.socket, cmd);
        (code, out)
    }

    /// Like [`Proxy::ctl`] with stderr too.
    pub fn ctl_full(&self, cmd: &str) -> (i32, String, String) {
        ctl_at(&self.socket, cmd)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits up to `timeout` for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exit = Some(st);
                return self.exit;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!(
                "--- shardgate log (last {} lines, {}) ---",
                tail.len(),
                self.dir.display()
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `shardgate ctl --socket PATH CMD` with a time bound: (exit code, stdout, stderr).
pub fn ctl_at(socket: &Path, cmd: &str) -> (i32, String, String) {
    let child = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN} ctl: {e}"));
    let out = run_bounded(child, CTL_TIMEOUT, &format!("shardgate ctl {cmd:?}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits for a child's output, killing it by PID and panicking if it outlives `timeout`.
pub fn run_bounded(child: Child, timeout: Duration, what: &str) -> std::process::Output {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            // SAFETY: kill(2) on the PID of our own child, which the waiter thread has not
            // reaped yet (it is still waiting).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            panic!("{what} did not finish within {timeout:?}");
        }
    }
}

/// Replaces the placeholders; `{port:NAME}` reuses the port `ports` has for NAME and adds
/// the ones it picks for new names.
fn fill(
    toml: &str,
    vars: &[(&str, String)],
    socket: &Path,
    ports: &mut HashMap<String, u16>,
) -> String {
    let mut out = String::with_capacity(toml.len());
    let mut rest = toml;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let word_end = after.find('}');
        let word = word_end.map(|j| &after[..j]);
        match word {
            Some(w)
                if !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') =>
            {
                let value = if let Some(name) = w.strip_prefix("port:") {
                    // Never a port this test process handed out before: two daemons of tests
                    // running at once would both bind it (SO_REUSEPORT) and share clients.
                    let port = *ports
                        .entry(name.to_string())
                        .or_insert_with(super::free_port);
                    port.to_string()
                } else if w == "socket" {
                    socket.display().to_string()
                } else if w == "io_driver" {
                    io_driver()
                } else if let Some((_, v)) = vars.iter().find(|(k, _)| *k == w) {
                    v.clone()
                } else {
                    panic!("unknown placeholder {{{w}}} in test config");
                };
                out.push_str(&value);
                rest = &after[w.len() + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every `listen` address of every frontend in the (filled) config.
fn listen_addrs(text: &str) -> Vec<SocketAddr> {
    let table: toml::Table = toml::from_str(text)
        .unwrap_or_else(|e| panic!("test config is not valid TOML: {e}\n{text}"));
    let mut out = Vec::new();
    for section in ["http", "mysql"] {
        let Some(toml::Value::Array(fronts)) = table.get(section) else {
            continue;
        };
        for f in fronts {
            if let Some(toml::Value::Array(listen)) = f.get("listen") {
                for a in listen {
                    if let Some(s) = a.as_str() {
                        let addr: SocketAddr =
                            s.parse().unwrap_or_else(|e| panic!("listen {s:?}: {e}"));
                        out.push(if addr.ip().is_unspecified() {
                            SocketAddr::from(([127, 0, 0, 1], addr.port()))
                        } else {
                            addr
                        });
                    }
                }
            }
        }
    }
    // The admin listener starts on its own thread: a test that talks to it first must not
    // race its bind (seen as a refused connect under a loaded parallel suite).
    if let Some(addr) = table
        .get("admin")
        .and_then(|a| a.get("listen"))
        .and_then(|l| l.as_str())
        .and_then(|s| s.parse::<SocketAddr>().ok())
    {
        out.push(addr);
    }
    out
}
