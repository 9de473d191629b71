//! Which server connection a command gets: a replica for a plain read (fresh enough for
//! read-your-writes), else the primary; an idle one from the shard's pool, else a new login
//! within the user's share of max_server_connections (waiting in order when at it); and how
//! connections go back (as they are, or reset first).

use super::*;

impl<'a> Session<'a> {
    /// Should this COM_QUERY go to a replica (before read-your-writes)?
    pub(super) fn wants_replica(&self, text: &[u8]) -> bool {
        if !self.pc.split || self.no_replica || self.caps & caps::SESSION_TRACK == 0 {
            return false;
        }
        if !self.pc.routes.is_empty() {
            let digest = crate::proto::mysql::digest::Normalizer::digest(text);
            if let Some(r) = self
                .pc
                .routes
                .iter()
                .find(|r| r.regex.is_match(&digest.text))
            {
                // A route may send a statement to the primary, or let a read that does not
                // start with SELECT go to a replica; never a locking, writing or
                // session-bound one.
                return r.replica && rules::session_free(text);
            }
        }
        rules::replica_safe(text)
    }

    /// A replica connection fresh enough for this session's last write, or `None` (the read
    /// goes to the primary).
    pub(super) async fn replica_conn(&mut self) -> Option<ServerConn> {
        let now = rt::now_ms();
        let max_lag = self
            .pool_conf()
            .max_replication_lag
            .map(|d| d.as_millis() as u64);
        let order = self.candidates(true);
        let readable: Vec<usize> = order
            .into_iter()
            .filter(|&ix| {
                self.server(ix)
                    .repl
                    .readable(now, MONITOR_STALE_MS, max_lag)
            })
            .collect();
        if readable.is_empty() {
            return None;
        }
        let gtid = self.last_gtid;
        // Prefer a replica the monitor has already seen apply the session's last write.
        let seen: Vec<usize> = match &gtid {
            Some(g) => readable
                .iter()
                .copied()
                .filter(|&ix| self.server(ix).repl.has(g))
                .collect(),
            None => readable.clone(),
        };
        let mode = self.pc.read_your_writes;
        let servers = if !seen.is_empty() || mode == ReadYourWrites::Off {
            if seen.is_empty() {
                readable
            } else {
                seen
            }
        } else if mode == ReadYourWrites::Primary {
            self.counters.pool_ryw_primary.add(1);
            return None;
        } else {
            readable
        };
        let mut conn = match self.own_replica.take() {
            Some(c) if servers.contains(&c.server) => c,
            other => {
                drop(other);
                self.connection(&servers).await.ok()?
            }
        };
        let Some(g) = gtid else {
            return Some(conn);
        };
        if mode != ReadYourWrites::Wait || self.server(conn.server).repl.has(&g) {
            return Some(conn);
        }
        self.counters.pool_ryw_waits.add(1);
        let secs = self.pc.read_your_writes_timeout.as_secs_f64();
        let sql = format!("SELECT MASTER_GTID_WAIT('{g}', {secs:.3})");
        let deadline = Instant::now() + self.pc.read_your_writes_timeout + Duration::from_secs(5);
        match conn.own_command(com::QUERY, sql.as_bytes(), deadline).await {
            Ok(Ok(rows)) if rows.first() == Some(b"0") => Some(conn),
            Ok(_) => {
                self.counters.pool_ryw_timeouts.add(1);
                self.release(conn).await;
                None
            }
            Err(_) => {
                self.counters.pool_ryw_timeouts.add(1);
                None
            }
        }
    }

    /// The pool's servers of one role, best first by its balancer.
    pub(super) fn candidates(&self, replica: bool) -> Vec<usize> {
        let pool = &self.view.gen.pools[self.conf.pool];
        let (mut order, mut scratch) = (Vec::new(), Vec::new());
        let pick = crate::balance::Pick {
            now_ms: rt::now_ms(),
            sticky: None,
            hash: 0,
        };
        self.view.balancers.borrow_mut()[self.conf.pool].candidates(
            pool,
            &pick,
            &mut scratch,
            &mut order,
        );
        order.retain(|&ix| pool.servers[ix].replica == replica);
        if replica && order.len() > 1 {
            // Spread reads: rotate where the list starts.
            let n = self.sp.next_replica.get();
            self.sp.next_replica.set(n.wrapping_add(1));
            let len = order.len();
            order.rotate_left(n % len);
        }
        order
    }

