//! Session tickets every shard can open: a client resumed on another shard (or after a reload)
//! skips the full handshake. TLS 1.3 resumption is stateless with them, and nothing is shared
//! between shards but this object, read without a lock.
//!
//! Keys rotate every [`PERIOD`]. The key of each period is derived (HMAC-SHA-256) from a
//! secret drawn once per process, so every shard computes the same key for the same period on
//! its own, without a lock or a message; a ticket names its period and is accepted during it
//! and the next one, so the lifetime advertised to clients (one period) always holds.
//! A new process (binary upgrade, restart) draws a new secret: its clients do one full
//! handshake again.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// How long one ticket key is used to seal new tickets.
pub const PERIOD: u64 = 3600;
/// Epoch number, nonce, then the sealed state with its tag.
const HEAD: usize = 4 + NONCE_LEN;

/// The keys of one period and of the one before.
struct Keys {
    epoch: u64,
    current: LessSafeKey,
    previous: LessSafeKey,
}

pub struct Ticketer {
    master: hmac::Key,
    keys: ArcSwap<Keys>,
    rng: SystemRandom,
}

impl fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticketer")
            .field("epoch", &self.keys.load().epoch)
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Ticketer {
    /// A ticketer with a fresh random secret. Fails only when the system has no randomness.
    pub fn new() -> Result<Arc<Ticketer>, String> {
        let rng = SystemRandom::new();
        let mut secret = [0u8; 32];
        rng.fill(&mut secret)
            .map_err(|_| "no randomness for the session-ticket secret".to_string())?;
        let master = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let epoch = now_secs() / PERIOD;
        let keys = Keys {
            epoch,
            current: derive(&master, epoch),
            previous: derive(&master, epoch.wrapping_sub(1)),
        };
        Ok(Arc::new(Ticketer {
            master,
            keys: ArcSwap::from_pointee(keys),
            rng,
        }))
    }

    /// The keys for the period `epoch`: derived again only when the period turned (whichever
    /// shard notices first stores them; a race stores the same keys twice).
    fn keys_at(&self, epoch: u64) -> arc_swap::Guard<Arc<Keys>> {
        let keys = self.keys.load();
        if keys.epoch == epoch {
            return keys;
        }
        self.keys.store(Arc::new(Keys {
            epoch,
            current: derive(&self.master, epoch),
            previous: derive(&self.master, epoch.wrapping_sub(1)),
        }));
        self.keys.load()
    }

    fn seal_at(&self, now: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let epoch = now / PERIOD;
        let keys = self.keys_at(epoch);
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(HEAD + plain.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&(epoch as u32).to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let (head, body) = out.split_at_mut(HEAD);
        let tag = keys
            .current
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&head[..4]),
                body,
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn open_at(&self, now: u64, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < HEAD + AES_256_GCM.tag_len() {
            return None;
        }
        let keys = self.keys_at(now / PERIOD);
        let named = u32::from_be_bytes([sealed[0], sealed[1], sealed[2], sealed[3]]);
        let key = if named == keys.epoch as u32 {
            &keys.current
        } else if named == keys.epoch.wrapping_sub(1) as u32 {
            &keys.previous
        } else {
            return None;
        };
        let nonce = Nonce::try_assume_unique_for_key(&sealed[4..HEAD]).ok()?;
        let mut body = sealed[HEAD..].to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(&sealed[..4]), &mut body)
            .ok()?;
        let n = plain.len();
        body.truncate(n);
        Some(body)
    }
}

fn derive(master: &hmac::Key, epoch: u64) -> LessSafeKey {
    let tag = hmac::sign(master, &epoch.to_be_bytes());
    // A SHA-256 tag is exactly an AES-256 key; `new` cannot fail on a 32-byte key.
    let unbound = UnboundKey::new(&AES_256_GCM, &tag.as_ref()[..32]).unwrap_or_else(|_| {
        unreachable!("AES-256-GCM takes a 32-byte key");
    });
    LessSafeKey::new(unbound)
}

impl rustls::server::ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }
    fn lifetime(&self) -> u32 {
        PERIOD as u32
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(now_secs(), plain)
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open_at(now_secs(), cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_during_its_period_and_the_next_only() {
        let t = Ticketer::new().unwrap();
        let start = 1_000 * PERIOD + 17;
        let sealed = t.seal_at(start, b"session state").unwrap();
        assert_eq!(t.open_at(start, &sealed).unwrap(), b"session state");
        assert_eq!(
            t.open_at(start + PERIOD, &sealed).unwrap(),
            b"session state"
        );
        assert!(t.open_at(start + 2 * PERIOD, &sealed).is_none());
        // Going back (a clock step) never opens a ticket from the future.
        assert!(t.open_at(start - PERIOD, &sealed).is_none());
    }

    #[test]
    fn two_shards_views_of_one_ticketer_agree_and_another_process_refuses() {
        let t = Ticketer::new().unwrap();
        let other = Ticketer::new().unwrap();
        let now = 77 * PERIOD;
        let sealed = t.seal_at(now, b"x").unwrap();
        // Another thread turning the period first changes nothing for this ticket.
        let t2 = t.clone();
        std::thread::spawn(move || {
            t2.seal_at(now + PERIOD, b"y");
        })
        .join()
        .unwrap();
        assert_eq!(t.open_at(now + PERIOD, &sealed).unwrap(), b"x");
        assert!(other.open_at(now, &sealed).is_none());
    }

    #[test]
    fn tampered_or_short_tickets_are_refused() {
        let t = Ticketer::new().unwrap();
        let now = 5 * PERIOD;
        let sealed = t.seal_at(now, b"state").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(t.open_at(now, &bad).is_none(), "flipped byte {i} accepted");
        }
        for n in 0..sealed.len() {
            assert!(t.open_at(now, &sealed[..n]).is_none());
        }
    }
}
