//! Observer: fed a client and a server byte stream interleaved, in arbitrary pieces: no panic,
//! and
//! - the events do not depend on how each read is cut into pieces (same events, same elapsed
//!   times), nor on whether consecutive reads in one direction are merged (same events);
//! - commands and replies follow a FIFO: a reply emitted while feeding the server (or at
//!   close) answers the oldest outstanding command, one emitted while feeding the client
//!   answers the command just sent; `outstanding()` is always that FIFO's length, so it is
//!   bounded by the client bytes fed (a command packet is at least 5 bytes);
//! - `Unparsed` comes at most once, abandons exactly the outstanding commands, and nothing is
//!   reported after it (not even by `close`); `is_parsed()` says whether it came;
//! - `close` fails every outstanding command and leaves none; `elapsed` never exceeds `now`.
//!
//! Input: byte 0 seeds the piece sizes; then records `[dir][len lo][len hi][len bytes]`, dir
//! even = client→server, odd = server→client (a short last record takes what is left). Each
//! record is one relayed read; `now` is its index.
#![no_main]

mod common;

use std::collections::VecDeque;

use common::Rng;
use libfuzzer_sys::fuzz_target;
use shardgate::proto::mysql::{Event, Observer, ReplyDetail};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Login(Vec<u8>, Option<Vec<u8>>),
    Auth(bool),
    /// Command, statement id, statement text (the Statement pieces before it, joined).
    Cmd(u8, Option<u32>, Vec<u8>),
    Reply(u8, bool, u64, ReplyDetail),
    User(Vec<u8>, Option<Vec<u8>>),
    Unsolicited(u16),
    Unparsed(&'static str, usize),
    /// An OK packet's kept prefix, and whether it is the whole packet.
    Ok(Vec<u8>, bool),
}

fn own(e: &Event<'_>, text: &mut Vec<u8>) -> Ev {
    match *e {
        Event::Statement { .. } => unreachable!("statement pieces are joined by the model"),
        Event::Login { user, schema } => Ev::Login(user.to_vec(), schema.map(<[u8]>::to_vec)),
        Event::Authenticated { ok } => Ev::Auth(ok),
        Event::Command { cmd, stmt } => Ev::Cmd(cmd, stmt, std::mem::take(text)),
        Event::Reply {
            cmd,
            ok,
            elapsed,
            detail,
        } => Ev::Reply(cmd, ok, elapsed, detail),
        Event::UserChanged { user, schema } => Ev::User(user.to_vec(), schema.map(<[u8]>::to_vec)),
        Event::UnsolicitedError { code } => Ev::Unsolicited(code),
        Event::Unparsed { reason, abandoned } => Ev::Unparsed(reason, abandoned),
        Event::Ok { packet, whole } => Ev::Ok(packet.to_vec(), whole),
    }
}