    /// A primary connection with the session's schema: `Err` is an ERR payload for the
    /// client.
    pub(super) async fn acquire(&mut self, replica: bool) -> Result<ServerConn, Vec<u8>> {
        let order = self.candidates(replica);
        if order.is_empty() {
            let pool = &self.pool_conf().name;
            return Err(err_payload(
                CR_CONN_HOST_ERROR,
                b"HY000",
                &format!("shardgate: no server of pool '{pool}' is up"),
            ));
        }
        self.connection(&order).await
    }

    /// An idle connection to one of `servers`, else a new one (waiting for a place while the
    /// user is at max_server_connections, up to the pool's queue_timeout).
    pub(super) async fn connection(&mut self, servers: &[usize]) -> Result<ServerConn, Vec<u8>> {
        let deadline = Instant::now() + self.pool_conf().queue_timeout;
        let mut place = Queued {
            sp: self.sp,
            user: self.user,
            ticket: 0,
        };
        loop {
            if self.sp.my_turn(place.user, place.ticket) {
                if let Some(r) = self.try_connection(servers).await {
                    return r;
                }
            }
            if Instant::now() >= deadline {
                self.counters.no_server.add(1);
                let u = &self.pc.users[self.user];
                return Err(err_payload(
                    ER_TOO_MANY_USER_CONNECTIONS,
                    b"42000",
                    &format!(
                        "shardgate: user '{}' has max_server_connections server connections in use",
                        u.name
                    ),
                ));
            }
            if place.ticket == 0 {
                place.ticket = self.sp.enqueue(place.user);
            }
            // The oldest waiter also looks every FULL_POLL (a connection closed on another
            // shard frees a place no put() here announces); the others sleep until their turn.
            let most = if self.sp.my_turn(place.user, place.ticket) {
                FULL_POLL
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            self.sp.wait_turn(place.ticket, most).await;
        }
    }

    /// An idle connection or a new one, when the user's bound allows (`None`: wait).
    pub(super) async fn try_connection(
        &mut self,
        servers: &[usize],
    ) -> Option<Result<ServerConn, Vec<u8>>> {
        let pool = self.pool_conf();
        let idle_ms = pool.idle_timeout.as_millis() as u64;
        {
            let key = pool::Key {
                user: self.user,
                caps: self.caps,
                charset: self.charset,
                schema: &self.schema,
            };
            while let Some(mut c) = self.sp.take(servers, &key, rt::now_ms(), idle_ms) {
                self.counters.pool_idle.set(self.sp.idle_count() as u64);
                if !c.alive() {
                    // Closed by the server while idle: dropped, the next one is tried.
                    continue;
                }
                if c.schema.as_deref() == Some(&self.schema[..]) {
                    self.counters.pool_reused.add(1);
                    return Some(Ok(c));
                }
                if self.schema.is_empty() {
                    let name = self.pc.users[self.user].name.as_bytes();
                    if c.drop_schema(name, self.sha1, pool.connect_timeout)
                        .await
                        .is_ok()
                    {
                        self.counters.pool_reused.add(1);
                        self.counters.pool_reset.add(1);
                        return Some(Ok(c));
                    }
                    continue;
                }
                let schema = self.schema.clone();
                match c.use_schema(&schema, pool.connect_timeout).await {
                    Ok(Ok(())) => {
                        self.counters.pool_reused.add(1);
                        return Some(Ok(c));
                    }
                    Ok(Err(p)) => {
                        self.put_idle(c);
                        return Some(Err(p));
                    }
                    // Closed while idle: try the next one.
                    Err(_) => {}
                }
            }
        }
        let max = self.pc.users[self.user].max_server_connections;
        if self.sp.try_place(self.user, max) {
            return Some(self.open(servers).await);
        }
        // At the bound, and nothing idle here fits this session (another character set,
        // capabilities or role): one that does not fit makes room.
        if self.sp.close_one_of(self.user) {
            self.counters.pool_idle.set(self.sp.idle_count() as u64);
            if self.sp.try_place(self.user, max) {
                return Some(self.open(servers).await);
            }
        }
        None
    }

    /// Log a new connection in (its place on the user's gauge is taken).
    pub(super) async fn open(&mut self, servers: &[usize]) -> Result<ServerConn, Vec<u8>> {
        let pool = self.pool_conf();
        // The place taken by try_place, given back if no server takes the login.
        let guard = GaugeGuard {
            user: self.sp.gauges[self.user].clone(),
            local: self.sp.local[self.user].clone(),
            open: self.counters_arc(),
        };
        let name = self.pc.users[self.user].name.as_bytes();
        self.counters.pool_server_conns.add(1);
        let want = Want {
            user_ix: self.user,
            user: name,
            sha1: self.sha1,
            caps: self.caps,
            charset: self.charset,
            schema: &self.schema,
        };
        for &ix in servers {
            let ss = self.server(ix);
            match ServerConn::open(ss.addr, ix, &want, pool.connect_timeout).await {
                Ok(mut c) => {
                    c.counted(guard);
                    self.counters.pool_opened.add(1);
                    if ss.mark_up() {
                        tracing::info!(event = "server_up", pool = %pool.name, server = %ss.name, "server up: connect succeeded");
                    }
                    return Ok(c);
                }
                Err(OpenError::Refused(p)) => return Err(p),
                Err(OpenError::Local) => {
                    return Err(err_payload(
                        ER_CON_COUNT_ERROR,
                        b"08004",
                        "Too many connections",
                    ))
                }
                Err(OpenError::Server(e)) => {
                    self.counters.connect_failures.add(1);
                    if ss.mark_down(rt::now_ms(), pool.down_time.as_millis() as u64) {
                        tracing::warn!(event = "server_down", pool = %pool.name, server = %ss.name, error = %e, down_for = ?pool.down_time, "mysql server down");
                    }
                }
            }
        }
        drop(guard);
        Err(err_payload(
            CR_CONN_HOST_ERROR,
            b"HY000",
            &format!(
                "shardgate: no server of pool '{}' can be reached",
                pool.name
            ),
        ))
    }

    pub(super) fn counters_arc(&self) -> std::sync::Arc<FrontCounters> {
        self.shard.shared.mysql_stats[self.shard.id()].front(&self.conf.name)
    }

    /// Back to the shard's pool (a tainted one is reset first).
    pub(super) async fn release(&mut self, conn: ServerConn) {
        if conn.tainted {
            return self.release_tainted(conn).await;
        }
        self.put_idle(conn);
    }

    pub(super) fn put_idle(&mut self, conn: ServerConn) {
        let pool = self.pool_conf();
        self.sp.put(conn, rt::now_ms(), pool.max_idle_per_server);
        // This shard's count: only this shard writes it.
        self.counters.pool_idle.set(self.sp.idle_count() as u64);
    }

    /// Reset a connection that carried session state (or may have: an open transaction is
    /// rolled back by the reset), then pool it; one that fails the reset closes.
    pub(super) async fn release_tainted(&mut self, mut conn: ServerConn) {
        let pool = self.pool_conf();
        if !conn.observer.idle() {
            return;
        }
        if conn.reset(pool.connect_timeout).await.is_ok() {
            self.counters.pool_reset.add(1);
            self.put_idle(conn);
        }
    }

    /// The session's server-side state ends (COM_RESET_CONNECTION, COM_CHANGE_USER, the
    /// client left): what it held is reset and pooled.
    pub(super) async fn drop_session_state(&mut self) {
        if let Some(h) = self.held.take() {
            if h.hold == Hold::Session {
                self.counters.pool_pinned.sub(1);
            }
            self.release_tainted(h.conn).await;
        }
        if let Some(c) = self.own_replica.take() {
            self.release_tainted(c).await;
        }
    }

    pub(super) async fn finish(&mut self) {
        self.drop_session_state().await;
    }
}
