//! shardgate: a sharded, thread-per-core load-balancing reverse proxy for HTTP/1.1 and MySQL.
//!
//! Layout, in the order a request meets it:
//! - [`config`]: the TOML file → a validated [`config::Config`] (two stages: serde, then checks).
//! - [`shard`]: one pinned thread + monoio runtime per core, each with its own SO_REUSEPORT
//!   listeners, connection table and upstream pools; [`rt`] hides monoio behind a small API.
//! - [`proto`]: pure, incremental parsers (HTTP/1.1 framing, MySQL packets), no I/O.
//! - [`route`] picks a pool, [`balance`] orders its servers (health and shared busyness live in
//!   atomics every shard reads), [`proxy`] relays bytes between client and upstream.
//! - [`stats`] keeps per-shard counters summed on read; [`control`] serves the UNIX command socket.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod balance;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod proto;
pub mod proxy;
pub mod route;
pub mod rt;
pub mod shard;
pub mod stats;
