//! The command socket: a UNIX stream socket (mode 0600; see [`socket`] for how the path is
//! handled) served by one plain thread, off the
//! shards. A client sends one command line and reads the answer until EOF; an answer that
//! starts with `error:` is a failure. Commands are a table of `{name, usage, help, handler}`
//! that also generates `help` (HAProxy's `cli_kws`). Input is bounded: one line of at most
//! [`MAX_LINE`] bytes, read within [`READ_TIMEOUT`].
//!
//! [`client`] is the other end, used by `shardgate ctl`.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::shared::Shared;

mod socket;

pub use socket::bind;

pub const MAX_LINE: usize = 4096;
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the main thread should do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Stop,
}

/// A command's handler: the daemon's shared state and the words after the command's name.
type Handler = fn(&Shared, &[&str]) -> Result<(String, Action), String>;

struct Command {
    /// The words that select it, e.g. "show stats".
    name: &'static str,
    /// Arguments after the name, for `help`.
    args: &'static str,
    help: &'static str,
    run: Handler,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "help",
        args: "",
        help: "list the commands",
        run: |_, _| Ok((help_text(), Action::None)),
    },
    Command {
        name: "show stats",
        args: "",
        help: "connections active/accepted/handled, requests, connections reading/writing/waiting",
        run: |s, _| Ok((crate::stats::render_stats(&s.stats), Action::None)),
    },
    Command {
        name: "show traffic http",
        args: "",
        help: "per frontend and site (Host): requests, bytes in/out, response time",
        run: |s, _| {
            Ok((
                crate::stats::render_http_traffic(&s.stats, &s.http_names),
                Action::None,
            ))
        },
    },
    Command {
        name: "show traffic mysql",
        args: "",
        help: "per MySQL user: connections, commands, errors, bytes, response time",
        run: |s, _| Ok((crate::proxy::mysql::render_traffic(s), Action::None)),
    },
    Command {
        name: "show servers",
        args: "",
        help: "every pool's servers: state, requests in flight",
        run: |s, _| Ok((render_servers(s), Action::None)),
    },
    Command {
        name: "disable server",
        args: "POOL/SERVER",
        help: "stop sending new requests to a server (in-flight ones finish)",
        run: |s, a| set_server(s, a, true),
    },
    Command {
        name: "enable server",
        args: "POOL/SERVER",
        help: "send requests to a server again",
        run: |s, a| set_server(s, a, false),
    },
    Command {
        name: "stop daemon",
        args: "",
        help: "stop accepting, let in-flight requests finish (daemon.stop_timeout), exit 0",
        run: |_, _| Ok(("stopping\n".into(), Action::Stop)),
    },
];

fn help_text() -> String {
    let mut out = String::new();
    for c in COMMANDS {
        let usage = if c.args.is_empty() {
            c.name.to_string()
        } else {
            format!("{} {}", c.name, c.args)
        };
        let _ = writeln!(out, "{usage:<32} {}", c.help);
    }
    out
}

fn render_servers(s: &Shared) -> String {
    let now = crate::rt::now_ms();
    let mut out = String::from("pool server addr state inflight\n");
    for p in &s.pools {
        for sv in p.servers.iter() {
            let state = if sv.is_disabled() {
                "disabled"
            } else if sv.is_down(now) {
                "down"
            } else {
                "up"
            };
            let _ = writeln!(
                out,
                "{} {} {} {} {}",
                p.name,
                sv.name,
                sv.addr,
                state,
                sv.inflight()
            );
        }
    }
    out
}

fn set_server(s: &Shared, args: &[&str], disabled: bool) -> Result<(String, Action), String> {
    let [target] = args else {
        return Err("expected POOL/SERVER".into());
    };
    let (pool, server) = target.split_once('/').ok_or("expected POOL/SERVER")?;
    let p = s
        .pools
        .iter()
        .find(|p| p.name == pool)
        .ok_or_else(|| format!("no pool named '{pool}'"))?;
    let i = p
        .server_index(server)
        .ok_or_else(|| format!("pool '{pool}' has no server named '{server}'"))?;
    p.servers[i].set_disabled(disabled);
    tracing::info!(pool, server, disabled, "server state changed by command");
    Ok((
        format!(
            "{} {pool}/{server}\n",
            if disabled { "disabled" } else { "enabled" }
        ),
        Action::None,
    ))
}

/// Run one command line; the answer text, or an `error: ...` line.
pub fn execute(shared: &Shared, line: &str) -> (String, Action) {
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.is_empty() {
        return ("error: empty command; try 'help'\n".into(), Action::None);
    }
    // Longest name first wins ("show traffic http" before a hypothetical "show").
    let found = COMMANDS
        .iter()
        .filter(|c| {
            let n: Vec<&str> = c.name.split(' ').collect();
            words.len() >= n.len() && words[..n.len()] == n[..]
        })
        .max_by_key(|c| c.name.len());
    match found {
        Some(c) => {
            let n = c.name.split(' ').count();
            match (c.run)(shared, &words[n..]) {
                Ok(v) => v,
                Err(e) => (format!("error: {}: {e}\n", c.name), Action::None),
            }
        }
        None => (
            format!("error: unknown command '{}'; try 'help'\n", line.trim()),
            Action::None,
        ),
    }
}

/// Serve commands until a `stop daemon` (reported through `on_stop`) or the listener fails.
pub fn serve(listener: UnixListener, shared: Arc<Shared>, on_stop: impl Fn() + Send + 'static) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(READ_TIMEOUT));
        let _ = conn.set_write_timeout(Some(READ_TIMEOUT));
        let mut line = String::new();
        let read = BufReader::new((&conn).take(MAX_LINE as u64 + 1)).read_line(&mut line);
        let (answer, action) = match read {
            Ok(_) if line.len() > MAX_LINE => (
                format!("error: command longer than {MAX_LINE} bytes\n"),
                Action::None,
            ),
            Ok(_) => execute(&shared, &line),
            Err(e) => (format!("error: cannot read command: {e}\n"), Action::None),
        };
        let _ = conn.write_all(answer.as_bytes());
        drop(conn);
        if action == Action::Stop {
            shared.life.stopping.store(true, Ordering::SeqCst);
            on_stop();
        }
        if shared.life.stopping.load(Ordering::SeqCst)
            && shared.life.running.load(Ordering::SeqCst) == 0
        {
            break;
        }
    }
}

/// The `shardgate ctl` side: send `command`, return the answer.
pub fn client(path: &Path, command: &str) -> io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(command.trim().as_bytes())?;
    s.write_all(b"\n")?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Default socket path when `ctl` is given none and no config is readable.
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/shardgate/shardgate.sock")
}
