//! The relay side of the query cache (`[[mysql.cache]]`; the store and its rules are in
//! [`super::qcache`]): a read of the client that is one whole cacheable `COM_QUERY` is looked
//! up; a hit is accounted as if the server had answered and written to the client through a
//! second descriptor of its socket; a miss collects the server's reply as it is relayed and
//! stores it when the observer says the reply ended.

use std::os::fd::RawFd;
use std::time::Duration;

use crate::proto::mysql::com;
use crate::proto::mysql::digest::Normalizer;
use crate::proto::mysql::packet::MAX_CHUNK;
use crate::proto::mysql::status as mysql_status;
use crate::rt::{self, TcpStream};

use super::{qcache, Dir, Session, SessionState};

impl Session<'_> {
    /// A reply from the query cache for this read of the client, if it is one whole cacheable
    /// `COM_QUERY` (rules in [`qcache`]) and the cache has a fresh result. On a miss the
    /// query goes to the server and its reply is collected ([`Capture`]).
    pub(super) fn cache_lookup(&self, pkt: &[u8]) -> Option<Box<[u8]>> {
        let (frontend, conf) = self.cache?;
        let &[l0, l1, l2, seq, cmd] = pkt.first_chunk::<5>()?;
        let sql = &pkt[5..];
        let len = u32::from_le_bytes([l0, l1, l2, 0]) as usize;
        if len + 4 != pkt.len() || seq != 0 || cmd != com::QUERY || len >= MAX_CHUNK {
            return None;
        }
        let mut st = self.state.borrow_mut();
        let status = st.observer.server_status();
        if !st.observer.idle()
            || self.down_busy.get()
            || st.capture.is_some()
            || st.digests.session_changed()
            || status & mysql_status::AUTOCOMMIT == 0
            || status & mysql_status::IN_TRANS != 0
        {
            return None;
        }
        let digest = Normalizer::digest(sql);
        let user = st.acct.user();
        let schema = st.digests.schema();
        let rule = qcache::rule_for(conf, &digest.text, user, schema)?;
        let parts = qcache::KeyParts {
            frontend,
            user,
            schema,
            caps: st.observer.client_caps(),
            charset: st.observer.handshake_charset(),
            names: st.digests.names(),
        };
        let key = qcache::key(&parts, sql);
        match self.qcache.lookup(frontend, rule, &key, rt::now_ms()) {
            Some(reply) => Some(reply),
            None => {
                st.capture = Some(Capture {
                    rule,
                    key,
                    buf: Vec::new(),
                    over: false,
                });
                None
            }
        }
    }

    /// Account a query answered from the cache as if the server had answered it (the
    /// per-user and per-digest counts are the client's traffic), without counting it on the
    /// server.
    pub(super) fn observe_hit(&self, query: &[u8], reply: &[u8]) {
        let now = rt::now_us();
        self.ctl.last_active_ms.set(rt::ms_of(now));
        let mut st = self.state.borrow_mut();
        self.feed(&mut st, query, Dir::ClientToServer, now, true);
        self.feed(&mut st, reply, Dir::ServerToClient, now, true);
        self.ctl.busy.set(st.observer.outstanding() > 0);
    }

    /// Write a cached reply to the client through the second descriptor. False: the client
    /// is gone (or stopped reading for `client_write_timeout`).
    pub(super) async fn write_cached(&self, reply: Box<[u8]>) -> bool {
        let stream = self.client_dup.borrow_mut().take();
        let mut stream = match stream {
            Some(s) => s,
            None => match dup_stream(self.ctl.client_fd) {
                Ok(s) => s,
                Err(_) => return false,
            },
        };
        self.ctl.client_write_since_ms.set(rt::now_ms());
        let write_ms = self.ctl.write_ms;
        let (res, _) = rt::write_all(
            &mut stream,
            reply.into_vec(),
            Duration::from_millis(write_ms),
        )
        .await;
        self.ctl.client_write_since_ms.set(0);
        *self.client_dup.borrow_mut() = Some(stream);
        res.is_ok()
    }

    /// The collected query's reply ended: keep it if it may be kept (an OK/EOF ending, outside
    /// a transaction, whole and under `cache_max_result`).
    pub(super) fn finish_capture(&self, st: &mut SessionState, ok: bool, bytes_out: u64) {
        let (Some(c), Some((frontend, conf))) = (st.capture.take(), self.cache) else {
            return;
        };
        let status = st.observer.server_status();
        let keep = ok
            && !c.over
            && c.buf.len() as u64 >= bytes_out
            && status & mysql_status::AUTOCOMMIT != 0
            && status & mysql_status::IN_TRANS == 0;
        let reply = keep.then(|| {
            let mut b = c.buf;
            b.truncate(bytes_out as usize);
            b.into_boxed_slice()
        });
        let ttl = conf.rules.get(c.rule).map_or(Duration::ZERO, |r| r.ttl);
        self.qcache
            .store(conf, frontend, c.rule, c.key, reply, ttl, rt::now_ms());
    }

    /// Server bytes of the reply being collected for the cache, up to `cache_max_result`.
    pub(super) fn collect(&self, st: &mut SessionState, data: &[u8]) {
        if let (Some(c), Some((_, conf))) = (st.capture.as_mut(), self.cache) {
            if !c.over && c.buf.len() + data.len() <= conf.max_result {
                c.buf.extend_from_slice(data);
            } else {
                c.over = true;
                c.buf = Vec::new();
            }
        }
    }
}

/// A cacheable query's reply as it streams past (see [`qcache`]).
pub(super) struct Capture {
    rule: usize,
    key: Box<[u8]>,
    buf: Vec<u8>,
    /// Larger than `cache_max_result`: not kept (the bytes collected so far are freed).
    over: bool,
}

/// A second, independent descriptor of a connected socket, as a runtime stream.
fn dup_stream(fd: RawFd) -> std::io::Result<TcpStream> {
    // SAFETY: `fd` is the session's client socket, open for as long as the session runs
    // (the sweeper only shuts it down, never closes it); the borrow ends with this call.
    let owned = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
    TcpStream::from_std(std::net::TcpStream::from(owned))
}
