//! shardgate: a sharded, thread-per-core load-balancing reverse proxy for HTTP/1.1 and MySQL.
//!
//! Layout, in the order a request meets it:
//! - [`config`]: the TOML file → a validated [`config::Config`] (two stages: serde, then checks).
//! - `daemon`: binds listeners, starts the shards, and says which protocol serves each listener.
//! - `shard`: one pinned thread + monoio runtime per core, each with its own SO_REUSEPORT
//!   listeners and connections; protocol-free. `rt` hides monoio behind a small API.
//! - [`proto`]: pure, incremental parsers (HTTP/1.1 framing, MySQL packets), no I/O.
//! - `route` picks a pool, `balance` orders its servers (health and shared busyness live in
//!   atomics every shard reads), `proxy` relays bytes between client and server.
//! - `health` runs the active and agent checks on one thread for the process.
//! - [`dns`]: a blocking stub resolver (A, AAAA, SRV) for server names and SRV discovery, run
//!   off the shards; its wire format is pure and fuzzed.
//! - `stats` keeps per-shard counters summed on read; `control` serves the UNIX command socket;
//!   `admin` serves the admin web page, its JSON API and `/metrics` (`[admin]`).
//! - [`log`]: the access log (formatted on the shards, written by one thread) and the traffic
//!   log (per-site and per-user periods from the counters, on its own thread).
//! - `tls`: TLS termination with rustls (certificates by SNI, shared ticket keys); the session
//!   and its cancel-safe socket I/O are in `rt`.
//! - `upgrade` hands listeners, idle connections and counters to a new binary.
//!
//! Only what the binary, the fuzz targets and the benchmarks need is public.
#![deny(unsafe_op_in_unsafe_fn)]

mod admin;
mod balance;
pub mod cache;
pub mod config;
mod control;
mod daemon;
mod demo;
pub mod dns;
pub mod files;
mod health;
pub mod log;
mod mem;
mod metrics;
mod notify;
pub mod proto;
mod proxy;
mod reload;
mod route;
mod rt;
mod shard;
mod shared;
mod site;
mod stats;
mod tls;
mod upgrade;

/// The traffic log's recovery of an existing file, and the admin listener's `Authorization:
/// Basic` reader, for the fuzz targets.
pub use admin::auth::parse_basic as admin_parse_basic;
pub use admin::hash_password;
pub use control::{client as ctl_client, default_socket, JSON_PREFIX as CTL_JSON_PREFIX};
pub use daemon::{block_stop_signals, demo, run, run_upgraded};
pub use log::traffic::recover as traffic_log_recover;
pub use mem::CountingAlloc;
/// The upgrade channel's message format and carried counters, for the fuzz targets.
pub use upgrade::{totals as upgrade_totals, wire as upgrade_wire};
