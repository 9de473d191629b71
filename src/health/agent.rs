//! Agent checks (HAProxy `agent-check`, Apache mod_lbmethod_heartbeat): every `agent_interval`
//! connect to the server's `agent_port` (same IP), read one line of at most 512 bytes within
//! `timeout`, and apply the words in it. Words are separated by spaces, tabs or commas; case
//! does not matter; text after `#` is a description kept for `show servers`:
//!
//! | word | effect |
//! |---|---|
//! | `75%` (0–100) | weight becomes 75 % of the configured (or `set server`) weight |
//! | `ready` | admin state back to ready |
//! | `drain` | admin state drain: only sticky requests |
//! | `maint` | admin state maint: nothing |
//! | `down`, `fail`, `stopped` | the agent's own "down": taken out like a failed check |
//! | `up` | clears the agent's "down" |
//! | `maxconn:N` | accepted and ignored |
//!
//! The agent never overrides the operator: it changes the admin state only while that state
//! is `ready` or is the one the agent itself set last, so a server an operator put in `maint`
//! (or `drain`) stays there until the operator sets it `ready` again. The agent's "down" is a
//! source of its own, combined with the checker's verdict and the passive marks, so `up` from
//! the agent never brings back a server the checker found down.
//!
//! An agent that cannot be reached changes nothing (as in HAProxy: reachability is the health
//! check's job). A line with a word not listed above is ignored whole, with a rate-limited
//! warning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::balance::{Admin, ServerShared};
use crate::rt;
use crate::shared::{Generation, Shared};

/// Longest agent line read.
const MAX_LINE: usize = 512;

/// What one agent line says; `None` fields leave that part alone.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Said {
    pct: Option<u32>,
    admin: Option<Admin>,
    /// `Some(true)`: up; `Some(false)`: down.
    up: Option<bool>,
    description: Option<String>,
}

fn parse(line: &str) -> Result<Said, String> {
    let (words, description) = match line.split_once('#') {
        Some((w, d)) => (w, Some(d.trim().to_owned())),
        None => (line, None),
    };
    let mut said = Said {
        description,
        ..Said::default()
    };
    for word in words
        .split([' ', '\t', ','])
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
    {
        if let Some(n) = word.strip_suffix('%') {
            let pct = n
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("{word:?}: expected a percentage 0% to 100%"))?;
            said.pct = Some(pct);
            continue;
        }
        match word.as_str() {
            "ready" => said.admin = Some(Admin::Ready),
            "drain" => said.admin = Some(Admin::Drain),
            "maint" => said.admin = Some(Admin::Maint),
            "up" => said.up = Some(true),
            "down" | "fail" | "stopped" => said.up = Some(false),
            w if w.starts_with("maxconn:") => {}
            _ => return Err(format!("{word:?} is not an agent word")),
        }
    }
    Ok(said)
}

/// The agent's memory between lines: the admin state it set last (its own), so that it does
/// not take over one an operator set.
struct Agent {
    own_admin: Admin,
}

impl Agent {
    fn apply(&mut self, pool: &str, ss: &ServerShared, said: &Said) {
        if let Some(pct) = said.pct {
            if ss.agent_pct() != pct {
                tracing::info!(event = "agent_weight", pool, server = %ss.name, pct, "agent: weight percentage");
                ss.set_agent_pct(pct);
            }
        }
        if let Some(want) = said.admin {
            let now = ss.admin();
            if now == Admin::Ready || (now == self.own_admin && !ss.operator_admin()) {
                if now != want {
                    ss.set_admin(want);
                    tracing::info!(event = "agent_state", pool, server = %ss.name, state = %want.as_str(), "agent: admin state");
                }
                self.own_admin = want;
            }
        }
        if let Some(up) = said.up {
            let was_down = ss.set_agent_down(!up);
            let why = said.description.as_deref().unwrap_or("");
            if was_down && up {
                tracing::info!(event = "agent_server_up", pool, server = %ss.name, "agent: server up");
            } else if !was_down && !up {
                tracing::warn!(event = "agent_server_down", pool, server = %ss.name, reason = why, "agent: server down");
            }
        }
    }
}

pub(super) async fn run(
    shared: Arc<Shared>,
    gen: Arc<Generation>,
    pool: usize,
    server: usize,
    addr: SocketAddr,
) {
    let conf = &gen.config.pools[pool];
    let Some(h) = &conf.health else { return };
    let p = &gen.pools[pool];
    let ss = &p.servers[server];
    let mut agent = Agent {
        own_admin: Admin::Ready,
    };
    loop {
        if !super::current(&shared, &gen) {
            return;
        }
        let started = Instant::now();
        let note = match read_line(addr, h.timeout).await {
            Ok(line) => match parse(&line) {
                Ok(said) => {
                    agent.apply(&p.name, ss, &said);
                    line
                }
                Err(e) => {
                    static LOG: rt::LogLimit = rt::LogLimit::new();
                    if let Some(suppressed) = LOG.allow() {
                        tracing::warn!(event = "agent_line_ignored", pool = %p.name, server = %ss.name, %line, error = %e, suppressed, "agent line ignored");
                    }
                    format!("ignored {line:?}: {e}")
                }
            },
            Err(e) => {
                static LOG: rt::LogLimit = rt::LogLimit::new();
                if let Some(suppressed) = LOG.allow() {
                    tracing::warn!(event = "agent_read_failed", pool = %p.name, server = %ss.name, %addr, error = %e, suppressed, "agent not read");
                }
                format!("unreachable: {e}")
            }
        };
        ss.update_check_info(|c| c.agent = Some(note));
        rt::sleep(h.agent_interval.saturating_sub(started.elapsed())).await;
    }
}

