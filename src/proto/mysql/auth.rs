//! Logging in with `mysql_native_password`, from both ends: shardgate as a server (its own
//! greeting, checking a client's answer against a stored hash) and as a client (the health
//! check, and server connections of a terminating frontend).
//!
//! ```text
//! stored  = SHA1(SHA1(password))                 what MariaDB keeps in mysql.user
//! answer  = SHA1(password) XOR SHA1(scramble + stored)
//! check:    SHA1(answer XOR SHA1(scramble + stored)) == stored
//! ```
//! The check recovers `SHA1(password)`, which is enough to answer any other scramble: that
//! is how a terminating proxy logs its server connections in without knowing the password.

use sha1::{Digest, Sha1};

use super::handshake;
use super::packet::{lenenc, nul_str};
use super::{caps, status};

pub const NATIVE: &[u8] = b"mysql_native_password";
/// utf8mb4_general_ci, MariaDB 10.11's default.
pub const UTF8MB4_GENERAL_CI: u8 = 45;

pub fn sha1(data: &[u8]) -> [u8; 20] {
    Sha1::digest(data).into()
}

/// `SHA1(scramble + stored)`.
fn mask(scramble: &[u8], stored: &[u8; 20]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(stored);
    h.finalize().into()
}

/// The answer to `scramble` for a password whose `SHA1` is `h1`.
pub fn answer_from_sha1(h1: &[u8; 20], scramble: &[u8]) -> [u8; 20] {
    let m = mask(scramble, &sha1(h1));
    std::array::from_fn(|i| h1[i] ^ m[i])
}

/// mysql_native_password: `SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))`; empty for no password.
pub fn native_password(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    answer_from_sha1(&sha1(password), nonce).to_vec()
}

/// Check a client's answer to `scramble` against the stored hash; on success returns
/// `SHA1(password)`.
pub fn verify(answer: &[u8], scramble: &[u8], stored: &[u8; 20]) -> Option<[u8; 20]> {
    let answer: &[u8; 20] = answer.try_into().ok()?;
    let m = mask(scramble, stored);
    let h1: [u8; 20] = std::array::from_fn(|i| answer[i] ^ m[i]);
    // Not constant-time: the attacker does not control the stored side, and each try costs a
    // fresh scramble (a new connection).
    (sha1(&h1) == *stored).then_some(h1)
}

/// `*` and 40 hex digits (MariaDB's `PASSWORD()` form) → the 20 bytes.
pub fn parse_stored_hash(s: &str) -> Option<[u8; 20]> {
    let hex = s.strip_prefix('*')?.as_bytes();
    if hex.len() != 40 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 20];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// A scramble for a greeting: 20 random bytes in 0x21..=0x7E (no NUL, as servers send).
pub fn new_scramble() -> [u8; 20] {
    let mut raw = [0u8; 20];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).is_err() {
        // No system randomness at all: a unique-enough fallback beats refusing every login,
        // and the scramble only has to be fresh, not secret.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        raw = sha1(&t.to_le_bytes());
    }
    raw.map(|b| 0x21 + b % 94)
}

/// Capabilities shardgate offers when it terminates the protocol: no TLS, no compression,
/// no MariaDB extended capabilities (CLIENT_MYSQL set), no query attributes.
pub const TERMINATING_CAPS: u64 = caps::CLIENT_MYSQL
    | 1 << 1 // FOUND_ROWS
    | 1 << 2 // LONG_FLAG
    | caps::CONNECT_WITH_DB
    | 1 << 4 // NO_SCHEMA
    | 1 << 6 // ODBC
    | caps::LOCAL_FILES
    | 1 << 8 // IGNORE_SPACE
    | caps::PROTOCOL_41
    | 1 << 10 // INTERACTIVE
    | 1 << 12 // IGNORE_SIGPIPE
    | 1 << 13 // TRANSACTIONS
    | caps::SECURE_CONNECTION
    | caps::MULTI_STATEMENTS
    | caps::MULTI_RESULTS
    | 1 << 18 // PS_MULTI_RESULTS
    | caps::PLUGIN_AUTH
    | caps::CONNECT_ATTRS
    | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | caps::SESSION_TRACK
    | caps::DEPRECATE_EOF;

