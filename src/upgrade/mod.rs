//! Binary upgrade (`shardgate ctl upgrade`): the running process starts the new binary and
//! hands it its listening sockets, then its idle keep-alive client connections and its counter
//! totals, so that no connection is refused or reset while the binary changes.
//!
//! - [`wire`]: the transport, a `SOCK_SEQPACKET` UNIX socket pair that carries small text
//!   messages and file descriptors (`SCM_RIGHTS`) between the two processes. It knows nothing
//!   of the proxy.

pub mod wire;
