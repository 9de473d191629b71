//! MySQL wire pieces the client needs, all pure functions over byte slices: packet headers,
//! length-encoded integers, the v10 greeting, the HandshakeResponse41 we send, the
//! mysql_native_password scramble, and OK/ERR/EOF fields. (MySQL client/server protocol,
//! "Connection Phase" and "COM_QUERY Response".)

use sha1::{Digest, Sha1};

pub(crate) const HEADER: usize = 4;
/// A payload of exactly this length continues in the next packet.
pub(crate) const MAX_PAYLOAD: usize = 0xFF_FFFF;

pub(crate) const CLIENT_LONG_PASSWORD: u32 = 1;
pub(crate) const CLIENT_LONG_FLAG: u32 = 4;
pub(crate) const CLIENT_CONNECT_WITH_DB: u32 = 8;
pub(crate) const CLIENT_PROTOCOL_41: u32 = 0x200;
pub(crate) const CLIENT_TRANSACTIONS: u32 = 0x2000;
pub(crate) const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
pub(crate) const CLIENT_MULTI_RESULTS: u32 = 0x2_0000;
pub(crate) const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
pub(crate) const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
/// utf8mb4_general_ci.
const CHARSET: u8 = 45;
pub(crate) const NATIVE_PASSWORD: &str = "mysql_native_password";

/// Payload length and sequence id of the packet starting at `b`, if the header is complete.
pub(crate) fn header(b: &[u8]) -> Option<(usize, u8)> {
    (b.len() >= HEADER).then(|| {
        (
            usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16,
            b[3],
        )
    })
}

/// Appends one packet (payload < 16 MiB) with its header.
pub(crate) fn write_packet(out: &mut Vec<u8>, seq: u8, payload: &[u8]) {
    let n = payload.len();
    out.extend_from_slice(&[n as u8, (n >> 8) as u8, (n >> 16) as u8, seq]);
    out.extend_from_slice(payload);
}

/// A length-encoded integer at the start of `b`: (value, bytes used).
pub(crate) fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let le = |n: usize| -> Option<(u64, usize)> {
        let bytes = b.get(1..1 + n)?;
        Some((
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, &x| acc << 8 | u64::from(x)),
            1 + n,
        ))
    };
    match *b.first()? {
        x @ 0..=0xFA => Some((u64::from(x), 1)),
        0xFC => le(2),
        0xFD => le(3),
        0xFE => le(8),
        _ => None,
    }
}

/// What the client keeps from the server's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Greeting {
    pub(crate) version: String,
    pub(crate) caps: u32,
    pub(crate) scramble: Vec<u8>,
    pub(crate) plugin: String,
}

pub(crate) fn parse_greeting(p: &[u8]) -> Result<Greeting, String> {
    let short = || "greeting too short".to_string();
    if p.first() != Some(&10) {
        return Err(format!(
            "unsupported protocol version {:?} (expected 10)",
            p.first()
        ));
    }
    let nul = p[1..].iter().position(|&b| b == 0).ok_or_else(short)?;
    let version = String::from_utf8_lossy(&p[1..1 + nul]).into_owned();
    let mut i = 1 + nul + 1 + 4; // version, NUL, connection id
    let mut scramble = p.get(i..i + 8).ok_or_else(short)?.to_vec();
    i += 8 + 1; // scramble part 1, filler
    let lo = p.get(i..i + 2).ok_or_else(short)?;
    let mut caps = u32::from(lo[0]) | u32::from(lo[1]) << 8;
    i += 2;
    let mut plugin = String::new();
    if let Some(rest) = p.get(i..).filter(|r| r.len() >= 16) {
        caps |= (u32::from(rest[3]) | u32::from(rest[4]) << 8) << 16;
        let auth_len = usize::from(rest[5]);
        let mut j = 16; // charset, status(2), caps_hi(2), auth_len, reserved(10)
        if caps & CLIENT_SECURE_CONNECTION != 0 {
            let n = auth_len.saturating_sub(8).max(13);
            let part2 = rest.get(j..j + n).ok_or_else(short)?;
            // The last byte of part 2 is a NUL terminator, not scramble.
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            scramble.extend_from_slice(part2);
            j += n;
        }
        if caps & CLIENT_PLUGIN_AUTH != 0 {
            let tail = rest.get(j..).unwrap_or(&[]);
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            plugin = String::from_utf8_lossy(&tail[..end]).into_owned();
        }
    }
    if caps & CLIENT_PROTOCOL_41 == 0 {
        return Err(format!("server {version} does not speak protocol 4.1"));
    }
    Ok(Greeting {
        version,
        caps,
        scramble,
        plugin,
    })
}

