//! The `[daemon]` section: shard count, I/O driver, control socket, connection and memory
//! ceilings, stop timeout, the traffic log.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use super::value::{parse_duration, parse_size};
use super::{Builder, ConfigError};
use crate::config::file::{DaemonFile, IoDriverFile};
use crate::config::{Daemon, IoDriver, TrafficLog};

/// Upper bound for `daemon.shards`: far above any real core count, low enough to catch a typo.
const MAX_SHARDS: i64 = 1024;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Smallest `daemon.memory_limit` accepted.
const MIN_MEMORY_LIMIT: u64 = 8 << 20;

impl Builder<'_> {
    /// `log_statistics_period` and `traffic_log` go together: one without the other is a
    /// mistake (a period with nowhere to write, or a path never written).
    fn traffic_log(&self, d: &DaemonFile) -> Result<Option<TrafficLog>, ConfigError> {
        match (&d.log_statistics_period, &d.traffic_log) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.err(
                "daemon.traffic_log",
                "missing: log_statistics_period is set, so say where the traffic log goes (e.g. \"/var/log/shardgate/traffic.log\")",
            )),
            (None, Some(_)) => Err(self.err(
                "daemon.log_statistics_period",
                "missing: traffic_log is set, so say how long a period is (e.g. \"5m\")",
            )),
            (Some(p), Some(path)) => {
                let key = "daemon.log_statistics_period";
                let period = parse_duration(p).map_err(|m| self.err(key, m))?;
                if period < Duration::from_secs(1) || period.subsec_nanos() != 0 {
                    return Err(self.err(
                        key,
                        format!("{period:?}: a period is a whole number of seconds, at least 1s (periods are stamped in unix seconds)"),
                    ));
                }
                if path.trim().is_empty() {
                    return Err(self.err("daemon.traffic_log", "must not be empty"));
                }
                Ok(Some(TrafficLog {
                    period,
                    path: PathBuf::from(path),
                }))
            }
        }
    }

    pub(super) fn daemon(&self, d: &DaemonFile) -> Result<Daemon, ConfigError> {
        let shards = match d.shards.unwrap_or(0) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n @ 1..=MAX_SHARDS => n as usize,
            n => {
                return Err(self.err(
                    "daemon.shards",
                    format!("{n} is out of range: 0 (one per CPU) or 1..={MAX_SHARDS}"),
                ))
            }
        };
        let control_socket = d
            .control_socket
            .as_deref()
            .unwrap_or("/run/shardgate/shardgate.sock");
        if control_socket.is_empty() {
            return Err(self.err("daemon.control_socket", "must not be empty"));
        }
        if control_socket.len() > MAX_SOCKET_PATH {
            return Err(self.err(
                "daemon.control_socket",
                format!(
                    "{} bytes long; a UNIX socket path is limited to {MAX_SOCKET_PATH} bytes",
                    control_socket.len()
                ),
            ));
        }
        let mut resolvers = Vec::new();
        for (i, r) in d.resolvers.iter().flatten().enumerate() {
            let a: SocketAddr = r.trim().parse().map_err(|_| {
                self.err(
                    format!("daemon.resolvers[{i}]"),
                    format!("{r:?} is not IP:PORT (e.g. \"10.0.0.2:53\")"),
                )
            })?;
            resolvers.push(a);
        }
        let traffic_log = self.traffic_log(d)?;
        Ok(Daemon {
            traffic_log,
            resolvers,
            shards,
            io_driver: match d.io_driver.unwrap_or(IoDriverFile::Auto) {
                IoDriverFile::Auto => IoDriver::Auto,
                IoDriverFile::Uring => IoDriver::Uring,
                IoDriverFile::Epoll => IoDriver::Epoll,
            },
            control_socket: PathBuf::from(control_socket),
            max_connections: self.int(
                "daemon.max_connections",
                d.max_connections,
                16000,
                1,
                i64::from(u32::MAX),
            )?,
            stop_timeout: self.duration(
                "daemon.stop_timeout",
                d.stop_timeout.as_ref(),
                30,
                true,
            )?,
            pin_cores: d.pin_cores.unwrap_or(true),
            memory_limit: match &d.memory_limit {
                None => None,
                Some(v) => {
                    let key = "daemon.memory_limit";
                    let n = parse_size(v).map_err(|m| self.err(key, m))?;
                    if n < MIN_MEMORY_LIMIT {
                        return Err(self.err(
                            key,
                            format!("{n} is below the smallest ceiling, 8m (the daemon itself needs a few MiB)"),
                        ));
                    }
                    Some(n)
                }
            },
        })
    }
}
