//! Packet framing (MySQL protocol "Protocol::Packet"): `int<3> payload_length`,
//! `int<1> sequence_id`, payload. A payload of 0xFFFFFF bytes or more travels as chunks of
//! exactly 0xFFFFFF followed by one shorter chunk (empty on exact multiples); the logical packet
//! is their concatenation. [`Framer`] follows this incrementally over arbitrary byte slices and
//! keeps only the first `CAP` payload bytes of each logical packet, which is all the observer
//! ever needs (command byte, OK/EOF status, names in the handshake).

/// Longest chunk payload; a chunk this long is followed by another chunk of the same packet.
pub const MAX_CHUNK: usize = 0xFF_FFFF;
pub const HEADER_LEN: usize = 4;

/// What [`Framer::step`] stopped at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The first header of a logical packet is complete: `seq()` and `first_len()` are known.
    Start,
    /// The last byte of the logical packet has been consumed: `prefix()` is final.
    Done,
}

/// Incremental framer for one direction of a connection.
#[derive(Debug, Clone)]
pub struct Framer<const CAP: usize> {
    hdr: [u8; HEADER_LEN],
    hdr_have: usize,
    chunk_left: usize,
    chunk_full: bool,
    in_packet: bool,
    seq: u8,
    first_len: usize,
    total: u64,
    prefix: [u8; CAP],
    prefix_len: usize,
    /// Payload bytes the last [`Framer::step`] consumed: always the last ones it consumed.
    step_payload: usize,
}

impl<const CAP: usize> Default for Framer<CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CAP: usize> Framer<CAP> {
    pub const fn new() -> Self {
        Framer {
            hdr: [0; HEADER_LEN],
            hdr_have: 0,
            chunk_left: 0,
            chunk_full: false,
            in_packet: false,
            seq: 0,
            first_len: 0,
            total: 0,
            prefix: [0; CAP],
            prefix_len: 0,
            step_payload: 0,
        }
    }

    /// Consume bytes from `buf` until the next [`Frame`] event or the end of `buf`; returns how
    /// many bytes were consumed. Partial input is never an error: framing itself cannot fail.
    ///
    /// A step consumes payload of at most one chunk, and those payload bytes are the last
    /// bytes it consumed ([`Framer::step_payload`] says how many): a caller that wants the
    /// payload itself (a statement's text) takes them from the end of the consumed range.
    pub fn step(&mut self, buf: &[u8]) -> (usize, Option<Frame>) {
        let mut used = 0;
        self.step_payload = 0;
        loop {
            if self.hdr_have < HEADER_LEN {
                let take = (HEADER_LEN - self.hdr_have).min(buf.len() - used);
                self.hdr[self.hdr_have..self.hdr_have + take]
                    .copy_from_slice(&buf[used..used + take]);
                self.hdr_have += take;
                used += take;
                if self.hdr_have < HEADER_LEN {
                    return (used, None);
                }
                let len = u32::from_le_bytes([self.hdr[0], self.hdr[1], self.hdr[2], 0]) as usize;
                self.chunk_left = len;
                self.chunk_full = len == MAX_CHUNK;
                if !self.in_packet {
                    self.in_packet = true;
                    self.seq = self.hdr[3];
                    self.first_len = len;
                    self.total = 0;
                    self.prefix_len = 0;
                    return (used, Some(Frame::Start));
                }
            }
            if self.chunk_left > 0 {
                let take = self.chunk_left.min(buf.len() - used);
                if take == 0 {
                    return (used, None);
                }
                if self.prefix_len < CAP {
                    let keep = take.min(CAP - self.prefix_len);
                    self.prefix[self.prefix_len..self.prefix_len + keep]
                        .copy_from_slice(&buf[used..used + keep]);
                    self.prefix_len += keep;
                }
                // 2^64 bytes is out of reach, but a counter fed by the wire never wraps.
                self.total = self.total.saturating_add(take as u64);
                self.chunk_left -= take;
                used += take;
                self.step_payload = take;
                if self.chunk_left > 0 {
                    return (used, None);
                }
            }
            // The chunk is complete; a full-size chunk means another header follows.
            self.hdr_have = 0;
            if !self.chunk_full {
                self.in_packet = false;
                return (used, Some(Frame::Done));
            }
            if self.step_payload > 0 {
                // The next chunk's header follows: stop so the payload stays at the end.
                return (used, None);
            }
        }
    }