/// Capabilities that change what a server connection does or sends, so a pooled server
/// connection serves only clients that asked for the same set.
pub const SESSION_CAPS: u64 = 1 << 1 // FOUND_ROWS
    | 1 << 2
    | 1 << 4
    | 1 << 6
    | caps::LOCAL_FILES
    | 1 << 8
    | 1 << 10
    | caps::MULTI_STATEMENTS
    | caps::MULTI_RESULTS
    | 1 << 18
    | caps::SESSION_TRACK
    | caps::DEPRECATE_EOF;

/// A greeting payload: protocol 10, `version`, connection id, scramble, [`TERMINATING_CAPS`].
pub fn greeting(version: &[u8], connection_id: u32, scramble: &[u8; 20]) -> Vec<u8> {
    let c = TERMINATING_CAPS;
    let mut p = Vec::with_capacity(96 + version.len());
    p.push(10);
    p.extend_from_slice(version);
    p.push(0);
    p.extend_from_slice(&connection_id.to_le_bytes());
    p.extend_from_slice(&scramble[..8]);
    p.push(0);
    p.extend_from_slice(&(c as u16).to_le_bytes());
    p.push(UTF8MB4_GENERAL_CI);
    p.extend_from_slice(&status::AUTOCOMMIT.to_le_bytes());
    p.extend_from_slice(&((c >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(&scramble[8..]);
    p.push(0);
    p.extend_from_slice(NATIVE);
    p.push(0);
    p
}

/// An AuthSwitchRequest to mysql_native_password with `scramble`.
pub fn auth_switch(scramble: &[u8; 20]) -> Vec<u8> {
    let mut p = Vec::with_capacity(48);
    p.push(0xFE);
    p.extend_from_slice(NATIVE);
    p.push(0);
    p.extend_from_slice(scramble);
    p.push(0);
    p
}

/// An OK payload: no rows, no insert id, `status`, no warnings.
pub fn ok_payload(status: u16) -> Vec<u8> {
    let mut p = vec![0, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    p
}

/// Everything of a HandshakeResponse41 a terminating proxy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login<'a> {
    pub caps: u64,
    pub charset: u8,
    pub user: &'a [u8],
    pub answer: &'a [u8],
    pub schema: Option<&'a [u8]>,
    /// The plugin the answer is for (`None`: not named; native is assumed).
    pub plugin: Option<&'a [u8]>,
}

/// Parse a whole HandshakeResponse41 payload. `None` for an SSLRequest, a pre-4.1 client,
/// or a packet that ends inside a field.
pub fn parse_login(p: &[u8]) -> Option<Login<'_>> {
    let r = handshake::parse_response(p, p.len() as u64).ok()?;
    if r.ssl_request {
        return None;
    }
    let c = r.caps;
    let charset = *p.get(8)?;
    let rest = p.get(32..)?;
    let (user, n) = nul_str(rest)?;
    let rest = &rest[n..];
    let (answer, rest) = if c & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        let (len, n) = lenenc(rest)?;
        let end = n.checked_add(usize::try_from(len).ok()?)?;
        (rest.get(n..end)?, rest.get(end..)?)
    } else if c & caps::SECURE_CONNECTION != 0 {
        let len = *rest.first()? as usize;
        (rest.get(1..1 + len)?, rest.get(1 + len..)?)
    } else {
        let (a, n) = nul_str(rest)?;
        (a, &rest[n..])
    };
    let (schema, rest) = if c & caps::CONNECT_WITH_DB != 0 {
        match nul_str(rest) {
            Some((s, n)) => (Some(s), &rest[n..]),
            None => (None, &[][..]),
        }
    } else {
        (None, rest)
    };
    let plugin = if c & caps::PLUGIN_AUTH != 0 {
        nul_str(rest).map(|(s, _)| s)
    } else {
        None
    };
    Some(Login {
        caps: c,
        charset,
        user,
        answer,
        schema: schema.filter(|s| !s.is_empty()),
        plugin,
    })
}

/// The parts of a COM_CHANGE_USER payload (after the command byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeUser<'a> {
    pub user: &'a [u8],
    pub answer: &'a [u8],
    pub schema: Option<&'a [u8]>,
    pub charset: Option<u8>,
    pub plugin: Option<&'a [u8]>,
}

