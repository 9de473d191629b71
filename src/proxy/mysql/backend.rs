//! Choosing a server for a new MySQL session and connecting to it: the pool's balancer, a
//! server's `max_connections` (waiting for a place up to `queue_timeout`), failover on refused
//! or silent servers, the PROXY header of a `send_proxy` server, the greeting read whole.

use super::*;

/// Connect to a server; to one with `send_proxy`, the client's PROXY header goes first.
pub(super) async fn connect_proxied(
    ss: &ServerShared,
    (src, dst): crate::proxy::ClientAddrs,
    timeout: Duration,
) -> Result<TcpStream, rt::ConnectError> {
    let mut stream = rt::connect(ss.addr, timeout).await?;
    if let Some(v) = ss.send_proxy {
        let mut head = Vec::with_capacity(64);
        match v {
            crate::config::ProxyVersion::V1 => {
                crate::proto::proxy_protocol::write_v1(src, dst, &mut head)
            }
            crate::config::ProxyVersion::V2 => {
                crate::proto::proxy_protocol::write_v2(src, dst, &mut head)
            }
        }
        if let (Err(e), _) = rt::write_all(&mut stream, head, timeout).await {
            return Err(rt::ConnectError::Peer(e));
        }
    }
    Ok(stream)
}

/// Connect to the best usable server of the pool and read its greeting, failing over on
/// refused/timed-out connects and missing greetings (each marks its server down everywhere).
/// Returns the server index, the stream, the greeting packet (header included) and the
/// session's place in the server's `max_connections`.
pub(super) async fn connect_backend<'s>(
    shard: &ShardCtx,
    view: &'s ShardView,
    pool_ix: usize,
    counters: &FrontCounters,
    addrs: crate::proxy::ClientAddrs,
) -> Result<(usize, TcpStream, Vec<u8>, Place<'s>), NoBackend> {
    let peer = addrs.0;
    let pool = &view.gen.pools[pool_ix];
    let conf = &view.gen.config.pools[pool_ix];
    let (mut order, mut scratch) = (Vec::new(), Vec::new());
    // Only source_ip stickiness applies to MySQL (a session has no cookie).
    let sticky = pool
        .sticky
        .as_ref()
        .filter(|st| st.table.is_some())
        .map(|st| (st, st.resolve_client(pool, peer.ip(), rt::now_ms())));
    // balance = "hash": MySQL pools hash the client's address.
    let hash = match pool.balance {
        crate::config::Balance::Hash => crate::balance::hash::ip_hash(peer.ip()),
        _ => 0,
    };
    // A server at its own max_connections is passed over; when every usable one is, the
    // session waits for a place (polling, like HTTP requests queued on other shards' places)
    // until queue_timeout, then gets ERR 1040. Each pass orders the servers afresh, so one
    // marked down or put in maintenance meanwhile is not tried again.
    let deadline = Instant::now() + conf.queue_timeout;
    loop {
        {
            let pick = crate::balance::Pick {
                now_ms: rt::now_ms(),
                sticky: sticky.and_then(|(_, t)| t.target),
                hash,
            };
            view.balancers.borrow_mut()[pool_ix].candidates(pool, &pick, &mut scratch, &mut order);
        }
        let mut full = false;
        for &ix in &order {
            let ss = &pool.servers[ix];
            let Some(place) = ss.take_place() else {
                full = true;
                continue;
            };
            let failure = match connect_proxied(ss, addrs, conf.connect_timeout).await {
                Ok(mut stream) => match read_greeting(&mut stream, conf.connect_timeout).await {
                    Ok(g) => {
                        if ss.mark_up() {
                            tracing::info!(event = "server_up", pool = %pool.name, server = %ss.name, "server up: connect succeeded");
                        }
                        if let Some((st, t)) = &sticky {
                            st.settle(shard.shard.id, t, ix);
                            st.remember(t, ix, rt::now_ms());
                        }
                        return Ok((ix, stream, g, place));
                    }
                    Err(e) => e,
                },
                // Out of descriptors or memory here: no server is to blame, and none will do
                // better.
                Err(rt::ConnectError::Local(e)) => {
                    static LOG: crate::rt::LogLimit = crate::rt::LogLimit::new();
                    if let Some(suppressed) = LOG.allow() {
                        tracing::warn!(event = "upstream_no_resources", pool = %pool.name, error = %e, suppressed, "cannot open a server connection: out of local resources");
                    }
                    return Err(NoBackend::LocalExhaustion);
                }
                Err(rt::ConnectError::Peer(e)) => e.to_string(),
            };
            counters.connect_failures.add(1);
            if ss.mark_down(rt::now_ms(), conf.down_time.as_millis() as u64) {
                tracing::warn!(event = "server_down", pool = %pool.name, server = %ss.name, error = %failure, down_for = ?conf.down_time, "mysql server down");
            }
        }
        if !full {
            return Err(NoBackend::Unreachable);
        }
        if Instant::now() >= deadline {
            return Err(NoBackend::Full);
        }
        rt::sleep(FULL_POLL).await;
    }
}

/// How often a session waiting for a place on a full server looks again.
const FULL_POLL: Duration = Duration::from_millis(5);

/// Why a client got no server.
pub(super) enum NoBackend {
    /// Every candidate refused, timed out or sent no greeting (each is now marked down).
    Unreachable,
    /// We could not make a socket at all.
    LocalExhaustion,
    /// Every usable server stayed at its `max_connections` for `queue_timeout`.
    Full,
}

/// Read the server's first packet (greeting or ERR) whole.
pub(super) async fn read_greeting(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(256);
    loop {
        if let Some(n) = complete_packet_len(&buf) {
            if n != buf.len() {
                return Err("server sent data after its greeting before the client spoke".into());
            }
            return match buf.get(4) {
                Some(10) | Some(0xFF) => Ok(buf),
                other => Err(format!("not a MySQL greeting (first byte {other:?})")),
            };
        }
        if buf.len() >= MAX_GREETING {
            return Err("greeting too long".into());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no greeting within connect_timeout".into());
        }
        let (r, b) = rt::read_into(stream, buf, 256, left).await;
        buf = b;
        match r {
            Read::Data => {}
            Read::Eof => return Err("closed before its greeting".into()),
            Read::TimedOut | Read::Drained | Read::Woken => {
                return Err("no greeting within connect_timeout".into())
            }
            Read::Err(e) => return Err(e.to_string()),
        }
    }
}