    /// How many of the bytes the last [`Framer::step`] consumed were payload (they are the
    /// last ones it consumed).
    pub fn step_payload(&self) -> usize {
        self.step_payload
    }

    /// Sequence id of the logical packet's first chunk.
    pub fn seq(&self) -> u8 {
        self.seq
    }

    /// Payload length of the first chunk; `MAX_CHUNK` means the logical packet is at least
    /// that long (the exact length is only known at [`Frame::Done`], see [`Framer::total`]).
    pub fn first_len(&self) -> usize {
        self.first_len
    }

    /// Payload bytes of the current logical packet seen so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The first `CAP` (or fewer) payload bytes of the current logical packet.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix[..self.prefix_len]
    }

    /// True between packets (no partial header or payload pending).
    pub fn at_boundary(&self) -> bool {
        !self.in_packet && self.hdr_have == 0
    }

    /// A header announcing an empty packet has just been read: the packet is complete, but
    /// [`Framer::step`] reports it only when called again (with no bytes needed). Callers
    /// that stop at the end of their input ask this so an empty packet at the end of a read
    /// (the end of a LOCAL INFILE file) is not left pending until the peer's next bytes.
    pub fn empty_packet_pending(&self) -> bool {
        self.hdr_have == HEADER_LEN && self.chunk_left == 0 && self.in_packet
    }
}

/// Read a length-encoded integer; `None` when truncated or when the first byte is not a valid
/// prefix (0xFB is NULL in rows, 0xFF is an ERR marker).
pub fn lenenc(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let width = match first {
        0..=0xFA => return Some((first as u64, 1)),
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        _ => return None,
    };
    let bytes = buf.get(1..1 + width)?;
    let mut v = [0u8; 8];
    v[..width].copy_from_slice(bytes);
    Some((u64::from_le_bytes(v), 1 + width))
}

/// A NUL-terminated string at the start of `buf`: (string, bytes including the NUL).
pub fn nul_str(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = memchr::memchr(0, buf)?;
    Some((&buf[..end], end + 1))
}

/// Total packet length (header + payload) of the first complete single-chunk packet at the
/// start of `buf`, if all of it is there.
pub fn complete_packet_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], 0]) as usize;
    (buf.len() >= HEADER_LEN + len).then_some(HEADER_LEN + len)
}

/// Append a complete ERR packet (protocol 4.1 form, with SQL state) to `out`.
/// Messages longer than a chunk are cut, never split.
pub fn err_packet(out: &mut Vec<u8>, seq: u8, code: u16, sql_state: &[u8; 5], msg: &str) {
    let msg = &msg.as_bytes()[..msg.len().min(MAX_CHUNK - 9)];
    let len = 1 + 2 + 1 + 5 + msg.len();
    out.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
    out.push(seq);
    out.push(0xFF);
    out.extend_from_slice(&code.to_le_bytes());
    out.push(b'#');
    out.extend_from_slice(sql_state);
    out.extend_from_slice(msg);
}

/// Append an ERR packet in the form servers send *before* the greeting (too many
/// connections, host blocked): no SQL-state marker, since no capabilities are agreed yet.
/// Every client reads it as the connection's first packet and reports code and message.
pub fn err_packet_pre41(out: &mut Vec<u8>, seq: u8, code: u16, msg: &str) {
    let msg = &msg.as_bytes()[..msg.len().min(MAX_CHUNK - 3)];
    let len = 1 + 2 + msg.len();
    out.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
    out.push(seq);
    out.push(0xFF);
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(msg);
}