pub fn parse_change_user(p: &[u8], client_caps: u64) -> Option<ChangeUser<'_>> {
    let (user, n) = nul_str(p)?;
    let rest = &p[n..];
    let (answer, rest) = if client_caps & caps::SECURE_CONNECTION != 0 {
        let len = *rest.first()? as usize;
        (rest.get(1..1 + len)?, rest.get(1 + len..)?)
    } else {
        let (a, n) = nul_str(rest)?;
        (a, &rest[n..])
    };
    let (schema, n) = nul_str(rest)?;
    let rest = &rest[n..];
    let (charset, rest) = match rest.get(..2) {
        Some(c) => (Some(c[0]), &rest[2..]),
        None => (None, rest),
    };
    let plugin = if client_caps & caps::PLUGIN_AUTH != 0 {
        nul_str(rest).map(|(s, _)| s)
    } else {
        None
    };
    Some(ChangeUser {
        user,
        answer,
        schema: Some(schema).filter(|s| !s.is_empty()),
        charset,
        plugin,
    })
}

/// From a greeting payload: the server's capabilities, the 20-byte nonce and the default auth
/// plugin (`mysql_native_password` when the server names none).
pub fn greeting_auth(p: &[u8]) -> Result<(u64, Vec<u8>, Vec<u8>), String> {
    let g = handshake::parse_greeting(p).map_err(|e| e.to_string())?;
    // 0x0A, version NUL, id(4), then scramble part 1 (8), filler (1).
    let part1_at = g.version.1 + 1 + 4;
    let part1 = p
        .get(part1_at..part1_at + 8)
        .ok_or("greeting truncated before its scramble")?;
    let mut nonce = part1.to_vec();
    // caps_lo(2) charset(1) status(2) caps_hi(2) auth_len(1) reserved(10)
    let auth_len_at = part1_at + 8 + 1 + 2 + 1 + 2 + 2;
    let mut plugin = NATIVE.to_vec();
    if g.caps & caps::SECURE_CONNECTION != 0 {
        let auth_len = *p.get(auth_len_at).unwrap_or(&0) as usize;
        let part2_at = auth_len_at + 1 + 10;
        let part2_len = auth_len.saturating_sub(8).max(13);
        let part2 = p
            .get(part2_at..(part2_at + part2_len).min(p.len()))
            .ok_or("greeting truncated in its scramble")?;
        nonce.extend_from_slice(part2.strip_suffix(&[0]).unwrap_or(part2));
        if g.caps & caps::PLUGIN_AUTH != 0 {
            if let Some((name, _)) = p.get(part2_at + part2_len..).and_then(nul_str) {
                if !name.is_empty() {
                    plugin = name.to_vec();
                }
            }
        }
    }
    Ok((g.caps, nonce, plugin))
}

/// What a HandshakeResponse41 written by shardgate as a client says.
pub struct Hello<'a> {
    /// Capabilities wanted; only those the server offers are sent.
    pub caps: u64,
    pub charset: u8,
    pub user: &'a [u8],
    pub answer: &'a [u8],
    pub schema: Option<&'a [u8]>,
}

/// HandshakeResponse41 for `hello` to a server offering `server_caps` (no TLS, no attributes).
pub fn handshake_response(server_caps: u64, hello: &Hello<'_>) -> Vec<u8> {
    let mut ours = (hello.caps & server_caps) | caps::PROTOCOL_41 | caps::SECURE_CONNECTION;
    ours &= !(caps::SSL | caps::COMPRESS | caps::CONNECT_ATTRS | caps::QUERY_ATTRIBUTES);
    ours &= !caps::PLUGIN_AUTH_LENENC_CLIENT_DATA;
    if hello.schema.is_some() && server_caps & caps::CONNECT_WITH_DB != 0 {
        ours |= caps::CONNECT_WITH_DB;
    } else {
        ours &= !caps::CONNECT_WITH_DB;
    }
    // Only the low 32 bits: CLIENT_MYSQL stays set, so no MariaDB extended capabilities.
    ours = (ours & 0xFFFF_FFFF) | caps::CLIENT_MYSQL;
    let mut out = Vec::with_capacity(96 + hello.user.len());
    out.extend_from_slice(&(ours as u32).to_le_bytes());
    out.extend_from_slice(&(16u32 << 20).to_le_bytes());
    out.push(hello.charset);
    out.extend_from_slice(&[0; 23]);
    out.extend_from_slice(hello.user);
    out.push(0);
    out.push(hello.answer.len() as u8);
    out.extend_from_slice(hello.answer);
    if ours & caps::CONNECT_WITH_DB != 0 {
        out.extend_from_slice(hello.schema.unwrap_or_default());
        out.push(0);
    }
    if ours & caps::PLUGIN_AUTH != 0 {
        out.extend_from_slice(NATIVE);
        out.push(0);
    }
    out
}