/// mysql_native_password: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))); empty for no password.
pub(crate) fn native_token(password: &str, scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha1::digest(password.as_bytes());
    let h2 = Sha1::digest(h1);
    let mut h = Sha1::new();
    h.update(&scramble[..scramble.len().min(20)]);
    h.update(h2);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

/// The HandshakeResponse41 payload.
pub(crate) fn handshake_response(
    g: &Greeting,
    user: &str,
    password: &str,
    db: Option<&str>,
) -> Vec<u8> {
    let mut caps = CLIENT_LONG_PASSWORD
        | CLIENT_LONG_FLAG
        | CLIENT_PROTOCOL_41
        | CLIENT_TRANSACTIONS
        | CLIENT_SECURE_CONNECTION
        | CLIENT_MULTI_RESULTS
        | CLIENT_PLUGIN_AUTH;
    if db.is_some() {
        caps |= CLIENT_CONNECT_WITH_DB;
    }
    caps &= g.caps | CLIENT_PROTOCOL_41;
    let mut p = Vec::with_capacity(128);
    p.extend_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(&(MAX_PAYLOAD as u32).to_le_bytes());
    p.push(CHARSET);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    let token = native_token(password, &g.scramble);
    if caps & CLIENT_SECURE_CONNECTION != 0 {
        p.push(token.len() as u8);
        p.extend_from_slice(&token);
    } else {
        p.extend_from_slice(&token);
        p.push(0);
    }
    if let Some(db) = db.filter(|_| caps & CLIENT_CONNECT_WITH_DB != 0) {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    if caps & CLIENT_PLUGIN_AUTH != 0 {
        p.extend_from_slice(NATIVE_PASSWORD.as_bytes());
        p.push(0);
    }
    p
}

/// An ERR packet's (code, message).
pub(crate) fn parse_err(p: &[u8]) -> (u16, String) {
    let code = p
        .get(1..3)
        .map_or(0, |c| u16::from(c[0]) | u16::from(c[1]) << 8);
    let mut msg = p.get(3..).unwrap_or(&[]);
    if msg.first() == Some(&b'#') && msg.len() >= 6 {
        msg = &msg[6..]; // '#' + 5-byte SQL state
    }
    (code, String::from_utf8_lossy(msg).into_owned())
}

/// Server status flags of an OK packet (after affected rows and last insert id).
pub(crate) fn ok_status(p: &[u8]) -> u16 {
    let Some((_, a)) = p.get(1..).and_then(lenenc) else {
        return 0;
    };
    let Some((_, b)) = p.get(1 + a..).and_then(lenenc) else {
        return 0;
    };
    let i = 1 + a + b;
    p.get(i..i + 2)
        .map_or(0, |s| u16::from(s[0]) | u16::from(s[1]) << 8)
}

/// Server status flags of a classic EOF packet (0xFE, warnings, status).
pub(crate) fn eof_status(p: &[u8]) -> u16 {
    p.get(3..5)
        .map_or(0, |s| u16::from(s[0]) | u16::from(s[1]) << 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MariaDB 10.11 greeting as captured on the wire (payload only).
    fn mariadb_greeting() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.6-MariaDB-0+deb12u1\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&0xF7FEu16.to_le_bytes()); // caps lo (no CLIENT_MYSQL bit)
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&0x81BFu16.to_le_bytes()); // caps hi: PLUGIN_AUTH etc.
        p.push(21);
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x1d, 0, 0, 0]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    #[test]
    fn parses_greeting() {
        let g = parse_greeting(&mariadb_greeting()).unwrap();
        assert_eq!(g.version, "5.5.5-10.11.6-MariaDB-0+deb12u1");
        assert_eq!(g.scramble, b"abcdefghijklmnopqrst");
        assert_eq!(g.plugin, NATIVE_PASSWORD);
        assert!(g.caps & CLIENT_PLUGIN_AUTH != 0 && g.caps & CLIENT_SECURE_CONNECTION != 0);
    }

    #[test]
    fn truncated_greetings_are_errors() {
        let full = mariadb_greeting();
        for n in 0..40 {
            assert!(parse_greeting(&full[..n]).is_err(), "{n} bytes");
        }
        assert!(parse_greeting(&[9, 0])
            .unwrap_err()
            .contains("protocol version"));
    }

    #[test]
    fn native_password_known_answer() {
        // Reference: the server stores SHA1(SHA1(pw)); the check is
        // SHA1(token XOR SHA1(scramble + stored)) == stored.
        let scramble = b"01234567890123456789";
        let token = native_token("secret", scramble);
        let stored = Sha1::digest(Sha1::digest(b"secret"));
        let mut h = Sha1::new();
        h.update(scramble);
        h.update(stored);
        let mask = h.finalize();
        let h1: Vec<u8> = token.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(Sha1::digest(&h1).as_slice(), stored.as_slice());
        assert!(native_token("", scramble).is_empty());
    }

    #[test]
    fn handshake_response_layout() {
        let g = parse_greeting(&mariadb_greeting()).unwrap();
        let p = handshake_response(&g, "sg_a", "pw_a", Some("app"));
        let caps = u32::from_le_bytes(p[0..4].try_into().unwrap());
        assert!(caps & CLIENT_CONNECT_WITH_DB != 0);
        assert_eq!(&p[32..37], b"sg_a\0");
        assert_eq!(p[37], 20);
        assert_eq!(&p[58..62], b"app\0");
        assert_eq!(&p[62..], b"mysql_native_password\0");
    }

    #[test]
    fn lenenc_and_fields() {
        assert_eq!(lenenc(&[5]), Some((5, 1)));
        assert_eq!(lenenc(&[0xFC, 0x34, 0x12]), Some((0x1234, 3)));
        assert_eq!(lenenc(&[0xFD, 1, 2, 3]), Some((0x030201, 4)));
        assert_eq!(lenenc(&[0xFC, 1]), None);
        assert_eq!(lenenc(&[0xFF]), None);
        assert_eq!(
            parse_err(b"\xff\x28\x04#42000You have an error"),
            (1064, "You have an error".into())
        );
        assert_eq!(ok_status(&[0, 0, 0, 0x08, 0]), SERVER_MORE_RESULTS_EXISTS);
        assert_eq!(
            eof_status(&[0xFE, 0, 0, 0x08, 0]),
            SERVER_MORE_RESULTS_EXISTS
        );
        assert_eq!(header(&[3, 0, 0, 1, 9]), Some((3, 1)));
    }
}
