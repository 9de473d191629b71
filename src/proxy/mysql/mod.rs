//! MySQL pass-through proxying (being written: see issue 4). Until it lands, MySQL frontends
//! accept and close.
use std::net::SocketAddr;
use std::rc::Rc;

use crate::rt::TcpStream;
use crate::shard::{ConnGuard, Shard};

/// Per-shard MySQL accounting, summed by `show traffic mysql`.
#[derive(Default, Debug)]
pub struct MysqlShardStats {}

/// Called once per shard at start (background tasks such as health checks).
pub fn start_shard(_shard: &Rc<Shard>) {}

/// Serve one accepted MySQL client connection.
pub async fn serve_client(_shard: Rc<Shard>, _fe: usize, stream: TcpStream, _peer: SocketAddr, _guard: ConnGuard) {
    drop(stream);
}

/// `show traffic mysql`.
pub fn render_traffic(_shared: &crate::shard::Shared) -> String {
    String::from("user connections requests\n")
}