fn without_time(evs: &[Ev]) -> Vec<Ev> {
    evs.iter()
        .map(|e| match e {
            Ev::Reply(c, ok, _, d) => Ev::Reply(*c, *ok, 0, *d),
            e => e.clone(),
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Side {
    Client,
    Server,
    Close,
}

/// The model the events are checked against while they arrive.
#[derive(Default)]
struct Model {
    events: Vec<Ev>,
    fifo: VecDeque<u8>,
    unparsed: bool,
    client_bytes: usize,
    server_bytes: usize,
    /// Statement text of the command being received.
    text: Vec<u8>,
    /// Client and server bytes accounted to replies so far.
    bytes_in: u64,
    bytes_out: u64,
}

impl Model {
    fn on(&mut self, side: Side, now: u64, e: &Event<'_>) {
        assert!(!self.unparsed, "event after Unparsed: {e:?}");
        match *e {
            Event::Statement { cmd, text } => {
                assert!(side == Side::Client, "Statement while feeding the server");
                assert!(matches!(cmd, 0x02 | 0x03 | 0x16), "Statement of command {cmd:#x}");
                assert!(!text.is_empty(), "empty Statement piece");
                self.text.extend_from_slice(text);
                assert!(self.text.len() <= self.client_bytes, "more text than bytes");
                return;
            }
            Event::Command { cmd, .. } => {
                assert!(
                    self.text.is_empty() || matches!(cmd, 0x02 | 0x03 | 0x16),
                    "statement text before a command {cmd:#x} that has none"
                );
                assert!(side == Side::Client, "Command while feeding the server");
                self.fifo.push_back(cmd);
            }
            Event::Reply {
                cmd,
                elapsed,
                detail,
                ..
            } => {
                assert!(elapsed <= now, "elapsed {elapsed} > now {now}");
                self.bytes_in += detail.bytes_in;
                self.bytes_out += detail.bytes_out;
                assert!(self.bytes_in <= self.client_bytes as u64, "bytes_in > bytes fed");
                assert!(self.bytes_out <= self.server_bytes as u64, "bytes_out > bytes fed");
                assert!(detail.rows * 4 <= detail.bytes_out, "more rows than bytes");
                assert!(
                    detail.prepared.is_none() || cmd == 0x16,
                    "a prepared id for a command other than STMT_PREPARE"
                );
                let answered = match side {
                    // A command without a reply: answered as soon as it is sent.
                    Side::Client => {
                        assert!(
                            matches!(self.events.last(), Some(Ev::Cmd(c, _, _)) if *c == cmd),
                            "immediate Reply({cmd:#x}) not right after its Command"
                        );
                        self.fifo.pop_back()
                    }
                    Side::Server | Side::Close => self.fifo.pop_front(),
                };
                assert_eq!(answered, Some(cmd), "Reply out of FIFO order");
            }
            Event::Unparsed { abandoned, .. } => {
                assert_eq!(abandoned, self.fifo.len(), "abandoned count");
                self.fifo.clear();
                self.unparsed = true;
            }
            Event::Login { .. } | Event::Authenticated { .. } => {
                assert!(side != Side::Close)
            }
            Event::UserChanged { .. } => {
                assert!(side == Side::Server);
                assert!(matches!(self.events.last(), Some(Ev::Reply(0x11, true, _, _))));
            }
            Event::UnsolicitedError { .. } => assert!(side == Side::Server),
            Event::Ok { packet, .. } => {
                // Only inside a reply, from the server, and shaped like an OK.
                assert!(side == Side::Server, "Ok while feeding {side:?}");
                assert!(
                    matches!(packet.first(), Some(0x00 | 0xFE)),
                    "Ok event of packet {packet:02x?}"
                );
            }
        }
        let ev = own(e, &mut self.text);
        self.events.push(ev);
    }

    fn check(&self, o: &Observer) {
        assert_eq!(
            o.outstanding(),
            self.fifo.len(),
            "outstanding() vs the FIFO of events"
        );
        assert!(
            o.outstanding() * 5 <= self.client_bytes,
            "more commands than bytes"
        );
        assert_eq!(o.is_parsed(), !self.unparsed);
    }
}

/// Feed the reads, each cut into pieces of at most `max_piece` bytes (`None`: whole).
fn play(reads: &[(bool, u64, &[u8])], pieces: Option<(&mut Rng, usize)>) -> Vec<Ev> {
    let mut o = Observer::new();
    let mut m = Model::default();
    let mut pieces = pieces;
    for &(client, now, bytes) in reads {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = match pieces.as_mut() {
                Some((rng, max)) => 1 + rng.upto(*max - 1),
                None => rest.len(),
            }
            .min(rest.len());
            let (piece, tail) = rest.split_at(n);
            rest = tail;
            if client {
                m.client_bytes += piece.len();
                o.feed_client(piece, now, &mut |e| m.on(Side::Client, now, &e));
            } else {
                m.server_bytes += piece.len();
                o.feed_server(piece, now, &mut |e| m.on(Side::Server, now, &e));
            }
            m.check(&o);
        }
    }
    let now = reads.len() as u64 + 1;
    o.close(now, &mut |e| m.on(Side::Close, now, &e));
    m.check(&o);
    assert_eq!(o.outstanding(), 0, "commands left after close");
    m.events
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, mut rest)) = data.split_first() else {
        return;
    };
    let mut reads: Vec<(bool, u64, &[u8])> = Vec::new();
    while let [dir, tail @ ..] = rest {
        let (len, tail) = match tail {
            [lo, hi, t @ ..] => (usize::from(u16::from_le_bytes([*lo, *hi])), t),
            t => (t.len(), &[][..]),
        };
        let (bytes, tail) = tail.split_at(len.min(tail.len()));
        reads.push((dir & 1 == 0, reads.len() as u64 + 1, bytes));
        rest = tail;
    }

    let whole = play(&reads, None);
    let mut rng = Rng::new(u64::from(seed) << 40 | data.len() as u64);
    let max_piece = match seed & 3 {
        0 => 1,
        1 => 3,
        2 => 16,
        _ => 200,
    };
    let cut = play(&reads, Some((&mut rng, max_piece)));
    assert_eq!(
        cut, whole,
        "pieces of at most {max_piece} bytes change the events"
    );

    // Consecutive reads in one direction merged into one read.
    let mut merged: Vec<(bool, u64, Vec<u8>)> = Vec::new();
    for &(client, now, bytes) in &reads {
        match merged.last_mut() {
            Some((c, _, b)) if *c == client => b.extend_from_slice(bytes),
            _ => merged.push((client, now, bytes.to_vec())),
        }
    }
    let merged: Vec<(bool, u64, &[u8])> = merged
        .iter()
        .map(|(c, t, b)| (*c, *t, b.as_slice()))
        .collect();
    let joined = play(&merged, None);
    assert_eq!(
        without_time(&joined),
        without_time(&whole),
        "merging reads of one direction changes the events"
    );
});
