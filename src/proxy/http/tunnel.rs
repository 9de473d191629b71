//! After `101 Switching Protocols`: splice bytes both ways until both directions have closed
//! (a side that finishes sending is half-closed towards the other), one fails (then both are
//! shut down at once), or nothing has moved either way for `tunnel_timeout`.
//!
//! A tunnel gives its server slot back at once: `max_connections_per_server` bounds requests in
//! flight, and an idle WebSocket held for an hour is not one. Tunnels are bounded by the client
//! connections they come with (`daemon.max_connections`) and by `tunnel_timeout`.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Instant;

use super::HttpShard;
use crate::config::HttpFrontend;
use crate::proxy::conns::Upstream;
use crate::rt::{self, Socket, Stream};

/// Tunnel `client` and `up` until done; `client_leftover` (bytes the client sent after the
/// upgrade request) goes to the server first.
pub async fn run(
    http: &HttpShard,
    conf: &HttpFrontend,
    mut client: Socket,
    up: Upstream,
    client_leftover: Vec<u8>,
) {
    let Upstream {
        stream: mut upstream,
        slot,
        ..
    } = up;
    drop(slot);
    http.ctx.stats().tunnels.add(1);
    http.ctx.stats().tunnels_opened.add(1);
    let _open = TunnelGauge(http.ctx.stats());
    if !client_leftover.is_empty() {
        let (r, _) = rt::write_all(&mut upstream, client_leftover, conf.send_timeout).await;
        if r.is_err() {
            return;
        }
    }
    let idle = conf.tunnel_timeout;
    let (Socket::Tcp(client), Socket::Tcp(upstream)) = (&client, &upstream) else {
        // TLS on a side: its bytes pass through user space, both ways in this task.
        rt::duplex(&mut client, &mut upstream, idle, &mut rt::NoHooks).await;
        return;
    };
    let pipes = &http.ctx.shard.pipes;
    let activity = Cell::new(Instant::now());
    let (cfd, ufd) = (client.raw_fd(), upstream.raw_fd());
    let mut up_dir = pin!(rt::splice_until_eof(
        pipes, client, upstream, idle, &activity
    ));
    let mut down_dir = pin!(rt::splice_until_eof(
        pipes, upstream, client, idle, &activity
    ));
    let (mut up_done, mut down_done) = (false, false);
    poll_fn(|cx| {
        for (fut, done) in [
            (up_dir.as_mut(), &mut up_done),
            (down_dir.as_mut(), &mut down_done),
        ] {
            if !*done {
                if let Poll::Ready(r) = fut.poll(cx) {
                    *done = true;
                    if r.is_err() {
                        // One side failed or the tunnel idled out: end the other direction too.
                        rt::shutdown_fd(cfd);
                        rt::shutdown_fd(ufd);
                    }
                }
            }
        }
        if up_done && down_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// Keeps `tunnels.open` right however the tunnel ends.
struct TunnelGauge<'a>(&'a crate::stats::ShardStats);

impl Drop for TunnelGauge<'_> {
    fn drop(&mut self) {
        self.0.tunnels.sub(1);
    }
}
