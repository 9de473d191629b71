//! The HTTP/1.1 proxy, one room per stage, each readable top to bottom:
//!
//! - [`conn`]: a client connection's life: read a head (resuming the scan where the last read
//!   stopped), run the exchange, keep the connection alive or close it (lingering, so a
//!   response is not destroyed by a reset), phases for the counters.
//! - [`exchange`]: one request/response exchange as an explicit [`exchange::Exchange`] value
//!   (what was sent, what is left of each body, whether either connection may be kept), and
//!   its stages route → forward → respond.
//! - [`forward`]: pick a server, check a connection out, send the request, read the response
//!   head; the failover and retry rules live here and nowhere else.
//! - [`relay`]: bodies, by framing, copied or spliced, never losing the bytes that follow.
//! - [`sticky`]: the route a request names (cookie, URL), our cookie out of requests and into
//!   responses.
//! - [`tunnel`]: after `101 Switching Protocols`, bytes both ways.
//! - [`error`]: the data path's one error type: which side failed, whether a retry is safe,
//!   which status the client gets.
//!
//! The exchange, as the state moves (`docs/architecture.md` has the long form):
//!
//! ```text
//!   head parsed ──route──► no pool: 404 / foreign host: 400
//!        │ begin: rewrite head, take buffered body bytes ── bad chunk / too large: 400 / 413
//!        ▼
//!   forward: server? ─ none: 503 ── connect refused: mark down, next server
//!        │ write head+buffered body ─ write failed on a reused conn: retry once (any method)
//!        │ stream rest of body ── client silent: 408 / gone: close / server answers: CUT
//!        │ response head (1xx forwarded) ─ closed, nothing read, reused, whole request in hand,
//!        │                                  idempotent: retry once / else 502 / slow: 504
//!        ▼
//!   respond: 101 → tunnel │ head + body to client ── server keeps sending: dirty
//!        ▼
//!   upstream kept only if request sent whole, response complete, nothing extra, no close
//!   client kept only if it did not ask to close, response framed, request not CUT, not draining
//! ```

mod answer;
mod cached;
mod conn;
pub(crate) mod done;
mod edge;
mod error;
mod exchange;
mod files;
mod forward;
mod pick;
mod relay;
mod sticky;
mod tunnel;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use crate::config::HttpFrontend;
use crate::metrics::ExchangeMetrics;
use crate::proto::http::parse::Limits;
use crate::proxy::{ShardCtx, ShardView};
use crate::rt::TcpStream;
use crate::shard::ConnGuard;
use crate::stats::SiteTable;

/// Buffer used to relay bodies.
const RELAY_BUF: usize = 64 * 1024;
/// Relay buffers kept per shard for reuse.
const RELAY_BUFS_KEPT: usize = 64;

/// An HTTP frontend as a shard uses it.
pub struct HttpFront {
    pub conf: HttpFrontend,
    pub limits: Limits,
    /// This shard's metrics of the frontend (kept by name across reloads).
    pub metrics: Arc<ExchangeMetrics>,
}

impl HttpFront {
    pub fn new(conf: HttpFrontend, metrics: Arc<ExchangeMetrics>) -> HttpFront {
        HttpFront {
            metrics,
            limits: Limits {
                max_request_line: conf.max_request_line,
                max_header_bytes: conf.max_header_bytes,
                max_headers: conf.max_headers,
                max_body: conf.max_body,
            },
            conf,
        }
    }
}

/// One shard's HTTP state: its site counters and spare relay buffers (its frontends and
/// connections to every pool's servers are in the shard's view of the config). Only the
/// shard's own thread touches it.
pub struct HttpShard {
    pub ctx: Rc<ShardCtx>,
    pub sites: SiteTable,
    relay_bufs: RefCell<Vec<Vec<u8>>>,
    /// Open static files (`static` routes).
    pub files: RefCell<crate::files::FileCache>,
    /// This shard's part of every HTTP cache, by zone name.
    pub caches: crate::cache::Zones,
    /// The last client connection number given out.
    conn_ids: std::cell::Cell<u64>,
}

impl HttpShard {
    pub fn new(ctx: Rc<ShardCtx>) -> Rc<HttpShard> {
        let http = Rc::new(HttpShard {
            sites: SiteTable::default(),
            relay_bufs: RefCell::new(Vec::new()),
            files: RefCell::new(crate::files::FileCache::default()),
            caches: Default::default(),
            conn_ids: std::cell::Cell::new(0),
            ctx,
        });
        // Shedding load near the memory ceiling: close idle upstream connections (each holds
        // a read buffer), drop the spare relay buffers and the spare blocks of finished
        // exchanges (rt::Pooled).
        let weak = Rc::downgrade(&http);
        http.ctx.shard.on_shed(Box::new(move || {
            if let Some(http) = weak.upgrade() {
                for c in &http.ctx.view().conns {
                    c.drop_idle();
                }
                http.relay_bufs.borrow_mut().clear();
                crate::rt::release_kept();
            }
        }));
        // A reload that removes a cache frees that cache's memory on this shard at once.
        let weak = Rc::downgrade(&http);
        http.ctx.on_refresh(Box::new(move |view| {
            if let Some(http) = weak.upgrade() {
                let config = &view.gen.config;
                let names: Vec<&str> = config
                    .http
                    .iter()
                    .flat_map(|f| &f.routes)
                    .filter_map(|r| match &r.target {
                        crate::config::RouteTarget::Pool { cache, .. } => cache.as_deref(),
                        crate::config::RouteTarget::Static(_) => None,
                    })
                    .chain(config.pools.iter().filter_map(|p| p.cache.as_deref()))
                    .map(|c| c.zone.as_str())
                    .collect();
                http.caches.retain(|z| names.contains(&z));
                http.ctx
                    .shared
                    .caches
                    .forget(http.ctx.id(), |z| names.contains(&z));
            }
        }));
        http
    }

    /// Serve one client connection of frontend `fe` (of `view`) until it closes: accepted
    /// here, or `adopted` (an idle keep-alive connection handed over by the process this one
    /// replaced).
    pub async fn serve(
        self: Rc<Self>,
        view: Rc<ShardView>,
        fe: usize,
        stream: TcpStream,
        peer: SocketAddr,
        guard: ConnGuard,
        adopted: bool,
    ) {
        conn::serve(self, view, fe, stream, peer, guard, adopted).await
    }

    /// A number for a new client connection, unique on this shard.
    pub fn next_conn_id(&self) -> u64 {
        let id = self.conn_ids.get() + 1;
        self.conn_ids.set(id);
        id
    }

    fn relay_buf(&self) -> Vec<u8> {
        self.relay_bufs
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(RELAY_BUF))
    }

    fn give_back(&self, mut b: Vec<u8>) {
        let mut kept = self.relay_bufs.borrow_mut();
        if kept.len() < RELAY_BUFS_KEPT && b.capacity() == RELAY_BUF {
            b.clear();
            kept.push(b);
        }
    }
}
