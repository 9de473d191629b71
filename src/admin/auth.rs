//! Who is asking, and may they: HTTP Basic credentials checked against `[admin] users`
//! (argon2 PHC hashes), the CSRF token, and the process secret both rest on.
//!
//! - An argon2 verification costs tens of milliseconds and ~19 MiB on purpose, and the page
//!   polls every few seconds: a verified pair of credentials is remembered for
//!   [`CACHE_TTL`], keyed by a keyed hash (HMAC with the process secret) of `user:password`,
//!   never the password itself. An entry holds the hash it was verified against, so a reload
//!   that changes or removes the user ends it at once; the role is always read from the
//!   running config.
//! - Failed logins are throttled per client address: after [`MAX_FAILURES`] within
//!   [`FAILURE_WINDOW`] the address gets 429 without an argon2 run until the window ends.
//!   Verifications run one at a time, so guessing cannot take more than one core.
//! - An unknown user name costs a verification too (against a fixed hash), so the answer time
//!   does not tell which names exist.
//! - The CSRF token is HMAC(secret, user name), hex: the page embeds it, a state-changing
//!   request must send it back in a header. A cross-site page can neither read it nor compute
//!   it; it changes at every restart (a new secret).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::{Admin, AdminRole};

/// How long a verified `user:password` is trusted without another argon2 run.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Entries kept at most in the verification cache.
const CACHE_MAX: usize = 256;
/// Failed logins allowed per client address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses tracked at most for throttling.
const FAILURES_MAX: usize = 4096;

/// The identity a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// The user name; empty for the login-free loopback listener.
    pub user: String,
    pub role: AdminRole,
}

/// Why a request is not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No or wrong credentials: 401.
    Unauthorized,
    /// Too many failures from this address: 429, with the seconds to wait.
    Throttled(u64),
}

/// The per-process secret and the caches.
pub struct Auth {
    secret: [u8; 32],
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Held across each argon2 run: one at a time.
    verifying: Mutex<()>,
}

struct Cached {
    user: String,
    password_hash: String,
    until: Instant,
}

impl Auth {
    /// A fresh secret from the kernel's random source.
    pub fn new() -> std::io::Result<Auth> {
        Ok(Auth {
            secret: random()?,
            cache: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            verifying: Mutex::new(()),
        })
    }

    /// The identity of a request with this `Authorization` header value (if any), from
    /// `peer`, under the running `[admin]`.
    ///
    /// `loopback`: the listening socket the request came in on is bound to a loopback address.
    /// With no `users`, only such a socket lets requests in without a login: the config refuses
    /// a non-loopback `listen` without users, but `listen` is restart-only, so a reload can
    /// leave a socket bound to a public address under a config that has no users; that socket
    /// then lets nobody in.
    pub fn check(
        &self,
        admin: &Admin,
        authorization: Option<&[u8]>,
        peer: IpAddr,
        loopback: bool,
    ) -> Result<Who, Denied> {
        if admin.users.is_empty() {
            return if loopback {
                Ok(Who {
                    user: String::new(),
                    role: AdminRole::Admin,
                })
            } else {
                Err(Denied::Unauthorized)
            };
        }
        let (user, password) = authorization
            .and_then(parse_basic)
            .ok_or(Denied::Unauthorized)?;
        let key = hmac(&self.secret, format!("login\0{user}:{password}").as_bytes());
        let now = Instant::now();
        if let Some(who) = self.cached(admin, &key, now) {
            return Ok(who);
        }
        if let Some(wait) = self.throttled(peer, now) {
            return Err(Denied::Throttled(wait));
        }
        // Counted before the verification and forgiven after a success, so that logins
        // verified at once from one address cannot all pass the throttle check first.
        self.failed(peer, now);
        let found = admin.users.iter().find(|u| u.name == user);
        let ok = {
            let _one = self.verifying.lock().unwrap_or_else(|e| e.into_inner());
            let hash: &str = match found {
                Some(u) => &u.password_hash,
                None => dummy_hash(),
            };
            verify(&password, hash) && found.is_some()
        };
        match found {
            Some(u) if ok => {
                self.forgive(peer);
                self.remember(key, &u.name, &u.password_hash, now);
                Ok(Who {
                    user: u.name.clone(),
                    role: u.role,
                })
            }
            _ => {
                tracing::warn!(event = "admin_login_failed", user = %user.escape_debug(), peer = %peer, "admin login failed");
                Err(Denied::Unauthorized)
            }
        }
    }