/// (code, message) of an ERR payload (`0xFF`, code, [`#` + SQL state], message).
pub fn err_text(p: &[u8]) -> (u16, String) {
    let code = p.get(1..3).map_or(0, |c| u16::from_le_bytes([c[0], c[1]]));
    let mut msg = p.get(3..).unwrap_or(&[]);
    if msg.first() == Some(&b'#') && msg.len() >= 6 {
        msg = &msg[6..];
    }
    (
        code,
        format!("{} ({code})", String::from_utf8_lossy(msg).trim()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_recovers_sha1_and_refuses_wrong_answers() {
        let scramble = new_scramble();
        assert!(scramble.iter().all(|b| (0x21..=0x7E).contains(b)));
        let stored = sha1(&sha1(b"pw_a"));
        let answer = native_password(b"pw_a", &scramble);
        assert_eq!(verify(&answer, &scramble, &stored), Some(sha1(b"pw_a")));
        let wrong = native_password(b"pw_b", &scramble);
        assert_eq!(verify(&wrong, &scramble, &stored), None);
        assert_eq!(verify(&answer[..19], &scramble, &stored), None);
        let other = new_scramble();
        assert_ne!(other, scramble);
        assert_eq!(verify(&answer, &other, &stored), None);
        // What was recovered answers any other scramble as the password would.
        assert_eq!(
            answer_from_sha1(&sha1(b"pw_a"), &other).to_vec(),
            native_password(b"pw_a", &other)
        );
    }

    #[test]
    fn stored_hash_in_mariadb_form() {
        // SELECT PASSWORD('secret') on MariaDB.
        let h = parse_stored_hash("*14E65567ABDB5135D0CFD9A70B3032C179A49EE7").unwrap();
        assert_eq!(h, sha1(&sha1(b"secret")));
        assert_eq!(
            parse_stored_hash("14E65567ABDB5135D0CFD9A70B3032C179A49EE7"),
            None
        );
        assert_eq!(parse_stored_hash("*14E6"), None);
        assert_eq!(
            parse_stored_hash("*ZZE65567ABDB5135D0CFD9A70B3032C179A49EE7"),
            None
        );
    }

    #[test]
    fn our_greeting_reads_back() {
        let s = new_scramble();
        let g = greeting(b"5.5.5-10.11.6-MariaDB-shardgate", 7, &s);
        let (c, nonce, plugin) = greeting_auth(&g).unwrap();
        assert_eq!(c, TERMINATING_CAPS);
        assert_eq!(nonce, s);
        assert_eq!(plugin, NATIVE);
    }

    #[test]
    fn login_round_trip_and_truncations() {
        let s = new_scramble();
        let answer = native_password(b"pw", &s);
        let hello = Hello {
            caps: TERMINATING_CAPS,
            charset: 8,
            user: b"sg_a",
            answer: &answer,
            schema: Some(b"app"),
        };
        let r = handshake_response(TERMINATING_CAPS, &hello);
        let l = parse_login(&r).unwrap();
        assert_eq!(l.user, b"sg_a");
        assert_eq!(l.answer, &answer[..]);
        assert_eq!(l.schema, Some(&b"app"[..]));
        assert_eq!(l.charset, 8);
        assert_eq!(l.plugin, Some(NATIVE));
        for cut in 0..r.len() - NATIVE.len() - 5 {
            // Cut inside the user, answer or schema: refused, never a wrong field.
            if let Some(l) = parse_login(&r[..cut]) {
                assert_eq!(l.user, b"sg_a", "{cut}");
                assert_eq!(l.answer, &answer[..], "{cut}");
            }
        }
    }

    #[test]
    fn change_user_fields() {
        let mut p = b"sg_b\0".to_vec();
        p.push(20);
        p.extend_from_slice(&[7; 20]);
        p.extend_from_slice(b"app\0");
        p.extend_from_slice(&[33, 0]);
        p.extend_from_slice(b"mysql_native_password\0");
        let c = parse_change_user(&p, TERMINATING_CAPS).unwrap();
        assert_eq!(c.user, b"sg_b");
        assert_eq!(c.answer, &[7; 20][..]);
        assert_eq!(c.schema, Some(&b"app"[..]));
        assert_eq!(c.charset, Some(33));
        assert_eq!(c.plugin, Some(NATIVE));
        assert!(parse_change_user(&p[..10], TERMINATING_CAPS).is_none());
    }
}