/// Build one packet (test and tool helper; the proxy never re-frames relayed data).
pub fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + HEADER_LEN);
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_CHUNK);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        out.push(seq);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        seq = seq.wrapping_add(1);
        if n < MAX_CHUNK {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `bytes` in pieces of `piece` and collect (event, seq, first_len, total, prefix).
    /// Also checks that the payload bytes reported by `step_payload` (the tail of each step)
    /// add up, packet by packet, to the whole logical payload.
    fn run<const CAP: usize>(bytes: &[u8], piece: usize) -> Vec<(Frame, u8, usize, u64, Vec<u8>)> {
        let mut f = Framer::<CAP>::new();
        let mut out = Vec::new();
        let mut payload = Vec::new();
        for chunk in bytes.chunks(piece.max(1)) {
            let mut rest = chunk;
            loop {
                let (n, ev) = f.step(rest);
                payload.extend_from_slice(&rest[n - f.step_payload()..n]);
                assert!(n > 0 || ev.is_some() || rest.is_empty(), "no progress");
                rest = &rest[n..];
                if let Some(ev) = ev {
                    if ev == Frame::Done {
                        assert_eq!(payload.len() as u64, f.total());
                        assert_eq!(&payload[..f.prefix().len()], f.prefix());
                        payload.clear();
                    }
                    out.push((ev, f.seq(), f.first_len(), f.total(), f.prefix().to_vec()));
                } else if rest.is_empty() {
                    break;
                }
            }
        }
        assert!(f.at_boundary());
        out
    }

    #[test]
    fn small_packets_any_split() {
        let mut bytes = packet(0, b"\x03select 1");
        bytes.extend(packet(1, b""));
        bytes.extend(packet(2, b"\x00\x00\x00\x02\x00\x00\x00"));
        for piece in [1, 2, 3, 5, 7, 100] {
            let ev = run::<4>(&bytes, piece);
            assert_eq!(ev.len(), 6, "piece {piece}");
            assert_eq!(ev[0], (Frame::Start, 0, 9, 0, vec![]));
            assert_eq!(ev[1], (Frame::Done, 0, 9, 9, b"\x03sel".to_vec()));
            assert_eq!(ev[3], (Frame::Done, 1, 0, 0, vec![]));
            assert_eq!(ev[5].0, Frame::Done);
            assert_eq!(ev[5].1, 2);
            assert_eq!(ev[5].3, 7);
        }
    }

    #[test]
    fn continuation_chunks_join_into_one_packet() {
        // Exact multiple: a full chunk and an empty final chunk.
        let big = vec![0xAB; MAX_CHUNK];
        let mut bytes = packet(3, &big);
        assert_eq!(bytes.len(), MAX_CHUNK + 8, "empty final chunk present");
        let longer = vec![0xFE; MAX_CHUNK + 10];
        bytes.extend(packet(5, &longer));
        for piece in [1 << 20, 65536, 4093] {
            let ev = run::<2>(&bytes, piece);
            assert_eq!(ev.len(), 4);
            assert_eq!(
                ev[1],
                (
                    Frame::Done,
                    3,
                    MAX_CHUNK,
                    MAX_CHUNK as u64,
                    vec![0xAB, 0xAB]
                )
            );
            assert_eq!(
                ev[3],
                (
                    Frame::Done,
                    5,
                    MAX_CHUNK,
                    MAX_CHUNK as u64 + 10,
                    vec![0xFE, 0xFE]
                )
            );
        }
    }

    #[test]
    fn lenenc_forms() {
        assert_eq!(lenenc(&[0xFA]), Some((250, 1)));
        assert_eq!(lenenc(&[0xFC, 0xFB, 0x00]), Some((251, 3)));
        assert_eq!(lenenc(&[0xFD, 1, 2, 3]), Some((0x030201, 4)));
        assert_eq!(
            lenenc(&[0xFE, 1, 0, 0, 0, 0, 0, 0, 1]),
            Some((1 | 1 << 56, 9))
        );
        assert_eq!(lenenc(&[0xFE, 1]), None);
        assert_eq!(lenenc(&[0xFB]), None);
        assert_eq!(lenenc(&[0xFF]), None);
        assert_eq!(lenenc(&[]), None);
    }

    #[test]
    fn err_packet_is_well_formed() {
        let mut out = Vec::new();
        err_packet(&mut out, 0, 1040, b"08004", "Too many connections");
        assert_eq!(complete_packet_len(&out), Some(out.len()));
        assert_eq!(&out[3..7], &[0, 0xFF, 0x10, 0x04]);
        assert_eq!(&out[7..13], b"#08004");
        assert_eq!(&out[13..], b"Too many connections");
    }
}
