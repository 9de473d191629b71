//! The replication monitor of terminating frontends whose pool has replicas: on shard 0,
//! once per [`INTERVAL`] per server, logged in with `monitor_user` (one connection kept open),
//! it reads `SHOW SLAVE STATUS` and `@@gtid_slave_pos` on replicas (`@@gtid_binlog_pos` on
//! primaries) and publishes lag and position in the server's [`ReplState`], which every
//! shard reads when it sends a read to a replica.
//!
//! A replica is readable while the monitor's last check is recent, both replication threads
//! run and `Seconds_Behind_Master` is within `max_replication_lag`. A failed login or query
//! makes it unreadable until the next good check (it stays usable for nothing else anyway).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{ServerConn, Want};
use super::pool::ReplState;
use crate::proto::mysql::auth;
use crate::proto::mysql::com;
use crate::proto::mysql::session_track::Gtid;
use crate::rt;
use crate::shared::{Generation, Shared};

/// How often each server is checked.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// Follow the running generation: one monitor loop per server of every pool with replicas
/// used by a terminating frontend with a monitor login.
pub async fn supervise(shared: Arc<Shared>) {
    while !shared.life.stopping.load(Ordering::Relaxed) {
        let gen = shared.current();
        let mut started = Vec::new();
        for f in &gen.config.mysql {
            let Some(pc) = f.pooled.as_deref() else {
                continue;
            };
            let Some((user, password)) = pc.monitor.clone() else {
                continue;
            };
            if !pc.split || started.contains(&f.pool) {
                continue;
            }
            started.push(f.pool);
            for server in 0..gen.pools[f.pool].servers.len() {
                let login = (user.clone(), password.clone());
                rt::spawn(check_loop(
                    shared.clone(),
                    gen.clone(),
                    f.pool,
                    server,
                    login,
                ));
            }
        }
        while shared.generation() == gen.number && !shared.life.stopping.load(Ordering::Relaxed) {
            rt::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn check_loop(
    shared: Arc<Shared>,
    gen: Arc<Generation>,
    pool: usize,
    server: usize,
    (user, password): (String, String),
) {
    let conf = &gen.config.pools[pool];
    let ss = &gen.pools[pool].servers[server];
    let sha1 = (!password.is_empty()).then(|| auth::sha1(password.as_bytes()));
    let mut conn: Option<ServerConn> = None;
    let mut failing = false;
    loop {
        if shared.life.stopping.load(Ordering::Relaxed) || shared.generation() != gen.number {
            return;
        }
        if conn.is_none() {
            let want = Want {
                user_ix: usize::MAX,
                user: user.as_bytes(),
                sha1,
                caps: 0,
                charset: auth::UTF8MB4_GENERAL_CI,
                schema: b"",
            };
            match ServerConn::open(ss.addr, server, &want, conf.connect_timeout).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    if !failing {
                        tracing::warn!(event = "mysql_monitor_failed", pool = %conf.name, server = %ss.name, error = ?e, "replication monitor cannot log in");
                    }
                    failing = true;
                    ss.repl.lag_ms.store(u64::MAX, Ordering::Relaxed);
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            match check(c, ss.replica, &ss.repl, conf.connect_timeout).await {
                Ok(()) => {
                    if failing {
                        tracing::info!(event = "mysql_monitor_ok", pool = %conf.name, server = %ss.name, "replication monitor reads the server again");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(event = "mysql_monitor_failed", pool = %conf.name, server = %ss.name, error = %e, "replication check failed");
                    }
                    failing = true;
                    ss.repl.lag_ms.store(u64::MAX, Ordering::Relaxed);
                    conn = None;
                }
            }
        }
        rt::sleep(INTERVAL).await;
    }
}

/// One check: lag and position published, or why not.
async fn check(
    c: &mut ServerConn,
    replica: bool,
    repl: &ReplState,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let query = |sql: &'static str| sql.as_bytes();
    let pos_sql = if replica {
        "SELECT @@gtid_slave_pos"
    } else {
        "SELECT @@gtid_binlog_pos"
    };
    let pos = match c.own_command(com::QUERY, query(pos_sql), deadline).await {
        Ok(Ok(r)) => Gtid::parse_list(r.first().unwrap_or_default()),
        Ok(Err(p)) => return Err(auth::err_text(&p).1),
        Err(e) => return Err(format!("{e:?}")),
    };
    let lag = if replica {
        let r = match c
            .own_command(com::QUERY, query("SHOW SLAVE STATUS"), deadline)
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(p)) => return Err(auth::err_text(&p).1),
            Err(e) => return Err(format!("{e:?}")),
        };
        let running = |k: &str| r.get(k) == Some(b"Yes");
        let behind = r
            .get("Seconds_Behind_Master")
            .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u64>().ok());
        match behind {
            Some(s) if running("Slave_IO_Running") && running("Slave_SQL_Running") => {
                s.saturating_mul(1000)
            }
            _ => u64::MAX,
        }
    } else {
        0
    };
    tracing::trace!(replica, ?pos, lag, "replication check");
    repl.pos.store(Arc::new(pos));
    repl.lag_ms.store(lag, Ordering::Relaxed);
    repl.checked_ms.store(rt::now_ms(), Ordering::Relaxed);
    Ok(())
}
