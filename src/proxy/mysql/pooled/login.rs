//! Logging in (shardgate's greeting, the client's answer checked against `[[mysql.user]]`, the
//! schema checked on a server connection) and the commands that change who the session is or
//! what it holds: `COM_CHANGE_USER` and `COM_RESET_CONNECTION`.

use super::*;

impl<'a> Session<'a> {
    /// The connection phase; true once the client is logged in (and counted on its user).
    pub(super) async fn login(&mut self) -> bool {
        self.login_steps().await.is_some()
    }

    pub(super) async fn login_steps(&mut self) -> Option<()> {
        let id = self.sp.connection_id();
        let version = self.sp.version.borrow().clone();
        let hello = auth::greeting(&version, id, &self.scramble);
        self.send_client(packet(0, &hello)).await.ok()?;
        let pkt = self.client_packet(false).await.ok()?;
        self.acct.bytes_in(pkt.len());
        let Some(login) = auth::parse_login(&pkt[HEADER_LEN..]) else {
            let p = err_payload(ER_HANDSHAKE_ERROR, b"08S01", "Bad handshake");
            let _ = self.send_err(2, &p).await;
            return None;
        };
        let user_name = login.user.to_vec();
        let schema = login.schema.map(<[u8]>::to_vec).unwrap_or_default();
        let (caps, charset) = (login.caps & TERMINATING_CAPS, login.charset);
        let mut answer = login.answer.to_vec();
        let mut seq = pkt[3].wrapping_add(1);
        if login.plugin.is_some_and(|p| p != auth::NATIVE) {
            // A client that speaks another plugin first (caching_sha2_password): ask for
            // mysql_native_password with the same scramble.
            self.send_client(packet(seq, &auth::auth_switch(&self.scramble)))
                .await
                .ok()?;
            let p = self.client_packet(false).await.ok()?;
            self.acct.bytes_in(p.len());
            answer = p[HEADER_LEN..].to_vec();
            seq = p[3].wrapping_add(1);
        }
        self.acct.login(&user_name);
        self.digests.on_event(
            &Event::Login {
                user: &user_name,
                schema: Some(&schema[..]).filter(|s| !s.is_empty()),
            },
            &user_name,
            None,
        );
        let Some((user, sha1)) = self.check_password(&user_name, &answer) else {
            self.acct.login_failed();
            self.counters.login_failed.add(1);
            let p = self.denied(&user_name, !answer.is_empty());
            let _ = self.send_err(seq, &p).await;
            return None;
        };
        let gauge = &*self.sp.gauges[user];
        if !UserGauge::try_add(&gauge.clients, self.pc.users[user].max_connections) {
            self.counters.refused_limit.add(1);
            let msg = format!(
                "User {} already has more than 'max_user_connections' active connections",
                String::from_utf8_lossy(&user_name)
            );
            let p = err_payload(ER_TOO_MANY_USER_CONNECTIONS, b"42000", &msg);
            let _ = self.send_err(seq, &p).await;
            return None;
        }
        self.client_gauge = Some(ClientGauge(gauge));
        (self.user, self.sha1, self.caps, self.charset) = (user, sha1, caps, charset);
        if !schema.is_empty() {
            // The schema is the server's to accept: check it on a connection now, as a
            // server would at login.
            self.schema = schema;
            match self.acquire(false).await {
                Ok(conn) => self.release(conn).await,
                Err(p) => {
                    let _ = self.send_err(seq, &p).await;
                    return None;
                }
            }
        }
        self.acct.authenticated();
        let ok = auth::ok_payload(status::AUTOCOMMIT);
        self.send_client(packet(seq, &ok)).await.ok()?;
        Some(())
    }

    /// The user's index and `SHA1(password)` when `answer` is right for our scramble.
    pub(super) fn check_password(
        &self,
        user: &[u8],
        answer: &[u8],
    ) -> Option<(usize, Option<[u8; 20]>)> {
        let ix = self
            .pc
            .users
            .iter()
            .position(|u| u.name.as_bytes() == user)?;
        let u = &self.pc.users[ix];
        if u.empty {
            return answer.is_empty().then_some((ix, None));
        }
        let h1 = auth::verify(answer, &self.scramble, &u.stored)?;
        Some((ix, Some(h1)))
    }