/// Connect and read the agent's line (up to a newline, the end of the stream or
/// [`MAX_LINE`] bytes).
async fn read_line(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut stream = match rt::connect(addr, timeout).await {
        Ok(s) => s,
        Err(rt::ConnectError::Local(e) | rt::ConnectError::Peer(e)) => {
            return Err(super::connect_failure(&e, timeout))
        }
    };
    let mut buf = Vec::with_capacity(MAX_LINE);
    loop {
        if let Some(end) = memchr::memchr(b'\n', &buf) {
            buf.truncate(end);
            break;
        }
        if buf.len() > MAX_LINE {
            return Err(format!("no line end within {MAX_LINE} bytes"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("timeout after {timeout:?}"));
        }
        let (r, b) = rt::read_into(&mut stream, buf, MAX_LINE, left).await;
        buf = b;
        match r {
            rt::Read::Data => {}
            rt::Read::Eof => break,
            rt::Read::TimedOut | rt::Read::Drained | rt::Read::Woken => {
                return Err(format!("timeout after {timeout:?}"))
            }
            rt::Read::Err(e) => return Err(format!("read: {e}")),
        }
    }
    buf.truncate(MAX_LINE);
    let text = String::from_utf8_lossy(&buf);
    Ok(text.trim_end_matches('\r').trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_words() {
        assert_eq!(
            parse("75%").unwrap(),
            Said {
                pct: Some(75),
                ..Said::default()
            }
        );
        let s = parse("50%, DRAIN\tmaxconn:30 down # disk full").unwrap();
        assert_eq!(s.pct, Some(50));
        assert_eq!(s.admin, Some(Admin::Drain));
        assert_eq!(s.up, Some(false));
        assert_eq!(s.description.as_deref(), Some("disk full"));
        assert_eq!(parse("up ready").unwrap().up, Some(true));
        assert_eq!(parse("stopped").unwrap().up, Some(false));
        assert_eq!(parse("").unwrap(), Said::default());
        for bad in ["101%", "x%", "-1%", "hello", "50% sideways"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn agent_does_not_override_an_operator() {
        let pool = crate::balance::test_pool(&[10], crate::config::Balance::RoundRobin, 1);
        let ss = &pool.servers[0];
        let mut a = Agent {
            own_admin: Admin::Ready,
        };
        a.apply("p", ss, &parse("50% drain").unwrap());
        assert_eq!((ss.admin(), ss.weight_now()), (Admin::Drain, 5));
        a.apply("p", ss, &parse("ready").unwrap());
        assert_eq!(ss.admin(), Admin::Ready);
        // The agent drains it, then the operator drains it too: the operator's drain stays
        // whatever the agent says next.
        a.apply("p", ss, &parse("drain").unwrap());
        ss.set_admin_by_operator(Admin::Drain);
        a.apply("p", ss, &parse("ready").unwrap());
        assert_eq!(ss.admin(), Admin::Drain, "the operator's drain stays");
        ss.set_admin_by_operator(Admin::Ready);
        a.apply("p", ss, &parse("ready").unwrap());
        assert_eq!(ss.admin(), Admin::Ready);
        // The operator puts it in maint: the agent's ready and drain change nothing.
        ss.set_admin_by_operator(Admin::Maint);
        a.apply("p", ss, &parse("ready").unwrap());
        a.apply("p", ss, &parse("drain").unwrap());
        assert_eq!(ss.admin(), Admin::Maint);
        // Once the operator sets it ready, the agent may act again.
        ss.set_admin_by_operator(Admin::Ready);
        a.apply("p", ss, &parse("maint").unwrap());
        assert_eq!(ss.admin(), Admin::Maint);
        a.apply("p", ss, &parse("ready").unwrap());
        assert_eq!(ss.admin(), Admin::Ready);
        // The agent's down is its own source: up clears only it.
        a.apply("p", ss, &parse("down").unwrap());
        assert!(!ss.is_usable(1));
        ss.set_active(crate::balance::Active::Down);
        a.apply("p", ss, &parse("up").unwrap());
        assert!(!ss.is_usable(1), "the checker still says down");
        ss.set_active(crate::balance::Active::Up);
        assert!(ss.is_usable(1));
    }
}
