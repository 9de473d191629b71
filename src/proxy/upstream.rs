//! A shard's upstream connections for one pool: per server, a bounded number of connections
//! (busy + idle, `max_connections_per_server`) and a stack of idle keep-alive ones
//! (`max_idle_per_server`). Requests beyond the bound wait for a connection to come back, so
//! 10,000 clients do not turn into 10,000 backend sockets. Nothing here is shared with other
//! shards; the server's health and busyness live in [`PoolShared`].

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::balance::PoolShared;
use crate::config::Pool;
use crate::rt::{self, Gate, TcpStream};

/// Read buffer each upstream connection carries (response heads and small bodies).
pub const UPSTREAM_BUF: usize = 16 * 1024;

struct ServerSlots {
    gate: Gate,
    idle: RefCell<Vec<(Upstream, Instant)>>,
}

/// One connection to a backend server; its slot is held until `slot` is dropped.
pub struct Upstream {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub server: usize,
    /// Served an earlier request (so a failure may just mean the server closed it while idle).
    pub reused: bool,
    pub slot: Slot,
}

/// A place in a server's connection bound, given back when dropped.
pub struct Slot(Rc<ServerSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.gate.release();
    }
}

pub enum CheckoutError {
    /// Connect refused, reset or timed out: the server is to be marked down.
    Connect(io::Error),
    /// Every connection to this server is busy and none came back in time.
    NoSlot,
}

pub struct UpstreamPool {
    pub conf: Pool,
    pub shared: Arc<PoolShared>,
    servers: Vec<Rc<ServerSlots>>,
}

impl UpstreamPool {
    pub fn new(conf: &Pool, shared: Arc<PoolShared>) -> Self {
        UpstreamPool {
            servers: conf
                .servers
                .iter()
                .map(|_| {
                    Rc::new(ServerSlots {
                        gate: Gate::new(conf.max_connections_per_server),
                        idle: RefCell::new(Vec::new()),
                    })
                })
                .collect(),
            conf: conf.clone(),
            shared,
        }
    }

    /// An idle connection to `server` if one is fresh enough, else a new one. `fresh` skips
    /// the idle stack (used for the one retry after a reused connection failed).
    pub async fn checkout(
        &self,
        server: usize,
        fresh: bool,
        wait: Duration,
    ) -> Result<Upstream, CheckoutError> {
        let slots = &self.servers[server];
        if !fresh {
            let max_age = self.conf.idle_timeout;
            loop {
                let popped = slots.idle.borrow_mut().pop();
                match popped {
                    Some((mut up, since)) if since.elapsed() < max_age => {
                        up.reused = true;
                        return Ok(up);
                    }
                    Some(_) => continue, // expired: dropped, its slot released
                    None => break,
                }
            }
        }
        if !slots.gate.acquire(wait).await {
            return Err(CheckoutError::NoSlot);
        }
        let addr = self.shared.servers[server].addr;
        match rt::connect(addr, self.conf.connect_timeout).await {
            Ok(stream) => Ok(Upstream {
                stream,
                buf: Vec::with_capacity(UPSTREAM_BUF),
                server,
                reused: false,
                slot: Slot(slots.clone()),
            }),
            Err(e) => {
                slots.gate.release();
                Err(CheckoutError::Connect(e))
            }
        }
    }

    /// Return a connection whose last exchange ended cleanly; kept if there is room.
    pub fn checkin(&self, mut up: Upstream) {
        let slots = &self.servers[up.server];
        let mut idle = slots.idle.borrow_mut();
        if idle.len() < self.conf.max_idle_per_server {
            up.buf.clear();
            idle.push((up, Instant::now()));
        }
    }

    /// Idle connections held now for `server` (for tests and stats).
    pub fn idle_count(&self, server: usize) -> usize {
        self.servers[server].idle.borrow().len()
    }

    /// Close every idle connection (graceful stop).
    pub fn clear_idle(&self) {
        for s in &self.servers {
            s.idle.borrow_mut().clear();
        }
    }
}
