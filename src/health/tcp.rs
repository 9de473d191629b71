//! `method = "tcp"` (URLSW `tcp_connect`): the server passes when a TCP connect completes
//! within `timeout`. The connection is closed at once without a byte sent.

use std::net::SocketAddr;
use std::time::Duration;

use super::Outcome;

pub(super) async fn check(
    addr: SocketAddr,
    timeout: Duration,
    proxy: Option<crate::config::ProxyVersion>,
) -> Outcome {
    match super::connect(addr, timeout, proxy).await {
        Ok(stream) => {
            drop(stream);
            Outcome::Pass("connected".into())
        }
        Err(o) => o,
    }
}
