//! The runtime seam: every use of monoio goes through here, so protocol and balancing code never
//! see it, and the known pitfalls of monoio 0.2.4 are handled once:
//!
//! - Reads with a deadline race the read against a timer; on expiry the read is abandoned (its
//!   buffer stays with the runtime until the kernel is done with it). A byte that raced the timer
//!   may be lost, so every caller closes the connection after a timeout and never reads on.
//!   Accepts, which would leak an fd if abandoned, are cancelled properly instead.
//! - Connects never race a timer inside monoio (a dropped connect future leaks its fd): the
//!   socket is created non-blocking by us, `connect(2)` is issued directly, and only the
//!   writability wait (which owns no fd) is bounded by the deadline.
//! - `monoio::io::zero_copy` pins a kernel thread per pending splice; [`splice`] uses
//!   non-blocking `splice(2)` and readiness waits instead.
//!
//! All sockets are non-blocking (O_NONBLOCK). io_uring still completes reads and writes on them
//! by polling internally; the epoll driver requires it; and it is what lets the splice relays
//! move bytes without blocking the shard.
//!
//! Rooms: [`clock`] (process time), [`io`] (bounded reads and writes), [`net`] (connect, bind,
//! accept), [`splice`] (pipes), [`gate`] (bounded slots), [`drain`] (the stop signal),
//! [`driver`] (building the runtime), [`stream`] (what the data path may run over), [`task`]
//! (connection tasks whose panic ends only themselves).

mod clock;
mod drain;
mod driver;
mod duplex;
mod gate;
mod io;
mod net;
mod pace;
mod pooled;
mod socket;
mod splice;
mod stream;
mod task;
mod timer;
mod tls;

pub use clock::{ms_of, now_ms, now_us, LogLimit};
pub use drain::Drain;
pub use driver::{run_shard, Driver};
pub use duplex::{duplex, End as DuplexEnd, Hooks as DuplexHooks, NoHooks};
pub use gate::{client_key, Gate};
pub use io::{
    linger_close, read_idle, read_into, send_now, shutdown_fd, shutdown_write_fd, timeout,
    write_all, write_head_body, Read,
};
pub use net::{
    accept, accept_now, bind_reuseport, connect, idle_is_quiet, is_local_exhaustion,
    prepare_accepted, socket_option, AcceptCanceller, ConnectError,
};
pub use pace::Pace;
pub use pooled::{release_kept, Pooled};
pub use socket::{recv_either, Socket};
pub use splice::{
    recv_watching, send_watching, sendfile_exact, splice_exact, splice_until_eof, PipePool,
    SpliceError, PIPE_POOL, SPLICE_MIN,
};
pub use stream::Stream;
pub use task::catch_panic;
pub use tls::TlsStream;

pub use monoio::io::{CancelHandle, Canceller, Splitable};
pub use monoio::net::{TcpListener, TcpStream};
pub use monoio::spawn;
pub use timer::sleep;
