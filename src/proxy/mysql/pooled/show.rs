//! `show pool mysql`, as text and as JSON.

use std::sync::atomic::Ordering;

use super::FrontCounters;
use crate::rt;

/// `show pool mysql`: per terminating frontend, its counters summed over shards; per user,
/// client and server connections; per server of its pool, role and what the monitor saw.
pub fn render(shared: &crate::shared::Shared) -> String {
    use std::fmt::Write as _;
    let gen = shared.current();
    let mut out = String::new();
    for f in &gen.config.mysql {
        let Some(pc) = f.pooled.as_deref() else {
            continue;
        };
        let fronts: Vec<_> = shared
            .mysql_stats
            .iter()
            .map(|s| s.front(&f.name))
            .collect();
        let sum = |get: fn(&FrontCounters) -> u64| fronts.iter().map(|c| get(c)).sum::<u64>();
        let _ = writeln!(
            out,
            "frontend {} multiplex={} split={} read_your_writes={:?} clients={} pinned={} server_conns={} idle={} opened={} reused={} reset={} to_primary={} to_replica={} ryw_waits={} ryw_timeouts={} ryw_primary={} login_failed={}",
            f.name,
            pc.multiplex,
            pc.split,
            pc.read_your_writes,
            sum(|c| c.pool_clients.get()),
            sum(|c| c.pool_pinned.get()),
            sum(|c| c.pool_server_conns.get()),
            sum(|c| c.pool_idle.get()),
            sum(|c| c.pool_opened.get()),
            sum(|c| c.pool_reused.get()),
            sum(|c| c.pool_reset.get()),
            sum(|c| c.pool_to_primary.get()),
            sum(|c| c.pool_to_replica.get()),
            sum(|c| c.pool_ryw_waits.get()),
            sum(|c| c.pool_ryw_timeouts.get()),
            sum(|c| c.pool_ryw_primary.get()),
            sum(|c| c.login_failed.get()),
        );
        let gauges = crate::proxy::mysql::user_gauges(shared, &f.name, pc);
        for (u, g) in pc.users.iter().zip(&gauges) {
            let _ = writeln!(
                out,
                "user {} {} clients={} server_conns={} max_connections={} max_server_connections={}",
                f.name,
                u.name,
                g.clients.load(Ordering::Relaxed),
                g.servers.load(Ordering::Relaxed),
                u.max_connections.map_or("-".into(), |n| n.to_string()),
                u.max_server_connections
                    .map_or("-".into(), |n| n.to_string()),
            );
        }
        let now = rt::now_ms();
        for ss in &gen.pools[f.pool].servers {
            let lag = ss.repl.lag_ms.load(Ordering::Relaxed);
            let checked = ss.repl.checked_ms.load(Ordering::Relaxed);
            let pos: Vec<String> = ss.repl.pos.load().iter().map(|g| g.to_string()).collect();
            let _ = writeln!(
                out,
                "server {} {} role={} lag_ms={} checked_ms_ago={} gtid_pos={}",
                f.name,
                ss.name,
                if ss.replica { "replica" } else { "primary" },
                if lag == u64::MAX {
                    "-".into()
                } else {
                    lag.to_string()
                },
                if checked == 0 {
                    "-".into()
                } else {
                    now.saturating_sub(checked).to_string()
                },
                if pos.is_empty() {
                    "-".into()
                } else {
                    pos.join(",")
                },
            );
        }
    }
    if out.is_empty() {
        out.push_str("no MySQL frontend multiplexes or splits reads\n");
    }
    out
}

/// `show pool mysql` as JSON: `{"frontends": [...], "users": [...], "servers": [...]}`, each
/// line an object: its names first (`frontend`, then `user` or `server`), then every `k=v`
/// field, numbers as numbers and `-` as null.
pub fn render_json(shared: &crate::shared::Shared) -> serde_json::Value {
    use serde_json::{Map, Value};
    let mut out: Map<String, Value> = Map::new();
    for kind in ["frontends", "users", "servers"] {
        out.insert(kind.into(), Value::Array(Vec::new()));
    }
    for line in render(shared).lines() {
        let mut words = line.split_whitespace();
        let (kind, names): (&str, &[&str]) = match words.next() {
            Some("frontend") => ("frontends", &["frontend"]),
            Some("user") => ("users", &["frontend", "user"]),
            Some("server") => ("servers", &["frontend", "server"]),
            _ => continue,
        };
        let mut o = Map::new();
        for n in names {
            o.insert((*n).into(), Value::from(words.next().unwrap_or_default()));
        }
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            let v = match v {
                "-" => Value::Null,
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => v
                    .parse::<u64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(v)),
            };
            o.insert(k.into(), v);
        }
        if let Some(Value::Array(a)) = out.get_mut(kind) {
            a.push(Value::Object(o));
        }
    }
    Value::Object(out)
}
