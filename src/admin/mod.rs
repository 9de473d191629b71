//! The admin listener (`[admin]`): a web page showing frontends, sites, pools and servers
//! live, the JSON it reads (`/api/state`), the server actions (enable, disable, drain, weight)
//! and the Prometheus `/metrics`.
//!
//! It runs off the shards, like the command socket: one acceptor thread and one plain thread
//! per client (at most [`MAX_CLIENTS`] at once; the next gets 503), blocking std sockets, one
//! bounded request per connection ([`http`]). A sampler thread keeps the request-rate history
//! ([`state`]). Nothing here is on the request path of the proxy.
//!
//! Security (see `docs/admin.md`): every request's `Host` must name the listener itself (an
//! IP literal of the address it arrived on, or `localhost`), which defeats DNS rebinding; then
//! HTTP Basic auth against the argon2 hashes ([`auth`]; none on a loopback listener without
//! users). A state-changing request must be a `POST` of `application/json` (a type a browser
//! will not send cross-site without a CORS preflight, which is never granted), carry an
//! `Origin` (or `Referer`) of this listener, and the CSRF token the page embeds, and come from
//! a user with the `admin` role. Actions run through the command table
//! ([`crate::control::run_words`]), so they do exactly what `shardgate ctl` does.

pub(crate) mod auth;
mod http;
mod state;

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::AdminRole;
use crate::proto::http::Method;
use crate::shared::Shared;
use auth::{Auth, Denied, Who};
use http::{Request, Response};

pub use auth::hash_password;

/// Clients served at once; the next gets 503 and is closed.
pub const MAX_CLIENTS: usize = 16;
/// Stack of a client thread.
const CLIENT_STACK: usize = 256 << 10;
/// The page, its style and script: all in the binary.
const PAGE: &str = include_str!("page.html");
/// The header that carries the CSRF token.
const CSRF_HEADER: &str = "x-csrf-token";

/// Bind the admin listener of the config, if it has one. Bound with `SO_REUSEPORT` so that
/// the new process of a binary upgrade can bind it while the old one still serves.
pub fn bind(config: &crate::config::Config) -> io::Result<Option<TcpListener>> {
    let Some(a) = &config.admin else {
        return Ok(None);
    };
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(a.listen), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if a.listen.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&a.listen.into())?;
    sock.listen(64)?;
    Ok(Some(sock.into()))
}

/// What every client thread shares.
struct Ctx {
    shared: Arc<Shared>,
    auth: Auth,
    history: Arc<state::History>,
}

/// Start the acceptor and the sampler threads.
pub fn start(listener: TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    let history = Arc::new(state::History::default());
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        auth: Auth::new()?,
        history: history.clone(),
    });
    std::thread::Builder::new()
        .name("admin-sampler".into())
        .spawn(move || state::run_sampler(shared, history))?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || serve(listener, ctx))?;
    Ok(())
}

/// Decrements the count of clients served when a client thread ends (or never starts).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accept until the daemon stops. Stopping closes the listener at once: after a binary
/// upgrade the new process (bound to the same address, `SO_REUSEPORT`) answers alone, so no
/// action lands on the old process's state.
fn serve(listener: TcpListener, ctx: Arc<Ctx>) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        if ctx.shared.life.stopping.load(Ordering::SeqCst) {
            tracing::info!(
                event = "admin_closed",
                "admin listener closed: the daemon is stopping"
            );
            return;
        }
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the listener we own.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        let (conn, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("admin accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= MAX_CLIENTS {
            let _ = conn.set_nonblocking(true);
            let _ = http::write_response(&conn, &Response::text(503, "too many admin clients"));
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(active.clone());
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("admin-client".into())
            .stack_size(CLIENT_STACK)
            .spawn(move || {
                let _slot = slot;
                serve_client(&ctx, conn, peer);
            });
        if let Err(e) = spawned {
            tracing::warn!(
                event = "admin_thread_failed",
                "cannot start an admin client thread: {e}"
            );
        }
    }
}