    fn cached(&self, admin: &Admin, key: &[u8; 32], now: Instant) -> Option<Who> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let c = cache.get(key).filter(|c| c.until > now)?;
        let u = admin
            .users
            .iter()
            .find(|u| u.name == c.user && u.password_hash == c.password_hash)?;
        Some(Who {
            user: u.name.clone(),
            role: u.role,
        })
    }

    fn remember(&self, key: [u8; 32], user: &str, hash: &str, now: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                user: user.to_owned(),
                password_hash: hash.to_owned(),
                until: now + CACHE_TTL,
            },
        );
    }

    /// Seconds left to wait, if `peer` failed too often lately.
    fn throttled(&self, peer: IpAddr, now: Instant) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (n, since) = failures.get(&peer)?;
        let end = *since + FAILURE_WINDOW;
        (*n >= MAX_FAILURES && end > now).then(|| end.duration_since(now).as_secs().max(1))
    }

    fn failed(&self, peer: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= FAILURES_MAX {
            failures.retain(|_, (_, since)| *since + FAILURE_WINDOW > now);
            if failures.len() >= FAILURES_MAX {
                failures.clear();
            }
        }
        let e = failures.entry(peer).or_insert((0, now));
        if e.1 + FAILURE_WINDOW <= now {
            *e = (0, now);
        }
        e.0 += 1;
    }

    /// Take back the failure counted before a verification that succeeded.
    fn forgive(&self, peer: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = failures.get_mut(&peer) {
            e.0 = e.0.saturating_sub(1);
        }
    }

    /// The CSRF token of `user` (hex HMAC with the process secret).
    pub fn csrf_token(&self, user: &str) -> String {
        hex(&hmac(&self.secret, format!("csrf\0{user}").as_bytes()))
    }

    /// Does `token` match `user`'s token (compared in constant time)?
    pub fn csrf_ok(&self, user: &str, token: &[u8]) -> bool {
        let want = self.csrf_token(user);
        want.len() == token.len()
            && want
                .bytes()
                .zip(token)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// `Basic BASE64(user:password)` to its two parts.
pub fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, creds) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64_decode(creds.trim())?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

fn verify(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A valid hash of a password nobody knows, verified against for unknown user names so that
/// they cost the same time as known ones.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let pw: [u8; 16] = random().unwrap_or([7; 16]);
        hash_password_bytes(&pw).unwrap_or_default()
    })
}

/// An argon2id PHC string for `password` (default parameters, random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    if password.is_empty() {
        return Err("empty password".into());
    }
    hash_password_bytes(password.as_bytes())
}

fn hash_password_bytes(password: &[u8]) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash: {e}"))
}

/// `N` bytes from the kernel's random source.
pub fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: getrandom(2) writes at most the given length into our buffer.
        let n = unsafe { libc::getrandom(out[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        filled += n as usize;
    }
    Ok(out)
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

/// Standard base64 (padding optional); `None` on anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 || s.len() > 4096 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdminUser;

    #[test]
    fn hmac_matches_rfc4231() {
        // RFC 4231 test case 2.
        let mac = hmac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn basic_credentials_parse() {
        assert_eq!(
            parse_basic(b"Basic b3BzOnMzY3I6ZXQ="),
            Some(("ops".into(), "s3cr:et".into()))
        );
        assert_eq!(
            parse_basic(b"basic b3BzOng"),
            Some(("ops".into(), "x".into()))
        );
        assert_eq!(parse_basic(b"Bearer abc"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
    }

    #[test]
    fn logins_are_verified_cached_and_throttled() {
        let auth = Auth::new().unwrap();
        let admin = Admin {
            listen: "127.0.0.1:1".parse().unwrap(),
            users: vec![AdminUser {
                name: "ops".into(),
                password_hash: hash_password("pw").unwrap(),
                role: AdminRole::Read,
            }],
        };
        let basic = |u: &str, p: &str| format!("Basic {}", b64(format!("{u}:{p}").as_bytes()));
        let peer: IpAddr = "127.0.0.9".parse().unwrap();
        let ok = auth.check(&admin, Some(basic("ops", "pw").as_bytes()), peer, false);
        assert_eq!(ok.map(|w| w.role), Ok(AdminRole::Read));
        // Remembered: the next request with the same credentials is not verified again.
        let key = hmac(&auth.secret, b"login\0ops:pw");
        assert!(auth.cached(&admin, &key, Instant::now()).is_some());
        assert!(auth
            .check(&admin, Some(basic("ops", "pw").as_bytes()), peer, false)
            .is_ok());
        assert_eq!(
            auth.check(&admin, None, peer, false),
            Err(Denied::Unauthorized)
        );
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                auth.check(&admin, Some(basic("ops", "no").as_bytes()), peer, false),
                Err(Denied::Unauthorized)
            );
        }
        assert!(matches!(
            auth.check(&admin, Some(basic("ops", "no").as_bytes()), peer, false),
            Err(Denied::Throttled(_))
        ));
        // A changed hash (reload) ends the cached login.
        let mut changed = admin.clone();
        changed.users[0].password_hash = hash_password("other").unwrap();
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        assert_eq!(
            auth.check(&changed, Some(basic("ops", "pw").as_bytes()), other, false),
            Err(Denied::Unauthorized)
        );
        // No users: only a socket bound to loopback lets requests in, as an admin.
        let open = Admin {
            users: Vec::new(),
            ..admin.clone()
        };
        assert_eq!(
            auth.check(&open, None, peer, true).map(|w| w.role),
            Ok(AdminRole::Admin)
        );
        assert_eq!(
            auth.check(&open, None, peer, false),
            Err(Denied::Unauthorized)
        );
        assert!(auth.csrf_ok("ops", auth.csrf_token("ops").as_bytes()));
        assert!(!auth.csrf_ok("ops", auth.csrf_token("other").as_bytes()));
        assert!(!auth.csrf_ok("ops", b""));
    }

    fn b64(data: &[u8]) -> String {
        const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in data.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                out.push(if i <= c.len() {
                    ABC[(n >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        out
    }
}