    pub(super) fn denied(&self, user: &[u8], with_password: bool) -> Vec<u8> {
        let msg = format!(
            "Access denied for user '{}'@'{}' (using password: {})",
            String::from_utf8_lossy(user),
            self.peer.ip(),
            if with_password { "YES" } else { "NO" }
        );
        err_payload(ER_ACCESS_DENIED, b"28000", &msg)
    }

    pub(super) async fn reset_connection(&mut self) -> Result<(), End> {
        // The server side of the session: whatever it held is reset on its way to the pool.
        self.drop_session_state().await;
        self.no_replica = false;
        self.digests.on_event(
            &Event::Reply {
                cmd: com::RESET_CONNECTION,
                ok: true,
                elapsed: 0,
                detail: Default::default(),
            },
            self.acct.user(),
            None,
        );
        self.local_ok(com::RESET_CONNECTION).await
    }

    pub(super) async fn change_user(&mut self, pkt: &[u8]) -> Result<(), End> {
        self.acct.command(com::CHANGE_USER);
        let Some(cu) = auth::parse_change_user(&pkt[HEADER_LEN + 1..], self.caps) else {
            let p = err_payload(ER_HANDSHAKE_ERROR, b"08S01", "Bad COM_CHANGE_USER");
            self.send_err(1, &p).await?;
            return Err(End::Client);
        };
        let (name, schema, charset) = (
            cu.user.to_vec(),
            cu.schema.map(<[u8]>::to_vec).unwrap_or_default(),
            cu.charset,
        );
        let mut answer = cu.answer.to_vec();
        let mut seq = 2;
        if cu.plugin.is_some_and(|p| p != auth::NATIVE) {
            self.send_client(packet(1, &auth::auth_switch(&self.scramble)))
                .await?;
            let p = self.client_packet(false).await?;
            self.acct.bytes_in(p.len());
            answer = p[HEADER_LEN..].to_vec();
            seq = p[3].wrapping_add(1);
        } else {
            seq -= 1;
        }
        // Whatever the outcome, the old session's state is gone.
        self.drop_session_state().await;
        let Some((user, sha1)) = self.check_password(&name, &answer) else {
            self.counters.login_failed.add(1);
            self.acct.reply(self.stats, false, 0);
            let p = self.denied(&name, !answer.is_empty());
            self.send_err(seq, &p).await?;
            // A server closes the connection after a failed COM_CHANGE_USER.
            return Err(End::Client);
        };
        let gauge = &*self.sp.gauges[user];
        if user != self.user {
            if !UserGauge::try_add(&gauge.clients, self.pc.users[user].max_connections) {
                let p = err_payload(
                    ER_TOO_MANY_USER_CONNECTIONS,
                    b"42000",
                    "the user already has max_connections client connections",
                );
                self.send_err(seq, &p).await?;
                return Err(End::Client);
            }
            // The old user's count goes down as its guard is replaced.
            self.client_gauge = Some(ClientGauge(gauge));
        }
        (self.user, self.sha1) = (user, sha1);
        if let Some(c) = charset {
            self.charset = c;
        }
        self.schema = schema;
        self.last_gtid = None;
        self.no_replica = false;
        self.acct.reply(self.stats, true, 0);
        self.acct.change_user(self.stats, &name);
        self.digests.on_event(
            &Event::UserChanged {
                user: &name,
                schema: Some(&self.schema[..]).filter(|s| !s.is_empty()),
            },
            &name,
            None,
        );
        if !self.schema.is_empty() {
            match self.acquire(false).await {
                Ok(conn) => self.release(conn).await,
                Err(p) => {
                    self.send_err(seq, &p).await?;
                    return Err(End::Client);
                }
            }
        }
        let ok = auth::ok_payload(status::AUTOCOMMIT);
        self.send_client(packet(seq, &ok)).await.map(drop)
    }
}
