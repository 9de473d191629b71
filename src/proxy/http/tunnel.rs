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
use std::time::{Duration, Instant};

use super::HttpShard;
use crate::config::HttpFrontend;
use crate::proxy::conns::Upstream;
use crate::rt::{self, Read, Socket, Stream};

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
        // TLS on a side: its bytes pass through user space.
        copy_both(&mut client, &mut upstream, idle).await;
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

/// Tunnel by copying: wait for either side to send (both reads are cancel-safe, so the one
/// that loses the race keeps its bytes), pass what came to the other side, and half-close a
/// side once its peer has finished sending. Ends when both have, on an error, or after `idle`
/// without a byte either way.
async fn copy_both(a: &mut Socket, b: &mut Socket, idle: Duration) {
    let (mut abuf, mut bbuf) = (Vec::with_capacity(16 * 1024), Vec::with_capacity(16 * 1024));
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        abuf.clear();
        bbuf.clear();
        // Which side sent (true: `a`), and how its read ended.
        let got = rt::timeout(
            idle,
            rt::recv_either(a, &mut abuf, a_open, b, &mut bbuf, b_open),
        )
        .await;
        let Some((from_a, r)) = got else {
            return;
        };
        let (src_open, dst, data) = if from_a {
            (&mut a_open, &mut *b, &abuf)
        } else {
            (&mut b_open, &mut *a, &bbuf)
        };
        match r {
            Read::Data => {
                let (w, _) = rt::write_all(dst, data.clone(), idle).await;
                if w.is_err() {
                    return;
                }
            }
            Read::Eof => {
                *src_open = false;
                rt::shutdown_write(dst).await;
            }
            _ => return,
        }
    }
}

/// Keeps `tunnels.open` right however the tunnel ends.
struct TunnelGauge<'a>(&'a crate::stats::ShardStats);

impl Drop for TunnelGauge<'_> {
    fn drop(&mut self) {
        self.0.tunnels.sub(1);
    }
}
