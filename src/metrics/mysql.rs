//! The MySQL families of `/metrics`: per-user commands, bytes and latency, per-frontend
//! session counters (see docs/metrics.md).

use super::prom::{Kind, Writer};
use crate::shared::Shared;
use crate::stats::Counter;

pub(super) fn metrics(w: &mut Writer, shared: &Shared) {
    let shards: Vec<&crate::proxy::mysql::MysqlShardStats> =
        shared.mysql_stats.iter().map(|s| &**s).collect();
    let users = crate::proxy::mysql::stats::merged_users(&shards);
    let names: Vec<(String, &crate::proxy::mysql::UserStats)> = users
        .iter()
        .map(|(u, s)| (crate::proxy::mysql::stats::display_user(u), s))
        .collect();
    type Pick = fn(&crate::proxy::mysql::UserStats) -> f64;
    let families: [(&str, &str, Pick); 7] = [
        (
            "shardgate_mysql_user_connections",
            "Successful logins (handshake or COM_CHANGE_USER) per user.",
            |u| u.connections as f64,
        ),
        (
            "shardgate_mysql_user_login_failures",
            "Logins the server refused, per claimed user.",
            |u| u.login_failures as f64,
        ),
        (
            "shardgate_mysql_user_errors",
            "Commands answered with ERR or failed by a lost connection.",
            |u| u.errors as f64,
        ),
        (
            "shardgate_mysql_user_bytes_in",
            "Client to server bytes.",
            |u| u.bytes_in as f64,
        ),
        (
            "shardgate_mysql_user_bytes_out",
            "Server to client bytes.",
            |u| u.bytes_out as f64,
        ),
        (
            "shardgate_mysql_user_time_seconds",
            "Total time from command to the end of its reply.",
            |u| u.time_total_us as f64 / 1e6,
        ),
        (
            "shardgate_mysql_user_unparsed",
            "Connections the protocol observer gave up on.",
            |u| u.unparsed as f64,
        ),
    ];
    for (name, help, pick) in families {
        w.family(name, Kind::Counter, help);
        let total = format!("{name}_total");
        for (user, u) in &names {
            w.sample(&total, &[("user", user)], pick(u));
        }
    }
    w.family(
        "shardgate_mysql_user_commands",
        Kind::Counter,
        "Commands per user and command type.",
    );
    for (user, u) in &names {
        for (slot, &n) in u.commands.iter().enumerate().filter(|(_, n)| **n > 0) {
            let cmd = crate::proto::mysql::command::slot_name(slot);
            w.sample(
                "shardgate_mysql_user_commands_total",
                &[("user", user), ("command", cmd)],
                n as f64,
            );
        }
    }
    w.family("shardgate_mysql_command_duration_seconds", Kind::Histogram, "From a command to the end of its reply, per user (counts at the boundaries within 1 %: an HDR histogram with 2 significant digits).");
    for (user, u) in &names {
        let h = &u.latency_us;
        let below = |limit: u64| {
            if h.is_empty() {
                0
            } else {
                h.count_between(0, limit.saturating_sub(1))
            }
        };
        w.histogram_from(
            "shardgate_mysql_command_duration_seconds",
            &[("user", user)],
            below,
            h.len(),
            u.time_total_us as f64 / 1e6,
        );
    }
    // Per MySQL frontend connection counters.
    let per_shard: Vec<_> = shards.iter().map(|s| s.fronts()).collect();
    let mut fronts: Vec<std::sync::Arc<str>> = Vec::new();
    for (n, _) in per_shard.iter().flatten() {
        if !fronts.contains(n) {
            fronts.push(n.clone());
        }
    }
    type FrontPick = fn(&crate::proxy::mysql::FrontCounters) -> &Counter;
    let counters: [(&str, &str, Kind, FrontPick); 18] = [
        (
            "shardgate_mysql_connections_active",
            "MySQL client connections open.",
            Kind::Gauge,
            |c| &c.active,
        ),
        (
            "shardgate_mysql_connections_accepted",
            "MySQL client connections accepted.",
            Kind::Counter,
            |c| &c.accepted,
        ),
        (
            "shardgate_mysql_connections_refused",
            "Refused by the frontend's max_connections (ERR 1040).",
            Kind::Counter,
            |c| &c.refused_limit,
        ),
        (
            "shardgate_mysql_no_server",
            "Refused because no server could be connected (ERR 2003).",
            Kind::Counter,
            |c| &c.no_server,
        ),
        (
            "shardgate_mysql_backend_lost",
            "Connections whose server closed with commands outstanding.",
            Kind::Counter,
            |c| &c.backend_lost,
        ),
        (
            "shardgate_mysql_login_failed",
            "Logins the server refused.",
            Kind::Counter,
            |c| &c.login_failed,
        ),
        (
            "shardgate_mysql_pool_clients",
            "Multiplexing frontends: logged-in client sessions.",
            Kind::Gauge,
            |c| &c.pool_clients,
        ),
        (
            "shardgate_mysql_pool_pinned",
            "Multiplexing frontends: sessions keeping a server connection for good (session state).",
            Kind::Gauge,
            |c| &c.pool_pinned,
        ),
        (
            "shardgate_mysql_pool_server_connections",
            "Multiplexing frontends: server connections open (busy or idle).",
            Kind::Gauge,
            |c| &c.pool_server_conns,
        ),
        (
            "shardgate_mysql_pool_idle_connections",
            "Multiplexing frontends: server connections idle in the pools.",
            Kind::Gauge,
            |c| &c.pool_idle,
        ),
        (
            "shardgate_mysql_pool_opened",
            "Multiplexing frontends: server connections opened (logins).",
            Kind::Counter,
            |c| &c.pool_opened,
        ),
        (
            "shardgate_mysql_pool_reused",
            "Multiplexing frontends: idle server connections taken by a session.",
            Kind::Counter,
            |c| &c.pool_reused,
        ),
        (
            "shardgate_mysql_pool_reset",
            "Multiplexing frontends: server connections reset (COM_RESET_CONNECTION) before reuse.",
            Kind::Counter,
            |c| &c.pool_reset,
        ),
        (
            "shardgate_mysql_to_primary",
            "Read/write split: commands sent to a primary by the routing rules.",
            Kind::Counter,
            |c| &c.pool_to_primary,
        ),
        (
            "shardgate_mysql_to_replica",
            "Read/write split: reads sent to a replica.",
            Kind::Counter,
            |c| &c.pool_to_replica,
        ),
        (
            "shardgate_mysql_ryw_waits",
            "Read-your-writes: MASTER_GTID_WAIT run on a replica before a read.",
            Kind::Counter,
            |c| &c.pool_ryw_waits,
        ),
        (
            "shardgate_mysql_ryw_timeouts",
            "Read-your-writes: waits that timed out (the read went to the primary).",
            Kind::Counter,
            |c| &c.pool_ryw_timeouts,
        ),
        (
            "shardgate_mysql_ryw_primary",
            "Read-your-writes = primary: reads sent to the primary for freshness.",
            Kind::Counter,
            |c| &c.pool_ryw_primary,
        ),
    ];
    for (name, help, kind, pick) in counters {
        w.family(name, kind, help);
        let sample = if kind == Kind::Counter {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        for fe in &fronts {
            let n: u64 = per_shard
                .iter()
                .flatten()
                .filter(|(n, _)| n == fe)
                .map(|(_, c)| pick(c).get())
                .sum();
            w.sample(&sample, &[("frontend", fe)], n as f64);
        }
    }
}