fn serve_client(ctx: &Ctx, conn: TcpStream, peer: SocketAddr) {
    let response = match http::read_request(&conn) {
        Ok(req) => {
            let local = conn.local_addr().ok();
            answer(ctx, &req, peer.ip(), local)
        }
        Err(bad) => {
            tracing::debug!(peer = %peer, "admin request refused: {}", bad.why);
            match bad.status {
                Some(s) => Response::text(s, bad.why),
                None => return,
            }
        }
    };
    if let Err(e) = http::write_response(&conn, &response) {
        tracing::debug!(peer = %peer, "admin client did not take its answer: {e}");
    }
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

/// The answer to one request, after every check.
fn answer(ctx: &Ctx, req: &Request, peer: IpAddr, local: Option<SocketAddr>) -> Response {
    let gen = ctx.shared.current();
    let Some(admin) = &gen.config.admin else {
        return Response::text(503, "the admin listener is not configured any more");
    };
    let Some(host) = req.header_str("host").filter(|h| host_ok(h, local)) else {
        return Response::text(
            421,
            "the Host header does not name this listener (use its IP address or localhost)",
        );
    };
    if req.method == Method::Options {
        // Never a CORS grant: a cross-site preflight fails here.
        return Response::text(405, "method not allowed").with("Allow", "GET, POST");
    }
    let loopback = local.is_some_and(|a| a.ip().is_loopback());
    let who = match ctx
        .auth
        .check(admin, req.header("authorization"), peer, loopback)
    {
        Ok(w) => w,
        Err(Denied::Unauthorized) => {
            return Response::text(401, "login required").with(
                "WWW-Authenticate",
                "Basic realm=\"shardgate admin\", charset=\"UTF-8\"",
            )
        }
        Err(Denied::Throttled(wait)) => {
            return Response::text(429, "too many failed logins; wait")
                .with("Retry-After", wait.to_string())
        }
    };
    match (req.method, req.path.as_str()) {
        (Method::Get, "/") => page(ctx, &who),
        (Method::Get, "/metrics") => metrics(ctx, req),
        (Method::Get, "/api/state") => Response::json(
            200,
            &state::state(&ctx.shared, &ctx.history, &who.user, who.role.as_str()),
        ),
        (Method::Post, "/api/server") => match action_allowed(ctx, req, &who, host) {
            Ok(()) => server_action(ctx, req, &who),
            Err(r) => r,
        },
        (_, "/" | "/metrics" | "/api/state" | "/api/server") => {
            Response::text(405, "method not allowed").with("Allow", "GET, POST")
        }
        _ => Response::text(404, "not found"),
    }
}

/// Does `host` (the Host header) name this listener: the IP literal of the address the
/// connection arrived on, or `localhost`, with the listener's port (or none for port 80)?
fn host_ok(host: &str, local: Option<SocketAddr>) -> bool {
    let Some(local) = local else {
        return false;
    };
    let port = local.port();
    let (name, p) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(':') && (n.starts_with('[') || !n.contains(':')) => {
            (n, p.parse::<u16>().ok())
        }
        _ => (host, None),
    };
    if p.map_or(port != 80, |p| p != port) {
        return false;
    }
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    if name.eq_ignore_ascii_case("localhost") {
        return local.ip().is_loopback();
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip == local.ip())
}

/// The checks a state-changing request must pass, in order: role, origin, CSRF token,
/// content type.
fn action_allowed(ctx: &Ctx, req: &Request, who: &Who, host: &str) -> Result<(), Response> {
    let deny = |status: u16, why: &str| {
        tracing::warn!(event = "admin_action_refused", user = %who.user, why, "admin action refused");
        Response::json(status, &json!({ "ok": false, "error": why }))
    };
    if who.role != AdminRole::Admin {
        return Err(deny(403, "your role is read: actions need the admin role"));
    }
    let own = format!("http://{host}");
    let same_origin = match (req.header_str("origin"), req.header_str("referer")) {
        (Some(o), _) => o.eq_ignore_ascii_case(&own),
        (None, Some(r)) => r
            .get(..own.len() + 1)
            .is_some_and(|p| p.eq_ignore_ascii_case(&format!("{own}/"))),
        (None, None) => false,
    };
    if !same_origin {
        return Err(deny(
            403,
            "cross-origin request refused (Origin must be this listener)",
        ));
    }
    let token = req.header(CSRF_HEADER).unwrap_or_default();
    if !ctx.auth.csrf_ok(&who.user, token) {
        return Err(deny(403, "missing or wrong CSRF token"));
    }
    let json_body = req
        .header_str("content-type")
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return Err(deny(
            415,
            "actions take a JSON body (Content-Type: application/json)",
        ));
    }
    Ok(())
}

