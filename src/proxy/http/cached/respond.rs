//! After the origin's response head: store and answer from the stored copy, merge a 304,
//! fall back on a stale copy, relay what is not stored, invalidate after unsafe methods.

use super::*;

/// What [`respond`] did.
pub enum After {
    /// Answered (or, in the background, done); the status the client got and whether the
    /// answer went out whole.
    Done(Outcome, u16, bool),
    /// Not for the cache: relay the response as usual, with this `X-Cache` value (if any).
    Relay(Upstream, ResponseHead, &'static str),
}

/// After the origin's response head: store, merge, fall back, or hand back for relaying.
#[allow(clippy::too_many_arguments)]
pub async fn respond(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    x: &mut Exchange,
    mut up: Upstream,
    resp: ResponseHead,
    plan: &mut Plan,
    read_timeout: std::time::Duration,
    started: Instant,
) -> After {
    let z = plan.zone.clone();
    let status = resp.status;
    if plan.mode == Mode::Invalidate {
        if (200..400).contains(&status) {
            invalidate(conn, plan, &up.buf, &resp);
        }
        return After::Relay(up, resp, plan.label);
    }
    if plan.mode == Mode::Bypass {
        return After::Relay(up, resp, plan.label);
    }
    let background = plan.background.is_some();
    // A 304 to our validators: the stored entry is current again.
    if let (304, Some(old)) = (status, plan.entry.clone()) {
        if plan.mode == Mode::Revalidate {
            let reusable = up.buf.len() == resp.head_len && !resp.close;
            // The answer for this client keeps the 304's Set-Cookie; the stored copy never
            // does, and a 304 that makes the response private or no-store ends the entry.
            let (mine, stored) = merged(plan, &old, &up.buf, &resp);
            let keep = z.is_stored(&plan.key, &old) && z.purges() == plan.purges;
            let e = match stored {
                Some(st) if keep => {
                    let st = z.insert(&plan.key, st);
                    mine.map_or(st, Rc::new)
                }
                st => {
                    z.remove_entry(&plan.key, &old);
                    Rc::new(mine.or(st).unwrap_or_else(|| clone_entry(&old)))
                }
            };
            // Requests waiting for this fetch may look again now.
            plan.lead.take();
            if reusable {
                if let Some(c) = conn.view.conns.get(x.pool) {
                    c.checkin(up, false);
                }
            }
            if background {
                return After::Done(Outcome::KeepAlive, 0, true);
            }
            z.stats.revalidated.add(1);
            return answered(conn, client, plan, &e, "REVALIDATED", started, via(x)).await;
        }
    }
    // An error from the origin: a stale entry that allows it answers instead.
    if status >= 500 {
        if let Some(old) = plan.entry.clone() {
            if policy::stale_if_error(&old.stored, &plan.req, old.age_ms(now_ms())) {
                if background {
                    old.updating.set(false);
                    return After::Done(Outcome::KeepAlive, 0, true);
                }
                z.stats.stale.add(1);
                return answered(conn, client, plan, &old, "STALE", started, via(x)).await;
            }
        }
    }
    let f = facts(&up.buf, status, &resp.headers);
    let why_not = policy::not_storable(&plan.req, &f.resp).or_else(|| {
        // The origin saw these as the proxy wrote them, not as the client sent them: a
        // variant keyed on the client's value would be served to the wrong clients.
        f.vary
            .iter()
            .any(|n| {
                matches!(
                    &**n,
                    "x-forwarded-for" | "x-forwarded-proto" | "forwarded" | "x-real-ip"
                ) || n.contains('_')
            })
            .then_some("Vary on a field the proxy rewrites")
    });
    let max = z.max_object();
    let fits = match resp.framing {
        Framing::None => true,
        Framing::Length(n) => n <= max,
        Framing::Chunked => true,
        Framing::UntilClose => false,
    };
    if why_not.is_some() || !fits || x.req.upgrade {
        tracing::debug!(
            why = why_not.unwrap_or("too large or close-delimited"),
            "not stored"
        );
        if let Some(old) = &plan.entry {
            // The stored copy is outdated by this answer.
            if (200..400).contains(&status) {
                z.remove_entry(&plan.key, old);
            }
        }
        plan.lead.take();
        if background {
            if let Some(e) = &plan.entry {
                e.updating.set(false);
            }
            return After::Done(Outcome::KeepAlive, 0, true);
        }
        return After::Relay(up, resp, plan.label);
    }
    // Read the whole body into memory (up to the limit), within the shard's budget for fills
    // under way: beyond it, the answer is relayed as it comes instead.
    let reserve = match resp.framing {
        Framing::Length(n) => n as usize,
        _ => max as usize,
    };
    let Some(_fill) = z.fill(reserve) else {
        plan.lead.take();
        if background {
            if let Some(e) = &plan.entry {
                e.updating.set(false);
            }
            return After::Done(Outcome::KeepAlive, 0, true);
        }
        return After::Relay(up, resp, plan.label);
    };
    let mut raw: Vec<u8> = up.buf[resp.head_len..].to_vec();
    let mut body = BodyLeft::response(resp.framing);
    let mut scratch = Vec::new();
    let mut taken = 0usize;
    let mut complete = body.is_none();
    let mut extra = false;
    let limit = max as usize + 64 * 1024;
    if let Some(b) = body.as_mut() {
        loop {
            match b.take(&raw[taken..], &mut scratch) {
                Ok((k, done)) => {
                    taken += k;
                    if done {
                        complete = true;
                        extra = taken < raw.len();
                        break;
                    }
                }
                Err(_) => {
                    if let Some(e) = &plan.entry {
                        e.updating.set(false);
                    }
                    if background {
                        return After::Done(Outcome::KeepAlive, 0, true);
                    }
                    // Nothing went to the client yet: it gets a 502.
                    return After::Done(Outcome::Answer(502), 502, false);
                }
            }
            if taken > limit {
                break;
            }
            let (r, next) = rt::read_into(
                &mut up.stream,
                std::mem::take(&mut raw),
                16 * 1024,
                read_timeout,
            )
            .await;
            raw = next;
            if !matches!(r, Read::Data) {
                // The origin went away or stalled mid-body: nothing to store or answer with.
                if let (false, Some(old)) = (background, plan.entry.clone()) {
                    if policy::stale_if_error(&old.stored, &plan.req, old.age_ms(now_ms())) {
                        z.stats.stale.add(1);
                        return answered(conn, client, plan, &old, "STALE", started, via(x)).await;
                    }
                }
                if let Some(e) = &plan.entry {
                    e.updating.set(false);
                }
                if background {
                    return After::Done(Outcome::KeepAlive, 0, true);
                }
                return After::Done(Outcome::Answer(502), 502, false);
            }
        }
    }
    let data = match (complete, resp.framing) {
        (false, _) => None,
        (true, Framing::Chunked) => {
            let mut d = ChunkedDecoder::new();
            let mut out = Vec::with_capacity(taken);
            let _ = d.feed_data(&raw[..taken], &mut out);
            Some(out)
        }
        (true, _) => Some(raw[..taken].to_vec()),
    };
    match data.filter(|d| d.len() as u64 <= max) {
        Some(d) => {
            let e = entry_for(plan, &up.buf, &resp, &f, Bytes::from(d));
            let reusable = !extra && !resp.close;
            // A purge that arrived while this was fetched may name it: answer, do not store.
            let e = if z.purges() == plan.purges {
                z.insert(&plan.key, e)
            } else {
                Rc::new(e)
            };
            plan.lead.take();
            if reusable {
                if let Some(c) = conn.view.conns.get(x.pool) {
                    c.checkin(up, false);
                }
            }
            if background {
                return After::Done(Outcome::KeepAlive, 0, true);
            }
            let label = plan.label;
            answered(conn, client, plan, &e, label, started, via(x)).await
        }
        None => {
            // Over the limit: the client gets the response as it came, the rest relayed.
            plan.lead.take();
            if let Some(e) = &plan.entry {
                e.updating.set(false);
            }
            if background {
                return After::Done(Outcome::KeepAlive, 0, true);
            }
            let keep = x.client_keeps(&resp, conn.closing());
            conn.out.clear();
            crate::proto::http::write::write_response_head(
                &up.buf,
                &resp,
                keep,
                x.req.http10,
                false,
                &mut conn.out,
            );
            add_label(&mut conn.out, plan.label, z.conf.status_header);
            crate::proxy::http::edge::hsts(&mut conn.out, &conn.fe, conn.tls);
            conn.out.extend_from_slice(&raw[..taken]);
            if conn.send_out(client, &mut x.answered).await.is_err() {
                return After::Done(Outcome::Close { linger: false }, status, false);
            }
            if complete {
                // All of it was read (a chunked body whose decoded size turned out too large):
                // nothing is left to relay.
                if !extra && !resp.close {
                    if let Some(c) = conn.view.conns.get(x.pool) {
                        c.checkin(up, false);
                    }
                }
                let outcome = if keep {
                    Outcome::KeepAlive
                } else {
                    Outcome::Close { linger: true }
                };
                return After::Done(outcome, status, true);
            }
            let Some(mut b) = body else {
                return After::Done(Outcome::Close { linger: false }, status, false);
            };
            let rbuf = conn.http.relay_buf();
            let pace = rt::Pace::new(conn.fe.conf.send_timeout, conn.fe.conf.send_min_rate);
            let relay = relay::Relay {
                pipes: &conn.http.ctx.shard.pipes,
                read_timeout,
                write_timeout: conn.fe.conf.send_timeout,
                dir: relay::Dir::Response,
                pace: &pace,
            };
            let mut overran = false;
            let (end, rbuf) = relay
                .run(
                    &mut up.stream,
                    client,
                    &mut b,
                    rbuf,
                    &mut conn.wbuf,
                    relay::Spill::Note(&mut overran),
                    &mut x.answered,
                )
                .await;
            conn.http.give_back(rbuf);
            let whole = matches!(end, relay::RelayEnd::Done);
            let outcome = if whole && keep {
                Outcome::KeepAlive
            } else {
                Outcome::Close { linger: whole }
            };
            After::Done(outcome, status, whole)
        }
    }
}

/// Answer the client from `e` after a fetch (the request's head is gone from `conn.buf`).
pub(super) async fn answered(
    conn: &mut Conn<'_>,
    client: &mut Socket,
    plan: &Plan,
    e: &Rc<Entry>,
    label: &str,
    started: Instant,
    via: Via,
) -> After {
    let z = plan.zone.clone();
    let out = serve(conn, client, 0, &plan.ask, e, label, &z, started, via).await;
    // `serve` counted the exchange: the caller must not count it again.
    After::Done(out, 0, true)
}

/// Append `X-Cache: label` to a head written in `out` (which ends with the blank line).
pub fn add_label(out: &mut Vec<u8>, label: &str, on: bool) {
    if !on || label.is_empty() || !out.ends_with(b"\r\n\r\n") {
        return;
    }
    out.truncate(out.len() - 2);
    field(out, "X-Cache", label.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// §4.4: a successful unsafe request evicts its URL and those in `Location` and
/// `Content-Location` on the same host, here and on every shard.
pub(super) fn invalidate(conn: &Conn, plan: &Plan, buf: &[u8], resp: &ResponseHead) {
    let host_end = plan
        .key
        .iter()
        .position(|&b| b == b'/')
        .unwrap_or(plan.key.len());
    let host = &plan.key[..host_end];
    let mut keys = vec![plan.key.clone()];
    for h in &resp.headers {
        let n = h.name.of(buf);
        if !(n.eq_ignore_ascii_case(b"location") || n.eq_ignore_ascii_case(b"content-location")) {
            continue;
        }
        let v = h.value.of(buf);
        let target = if v.starts_with(b"/") {
            Some(v.to_vec())
        } else {
            // Absolute: only the same host (another host's URL is not ours to evict).
            v.strip_prefix(b"http://")
                .or_else(|| v.strip_prefix(b"https://"))
                .and_then(|rest| {
                    let slash = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
                    let mut k = Vec::new();
                    cache::key(&rest[..slash], &rest[slash..], &mut k);
                    (k.starts_with(host) && k.get(host.len()) == Some(&b'/'))
                        .then(|| k[host.len()..].to_vec())
                })
        };
        if let Some(t) = target {
            let mut k = Vec::new();
            cache::key(host, &t, &mut k);
            keys.push(k);
        }
    }
    for k in keys {
        let n = plan.zone.remove(&Purge::Key(k.clone()));
        plan.zone.stats.purged.add(n as u64);
        conn.http.ctx.shared.caches.purge(Purge::Key(k));
    }
}