/// `POST /api/server` `{"pool", "server", "action": enable|disable|drain|weight, "weight"}`.
fn server_action(ctx: &Ctx, req: &Request, who: &Who) -> Response {
    let bad = |why: String| Response::json(400, &json!({ "ok": false, "error": why }));
    let v: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return bad(format!("body is not JSON: {e}")),
    };
    let name = |k: &str| -> Result<String, String> {
        let s = v[k]
            .as_str()
            .ok_or_else(|| format!("\"{k}\": expected a string"))?;
        if s.is_empty() || s.contains('/') || s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("\"{k}\": {s:?} is not a name"));
        }
        Ok(s.to_owned())
    };
    let target = match (name("pool"), name("server")) {
        (Ok(p), Ok(s)) => format!("{p}/{s}"),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let weight;
    let words: Vec<&str> = match v["action"].as_str() {
        Some("enable") => vec!["enable", "server", &target],
        Some("disable") => vec!["disable", "server", &target],
        Some("drain") => vec!["set", "server", &target, "state", "drain"],
        Some("weight") => match v["weight"].as_u64() {
            Some(w) => {
                weight = w.to_string();
                vec!["set", "server", &target, "weight", &weight]
            }
            None => return bad("\"weight\": expected an integer 0-1000".into()),
        },
        _ => return bad("\"action\": expected enable, disable, drain or weight".into()),
    };
    let (answer, _) = crate::control::run_words(&ctx.shared, &words);
    let answer = answer.trim_end().to_owned();
    tracing::info!(event = "admin_action", user = %who.user, command = %words.join(" "), answer = %answer, "admin action");
    match answer.strip_prefix("error: ") {
        Some(e) => Response::json(400, &json!({ "ok": false, "error": e })),
        None => Response::json(200, &json!({ "ok": true, "answer": answer })),
    }
}

/// `GET /metrics`: OpenMetrics when the scraper asks for it, else Prometheus text 0.0.4.
fn metrics(ctx: &Ctx, req: &Request) -> Response {
    let open = req
        .header_str("accept")
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let body = crate::metrics::render(&ctx.shared, open);
    let ct = if open {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    Response::new(200, ct, body)
}

/// `GET /`: the page, with a fresh nonce for its inline style and script and the user's CSRF
/// token.
fn page(ctx: &Ctx, who: &Who) -> Response {
    let nonce = match auth::random::<16>() {
        Ok(b) => auth::hex(&b),
        Err(e) => return Response::text(503, &format!("no random bytes: {e}")),
    };
    let body = PAGE
        .replace("{{NONCE}}", &nonce)
        .replace("{{CSRF}}", &ctx.auth.csrf_token(&who.user))
        .replace(
            "{{USER}}",
            &html_escape(if who.user.is_empty() {
                "(no login)"
            } else {
                &who.user
            }),
        )
        .replace("{{ROLE}}", who.role.as_str());
    Response::new(200, "text/html; charset=utf-8", body).with(
        "Content-Security-Policy",
        format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        ),
    )
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::host_ok;

    #[test]
    fn hosts_must_name_the_listener() {
        let v4 = Some("127.0.0.1:9900".parse().unwrap());
        let v6 = Some("[::1]:9900".parse().unwrap());
        let lan = Some("192.0.2.5:9900".parse().unwrap());
        assert!(host_ok("127.0.0.1:9900", v4));
        assert!(host_ok("localhost:9900", v4));
        assert!(host_ok("LOCALHOST:9900", v4));
        assert!(host_ok("[::1]:9900", v6));
        assert!(host_ok("192.0.2.5:9900", lan));
        assert!(
            !host_ok("localhost:9900", lan),
            "localhost is not a LAN address"
        );
        assert!(!host_ok("evil.example:9900", v4), "DNS rebinding");
        assert!(!host_ok("127.0.0.1:9901", v4));
        assert!(!host_ok("127.0.0.1", v4));
        assert!(!host_ok("127.0.0.2:9900", v4));
        assert!(!host_ok("", v4));
        assert!(host_ok("127.0.0.1", Some("127.0.0.1:80".parse().unwrap())));
    }
}
