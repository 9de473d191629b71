//! Query digests: a statement's text with its literals taken out, so that statements that differ
//! only in their values count as one (ProxySQL's `digest_text`). Pure code, no I/O.
//!
//! [`Normalizer`] is a streaming byte state machine: [`Normalizer::feed`] takes the statement
//! in pieces cut anywhere (a `COM_QUERY` can be 16 MiB and is never held whole), and
//! [`Normalizer::finish`] returns the [`Digest`] and makes the normaliser ready for the next
//! statement. The result never depends on where the pieces were cut. Memory is fixed: a
//! 64-byte token buffer and at most [`MAX_TEXT`] bytes of normalised text; the hash covers the
//! whole normalised text, however long. Any bytes are accepted (nothing panics, invalid UTF-8
//! is replaced in the text, not in the hash).
//!
//! Rules, in the order they apply:
//!
//! - **Comments are removed** and count as whitespace: `-- ` (two dashes then whitespace or a
//!   control character, to the end of the line), `#` (to the end of the line), `/* ... */`,
//!   also optimizer hints `/*+ ... */`. **Executable comments** `/*! ... */`, `/*!50110 ...
//!   */` and MariaDB's `/*M! ... */` are what the server runs: their markers (and version
//!   number) are removed and their content is normalised like the rest of the statement.
//! - **Literals become `?`**: strings in single *or double* quotes (`"..."` is a string in
//!   the default `sql_mode`; under `ANSI_QUOTES` a double-quoted identifier becomes `?` too),
//!   with backslash escapes and doubled quotes; `X'..'`, `B'..'`, `N'..'` and charset
//!   introducers (`_utf8mb4'..'`); numbers: integers, decimals (`1.5`, `.5`, `1.`),
//!   exponents (`1e5`, `2.5E-3`), `0x1F`, `0b101`. A `-` or `+` sign is part of the literal
//!   when it follows an operator, `(`, `,`, `;`, the start of the statement, or one of the
//!   keywords after which a value is expected (`SELECT`, `WHERE`, `AND`, `OR`, `NOT`,
//!   `BETWEEN`, `CASE`, `WHEN`, `THEN`, `ELSE`, `LIKE`, `IS`, `IN`, `ON`, `SET`, `VALUE`,
//!   `VALUES`, `RETURN`, `LIMIT`, `OFFSET`, `BY`, `HAVING`, `INTERVAL`, `XOR`, `DIV`, `MOD`,
//!   `DEFAULT`): `a = -5` is `a = ?`, `a - 5` stays `a - ?`. A prepared statement's `?`
//!   placeholders are literals too, so `WHERE id = ?` (prepared) and `WHERE id = 42` (text)
//!   have the same digest. A word that starts with a digit but is not a number (`1abc`,
//!   `0xZZ`) is an identifier and is kept.
//! - **Lists of literals collapse**: a parenthesised list made only of literals, `(?)`,
//!   `(?,?,?)`, becomes `(...)` (so `IN (1,2,3)` is `IN (...)`), and a run of such groups
//!   separated by commas, `VALUES (1,2),(3,4)`, becomes one `(...)`.
//! - **Whitespace**: every run of whitespace, control characters and comments becomes one
//!   space; none is kept at either end, after `(` or `,`, or before `)`, `,` or `;`.
//!   Elsewhere a space is kept only where the statement had one: `a=1` is `a=?`, `a = 1` is
//!   `a = ?`. Trailing `;` are dropped.
//! - **Case is preserved** (keywords are not upper-cased: that needs a keyword table and would
//!   touch case-sensitive table names); identifiers in backticks are kept as written.
//!
//! The text is cut at [`MAX_TEXT`] bytes (on a character boundary) and then ends with `...`;
//! the hash is FNV-1a (64 bit) over the whole normalised text, so it is the same on every
//! shard and in every process.

/// Normalised text kept per digest; beyond it the text ends with `...`.
pub const MAX_TEXT: usize = 1024;
/// Bytes of a word or number held to recognise it (keywords, `X'..'`, `0x..`).
const HELD: usize = 64;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, continuing from `h`.
pub fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// FNV-1a of nothing (where a hash starts).
pub const FNV_START: u64 = FNV_OFFSET;

/// One statement's digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    /// FNV-1a 64 of the whole normalised text.
    pub hash: u64,
    /// The normalised text, at most [`MAX_TEXT`] bytes plus `...` when cut; valid UTF-8.
    pub text: Box<str>,
}

/// Keywords after which a signed number is one literal.
const VALUE_KEYWORDS: &[&[u8]] = &[
    b"SELECT",
    b"WHERE",
    b"AND",
    b"OR",
    b"NOT",
    b"BETWEEN",
    b"CASE",
    b"WHEN",
    b"THEN",
    b"ELSE",
    b"LIKE",
    b"IS",
    b"IN",
    b"ON",
    b"SET",
    b"VALUE",
    b"VALUES",
    b"RETURN",
    b"LIMIT",
    b"OFFSET",
    b"BY",
    b"HAVING",
    b"INTERVAL",
    b"XOR",
    b"DIV",
    b"MOD",
    b"DEFAULT",
];

/// What the lexer hands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// A word or backticked identifier starts; its bytes follow through `Writer::bytes`.
    Word,
    /// `?`: any literal.
    Lit,
    Open,
    Close,
    Comma,
    Semi,
    /// An operator character (`=`, `<`, `-`, ...): a sign after one of these is a literal's.
    Op(u8),
    /// Any other punctuation (`.`, `@`, ...).
    Punct(u8),
    /// `...)`: the end of a collapsed list (the collapser's own token).
    Collapsed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Base,
    /// A word; `streaming` says whether it outgrew the held buffer.
    Word,
    /// Digits, then `.`, `e`/`E`, `x`, `b`.
    NInt,
    NFrac,
    /// After `e`/`E`.
    NExp0,
    /// After `e+` / `e-`.
    NExpSign,
    NExp,
    /// After `0x` / `0b`.
    NHex0,
    NHex,
    NBin0,
    NBin,
    Str(u8),
    StrEsc(u8),
    /// The quote seen in a string: its end, unless doubled.
    StrQuote(u8),
    Backtick,
    BacktickQuote,
    /// `-` held: `--` comment?
    Dash,
    /// `--` held: comment if whitespace follows.
    Dash2,
    /// `/` held: `/*`?
    Slash,
    /// `/*` seen: `!`, `M!` or a plain comment.
    BlockStart,
    /// `/*M` seen.
    BlockM,
    /// The version digits after `/*!`.
    ExecVersion,
    Block,
    BlockStar,
    /// `*` held inside an executable comment: `*/` ends it.
    ExecStar,
    /// `.` held: `.5`?
    Dot,
    LineComment,
}

/// Sign stage: what came before, for `-5` after an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prev {
    /// Start of the statement, an operator, `(`, `,`, `;`, or a value keyword.
    OpLike,
    Value,
}

/// List collapser states (see the module rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coll {
    Base,
    /// `(` written.
    Open,
    /// `(` written, then `n` literals held, and a `,` held after them if `comma`.
    List {
        n: u64,
        comma: bool,
    },
    /// `(...)` written.
    Group,
    /// `(...)` then `,` held.
    GComma,
    /// `(...)` then `,(` held.
    GOpen,
    /// `(...)` then `,(` and a list held.
    GList {
        n: u64,
        comma: bool,
    },
}

/// The output end: spacing, trailing `;`, the bounded text and the hash.
#[derive(Debug)]
struct Writer {
    text: Vec<u8>,
    len: u64,
    hash: u64,
    last: Option<Tok>,
    semis: u32,
}

impl Writer {
    fn new() -> Self {
        Writer {
            text: Vec::with_capacity(128),
            len: 0,
            hash: FNV_START,
            last: None,
            semis: 0,
        }
    }

    fn put(&mut self, b: &[u8]) {
        self.hash = fnv1a(self.hash, b);
        self.len += b.len() as u64;
        let room = (MAX_TEXT + 1).saturating_sub(self.text.len());
        self.text.extend_from_slice(&b[..b.len().min(room)]);
    }

    fn tok(&mut self, t: Tok, space: bool) {
        if t == Tok::Semi {
            if self.last.is_some() {
                self.semis = self.semis.saturating_add(1);
            }
            return;
        }
        if self.semis > 0 {
            for _ in 0..self.semis {
                self.put(b";");
            }
            self.semis = 0;
            self.last = Some(Tok::Semi);
        }
        let after_tight = matches!(self.last, None | Some(Tok::Open) | Some(Tok::Comma));
        let before_tight = matches!(t, Tok::Close | Tok::Comma | Tok::Collapsed);
        if space && !after_tight && !before_tight {
            self.put(b" ");
        }
        match t {
            Tok::Word | Tok::Semi => {}
            Tok::Lit => self.put(b"?"),
            Tok::Open => self.put(b"("),
            Tok::Close => self.put(b")"),
            Tok::Comma => self.put(b","),
            Tok::Op(c) | Tok::Punct(c) => self.put(&[c]),
            Tok::Collapsed => self.put(b"...)"),
        }
        self.last = Some(t);
    }

    fn finish(&mut self) -> Digest {
        let text = if self.len > MAX_TEXT as u64 {
            let cut = char_boundary(&self.text, MAX_TEXT.min(self.text.len()));
            let mut s = String::from_utf8_lossy(&self.text[..cut]).into_owned();
            s.push_str("...");
            s
        } else {
            String::from_utf8_lossy(&self.text).into_owned()
        };
        let d = Digest {
            hash: self.hash,
            text: text.into_boxed_str(),
        };
        self.text.clear();
        self.len = 0;
        self.hash = FNV_START;
        self.last = None;
        self.semis = 0;
        d
    }
}

/// `cut`, or less so that a UTF-8 sequence complete in `text` is not split by it (invalid
/// bytes are left to the lossy conversion).
fn char_boundary(text: &[u8], cut: usize) -> usize {
    // The start of the last sequence before `cut`: back over up to 3 continuation bytes.
    let mut p = cut;
    while p > 0 && cut - p < 3 && text[p - 1] & 0xC0 == 0x80 {
        p -= 1;
    }
    let Some(&lead) = p.checked_sub(1).and_then(|i| text.get(i)) else {
        return cut;
    };
    let len = match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return cut,
    };
    if p - 1 + len > cut {
        p - 1
    } else {
        cut
    }
}

/// The streaming normaliser (rules in the module documentation).
#[derive(Debug)]
pub struct Normalizer {
    lex: Lex,
    /// Whitespace or a comment since the last token.
    space: bool,
    /// The space flag of the held token (word, number, `-`, `/`, `.`, string).
    held_space: bool,
    held: [u8; HELD],
    held_len: usize,
    /// The held word outgrew `held` and is being written as it comes.
    streaming: bool,
    /// Inside `/*! ... */`.
    in_exec: bool,
    /// The last token could end a value (word, literal, `)`): a `.` after it is not `.5`.
    after_value: bool,
    // Sign stage.
    prev: Prev,
    sign: Option<(u8, bool)>,
    // Collapser.
    coll: Coll,
    w: Writer,
}

impl Default for Normalizer {
    fn default() -> Self {
        Self::new()
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_space(b: u8) -> bool {
    b <= b' ' || b == 0x7f
}

impl Normalizer {
    pub fn new() -> Self {
        Normalizer {
            lex: Lex::Base,
            space: false,
            held_space: false,
            held: [0; HELD],
            held_len: 0,
            streaming: false,
            in_exec: false,
            after_value: false,
            prev: Prev::OpLike,
            sign: None,
            coll: Coll::Base,
            w: Writer::new(),
        }
    }

    /// Normalise the next piece of the statement.
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            self.step(b);
        }
    }

    /// The digest of everything fed since the last `finish`; the normaliser starts afresh.
    pub fn finish(&mut self) -> Digest {
        self.end_token();
        self.lex = Lex::Base;
        if let Some((c, sp)) = self.sign.take() {
            self.coll(Tok::Op(c), sp);
        }
        self.coll_flush();
        let d = self.w.finish();
        self.space = false;
        self.held_space = false;
        self.held_len = 0;
        self.streaming = false;
        self.in_exec = false;
        self.after_value = false;
        self.prev = Prev::OpLike;
        self.coll = Coll::Base;
        d
    }

    /// Digest of one whole statement.
    pub fn digest(stmt: &[u8]) -> Digest {
        let mut n = Normalizer::new();
        n.feed(stmt);
        n.finish()
    }

    // ---- lexer ----

    fn hold(&mut self, b: u8) {
        if self.held_len < HELD {
            self.held[self.held_len] = b;
            self.held_len += 1;
        }
    }

    /// Start holding a token at this byte.
    fn start_held(&mut self, b: u8, lex: Lex) {
        self.held_space = self.space;
        self.space = false;
        self.held_len = 0;
        self.streaming = false;
        self.hold(b);
        self.lex = lex;
    }

    /// A word byte: held while it fits, then the word is written as it comes.
    fn word_byte(&mut self, b: u8) {
        if self.streaming {
            self.w.put(&[b]);
        } else if self.held_len < HELD {
            self.hold(b);
        } else {
            self.write_held_word(self.held_len);
            self.w.put(&[b]);
        }
    }

    /// Write the first `n` held bytes as the start of a word, which then streams.
    fn write_held_word(&mut self, n: usize) {
        self.tok(Tok::Word, self.held_space);
        let held = self.held;
        self.w.put(&held[..n.min(self.held_len)]);
        self.streaming = true;
    }

    /// A word (or backticked identifier) ended; `kw`: it was a value keyword.
    fn word_end(&mut self, kw: bool) {
        if kw {
            self.prev = Prev::OpLike;
        }
        self.after_value = true;
        self.streaming = false;
        self.held_len = 0;
    }

    /// A number turned out to be a word (`1abc`, `0xZZ`): write what was held, go on as a word.
    fn number_to_word(&mut self) {
        self.write_held_word(self.held_len);
        self.lex = Lex::Word;
    }

    fn held_is_zero(&self) -> bool {
        self.held_len == 1 && self.held[0] == b'0'
    }

    /// Complete the held token as if the input ended here; back to `Base`.
    fn end_token(&mut self) {
        let lex = std::mem::replace(&mut self.lex, Lex::Base);
        match lex {
            Lex::Base | Lex::LineComment | Lex::Block | Lex::BlockStar => {}
            Lex::BlockStart | Lex::BlockM | Lex::ExecVersion => {
                // `/*` with nothing closing it: a comment to the end.
            }
            Lex::Word => {
                if !self.streaming {
                    self.write_held_word(self.held_len);
                    let kw = self.held_is_keyword();
                    self.word_end(kw);
                } else {
                    self.word_end(false);
                }
            }
            Lex::NInt | Lex::NFrac | Lex::NExp | Lex::NHex | Lex::NBin => self.literal(),
            Lex::NExp0 | Lex::NHex0 | Lex::NBin0 => {
                self.write_held_word(self.held_len);
                self.word_end(false);
            }
            Lex::NExpSign => {
                let sign = self.held[self.held_len.saturating_sub(1).min(HELD - 1)];
                self.write_held_word(self.held_len.saturating_sub(1));
                self.word_end(false);
                self.tok(Tok::Op(sign), false);
            }
            Lex::Str(_) | Lex::StrEsc(_) | Lex::StrQuote(_) => self.literal(),
            Lex::Backtick | Lex::BacktickQuote => self.word_end(false),
            Lex::Dash => self.tok(Tok::Op(b'-'), self.held_space),
            Lex::Dash2 => {
                self.tok(Tok::Op(b'-'), self.held_space);
                self.tok(Tok::Op(b'-'), false);
            }
            Lex::Slash => self.tok(Tok::Op(b'/'), self.held_space),
            Lex::ExecStar => self.tok(Tok::Op(b'*'), self.held_space),
            Lex::Dot => self.tok(Tok::Punct(b'.'), self.held_space),
        }
        self.held_len = 0;
        self.streaming = false;
    }

    fn literal(&mut self) {
        self.tok(Tok::Lit, self.held_space);
        self.held_len = 0;
    }

    fn held_is_keyword(&self) -> bool {
        let w = &self.held[..self.held_len];
        VALUE_KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w))
    }

    /// `X'..'`, `B'..'`, `N'..'`, `_charset'..'`: the held word introduces a string.
    fn held_is_introducer(&self) -> bool {
        if self.streaming {
            return false;
        }
        match &self.held[..self.held_len] {
            [c] => matches!(c, b'x' | b'X' | b'b' | b'B' | b'n' | b'N'),
            [b'_', rest @ ..] => !rest.is_empty(),
            _ => false,
        }
    }

    fn step(&mut self, b: u8) {
        loop {
            match self.lex {
                Lex::Base => return self.base(b),
                Lex::Word => {
                    if is_word(b) {
                        return self.word_byte(b);
                    }
                    if b == b'\'' && self.held_is_introducer() {
                        self.held_len = 0;
                        self.lex = Lex::Str(b);
                        return;
                    }
                }
                Lex::NInt => match b {
                    b'0'..=b'9' => return self.hold(b),
                    b'.' => {
                        self.hold(b);
                        self.lex = Lex::NFrac;
                        return;
                    }
                    b'e' | b'E' => {
                        self.hold(b);
                        self.lex = Lex::NExp0;
                        return;
                    }
                    b'x' | b'X' if self.held_is_zero() => {
                        self.hold(b);
                        self.lex = Lex::NHex0;
                        return;
                    }
                    b'b' | b'B' if self.held_is_zero() => {
                        self.hold(b);
                        self.lex = Lex::NBin0;
                        return;
                    }
                    _ if is_word(b) => {
                        self.number_to_word();
                        return self.word_byte(b);
                    }
                    _ => {}
                },
                Lex::NFrac => match b {
                    b'0'..=b'9' => return self.hold(b),
                    b'e' | b'E' => {
                        self.hold(b);
                        self.lex = Lex::NExp0;
                        return;
                    }
                    _ => {}
                },
                Lex::NExp0 => match b {
                    b'0'..=b'9' => {
                        self.hold(b);
                        self.lex = Lex::NExp;
                        return;
                    }
                    b'+' | b'-' => {
                        self.hold(b);
                        self.lex = Lex::NExpSign;
                        return;
                    }
                    _ if is_word(b) => {
                        self.number_to_word();
                        return self.word_byte(b);
                    }
                    _ => {}
                },
                Lex::NExpSign => {
                    if b.is_ascii_digit() {
                        self.hold(b);
                        self.lex = Lex::NExp;
                        return;
                    }
                }
                Lex::NExp => {
                    if b.is_ascii_digit() {
                        return self.hold(b);
                    }
                }
                Lex::NHex0 | Lex::NHex => {
                    if b.is_ascii_hexdigit() {
                        self.hold(b);
                        self.lex = Lex::NHex;
                        return;
                    }
                    if is_word(b) {
                        self.number_to_word();
                        return self.word_byte(b);
                    }
                }
                Lex::NBin0 | Lex::NBin => {
                    if b == b'0' || b == b'1' {
                        self.hold(b);
                        self.lex = Lex::NBin;
                        return;
                    }
                    if is_word(b) {
                        self.number_to_word();
                        return self.word_byte(b);
                    }
                }
                Lex::Str(q) => {
                    if b == q {
                        self.lex = Lex::StrQuote(q);
                    } else if b == b'\\' {
                        self.lex = Lex::StrEsc(q);
                    }
                    return;
                }
                Lex::StrEsc(q) => {
                    self.lex = Lex::Str(q);
                    return;
                }
                Lex::StrQuote(q) => {
                    if b == q {
                        self.lex = Lex::Str(q);
                        return;
                    }
                }
                Lex::Backtick => {
                    if b == b'`' {
                        self.lex = Lex::BacktickQuote;
                    }
                    // One line whatever the name holds.
                    self.w.put(&[if is_space(b) { b' ' } else { b }]);
                    return;
                }
                Lex::BacktickQuote => {
                    if b == b'`' {
                        self.w.put(b"`");
                        self.lex = Lex::Backtick;
                        return;
                    }
                }
                Lex::Dash => {
                    if b == b'-' {
                        self.lex = Lex::Dash2;
                        return;
                    }
                }
                Lex::Dash2 => {
                    if is_space(b) {
                        self.lex = Lex::LineComment;
                        self.space = true;
                        return;
                    }
                }
                Lex::Slash => {
                    if b == b'*' {
                        self.lex = Lex::BlockStart;
                        self.space = true;
                        return;
                    }
                }
                Lex::BlockStart => {
                    match b {
                        b'!' if !self.in_exec => {
                            self.lex = Lex::ExecVersion;
                            return;
                        }
                        b'M' if !self.in_exec => {
                            self.lex = Lex::BlockM;
                            return;
                        }
                        _ => {}
                    }
                    self.lex = Lex::Block;
                    continue;
                }
                Lex::BlockM => {
                    if b == b'!' {
                        self.lex = Lex::ExecVersion;
                        return;
                    }
                    self.lex = Lex::Block;
                    continue;
                }
                Lex::ExecVersion => {
                    if b.is_ascii_digit() {
                        return;
                    }
                    self.in_exec = true;
                    self.lex = Lex::Base;
                    continue;
                }
                Lex::Block => {
                    if b == b'*' {
                        self.lex = Lex::BlockStar;
                    }
                    return;
                }
                Lex::BlockStar => {
                    self.lex = match b {
                        b'/' => Lex::Base,
                        b'*' => Lex::BlockStar,
                        _ => Lex::Block,
                    };
                    return;
                }
                Lex::ExecStar => {
                    if b == b'/' {
                        self.in_exec = false;
                        self.lex = Lex::Base;
                        self.space = true;
                        return;
                    }
                }
                Lex::Dot => {
                    if b.is_ascii_digit() {
                        self.hold(b);
                        self.lex = Lex::NFrac;
                        return;
                    }
                }
                Lex::LineComment => {
                    if b == b'\n' {
                        self.lex = Lex::Base;
                    }
                    return;
                }
            }
            // The held token ends before `b`, which starts afresh.
            self.end_token();
        }
    }

    fn base(&mut self, b: u8) {
        match b {
            _ if is_space(b) => self.space = true,
            b'0'..=b'9' => self.start_held(b, Lex::NInt),
            _ if is_word(b) => self.start_held(b, Lex::Word),
            b'\'' | b'"' => {
                self.held_space = self.space;
                self.space = false;
                self.lex = Lex::Str(b);
            }
            b'`' => {
                self.tok(Tok::Word, self.space);
                self.w.put(b"`");
                self.lex = Lex::Backtick;
            }
            b'?' => self.tok(Tok::Lit, self.space),
            b'(' => self.tok(Tok::Open, self.space),
            b')' => self.tok(Tok::Close, self.space),
            b',' => self.tok(Tok::Comma, self.space),
            b';' => self.tok(Tok::Semi, self.space),
            b'#' => {
                self.space = true;
                self.lex = Lex::LineComment;
            }
            b'-' => self.start_held(b, Lex::Dash),
            b'/' => self.start_held(b, Lex::Slash),
            b'*' if self.in_exec => self.start_held(b, Lex::ExecStar),
            b'.' if !self.after_value => self.start_held(b, Lex::Dot),
            b'=' | b'<' | b'>' | b'!' | b'+' | b'*' | b'%' | b'^' | b'&' | b'|' | b'~' | b':' => {
                self.tok(Tok::Op(b), self.space)
            }
            _ => self.tok(Tok::Punct(b), self.space),
        }
    }

    // ---- sign stage ----

    /// A token from the lexer.
    fn tok(&mut self, t: Tok, space: bool) {
        self.space = false;
        self.after_value = matches!(t, Tok::Word | Tok::Lit | Tok::Close);
        if let Some((c, sp)) = self.sign.take() {
            if t == Tok::Lit {
                self.prev = Prev::Value;
                return self.coll(Tok::Lit, sp);
            }
            self.coll(Tok::Op(c), sp);
            self.prev = Prev::OpLike;
        }
        if let Tok::Op(c @ (b'-' | b'+')) = t {
            if self.prev == Prev::OpLike {
                self.sign = Some((c, space));
                return;
            }
        }
        self.prev = match t {
            Tok::Word | Tok::Lit | Tok::Close | Tok::Punct(_) | Tok::Collapsed => Prev::Value,
            Tok::Open | Tok::Comma | Tok::Semi | Tok::Op(_) => Prev::OpLike,
        };
        self.coll(t, space);
    }

    // ---- list collapser ----

    /// Write `n` held literals (and a held comma).
    fn flush_list(&mut self, n: u64, comma: bool) {
        for i in 0..n {
            if i > 0 {
                self.w.tok(Tok::Comma, false);
            }
            self.w.tok(Tok::Lit, false);
        }
        if comma {
            self.w.tok(Tok::Comma, false);
        }
    }

    /// Write whatever the collapser holds; back to `Base`.
    fn coll_flush(&mut self) {
        match std::mem::replace(&mut self.coll, Coll::Base) {
            Coll::Base | Coll::Open | Coll::Group => {}
            Coll::List { n, comma } => self.flush_list(n, comma),
            Coll::GComma => self.w.tok(Tok::Comma, false),
            Coll::GOpen => {
                self.w.tok(Tok::Comma, false);
                self.w.tok(Tok::Open, false);
            }
            Coll::GList { n, comma } => {
                self.w.tok(Tok::Comma, false);
                self.w.tok(Tok::Open, false);
                self.flush_list(n, comma);
            }
        }
    }

    fn coll(&mut self, t: Tok, space: bool) {
        let next = match (self.coll, t) {
            (Coll::Base, _) => None,
            (Coll::Open, Tok::Lit) => Some(Coll::List { n: 1, comma: false }),
            (Coll::List { n, comma: false }, Tok::Comma) => Some(Coll::List { n, comma: true }),
            (Coll::List { n, comma: true }, Tok::Lit) => Some(Coll::List {
                n: n + 1,
                comma: false,
            }),
            (Coll::List { comma: false, .. }, Tok::Close)
            | (Coll::GList { comma: false, .. }, Tok::Close) => {
                if matches!(self.coll, Coll::List { .. }) {
                    self.w.tok(Tok::Collapsed, false);
                }
                Some(Coll::Group)
            }
            (Coll::Group, Tok::Comma) => Some(Coll::GComma),
            (Coll::GComma, Tok::Open) => Some(Coll::GOpen),
            (Coll::GOpen, Tok::Lit) => Some(Coll::GList { n: 1, comma: false }),
            (Coll::GList { n, comma: false }, Tok::Comma) => Some(Coll::GList { n, comma: true }),
            (Coll::GList { n, comma: true }, Tok::Lit) => Some(Coll::GList {
                n: n + 1,
                comma: false,
            }),
            _ => None,
        };
        if let Some(st) = next {
            self.coll = st;
            return;
        }
        // Not part of a collapsible list: write what is held, then the token.
        self.coll_flush();
        self.w.tok(t, space);
        if t == Tok::Open {
            self.coll = Coll::Open;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Normalizer::digest(s.as_bytes()).text.into()
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str)] = &[
            ("SELECT 1", "SELECT ?"),
            ("  select   *\n\tfrom t  where a=1 ", "select * from t where a=?"),
            ("SELECT * FROM t WHERE a = 'x' AND b = \"y\"", "SELECT * FROM t WHERE a = ? AND b = ?"),
            ("SELECT 'it''s', 'a\\'b', \"q\"\"q\"", "SELECT ?,?,?"),
            ("SELECT 1.5, .5, 1., 1e5, 2.5E-3, 1e+7, 0x1F, 0b101, X'AB', b'01', N'x', _utf8mb4'y'", "SELECT ?,?,?,?,?,?,?,?,?,?,?,?"),
            ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM t WHERE id IN (...)"),
            ("SELECT * FROM t WHERE id IN (?,?)", "SELECT * FROM t WHERE id IN (...)"),
            ("SELECT * FROM t WHERE id IN ( 7 )", "SELECT * FROM t WHERE id IN (...)"),
            ("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'),(3,'z')", "INSERT INTO t (a,b) VALUES (...)"),
            ("INSERT INTO t VALUES (1, NOW()), (2, NOW())", "INSERT INTO t VALUES (?,NOW()),(?,NOW())"),
            ("SELECT f(1, a)", "SELECT f(?,a)"),
            ("SELECT ((1,2),(3,4))", "SELECT ((...))"),
            ("SELECT a FROM t WHERE a = -5 AND b = +3", "SELECT a FROM t WHERE a = ? AND b = ?"),
            ("SELECT -5, a - 5, a-5, a - -5", "SELECT ?,a - ?,a-?,a - ?"),
            ("SELECT * FROM t WHERE a IN (-1, -2)", "SELECT * FROM t WHERE a IN (...)"),
            ("SELECT -a", "SELECT -a"),
            ("SELECT 1 -- comment\n, 2", "SELECT ?,?"),
            ("SELECT 1 --1", "SELECT ? -?"),
            ("SELECT 1 # comment\nFROM t", "SELECT ? FROM t"),
            ("SELECT /* c */ 1 /**/ FROM/*x*/t", "SELECT ? FROM t"),
            ("SELECT /*+ MAX_EXECUTION_TIME(1000) */ a FROM t", "SELECT a FROM t"),
            ("/*!40101 SET NAMES utf8 */", "SET NAMES utf8"),
            ("SELECT /*M!100000 1 + */ 2", "SELECT ? + ?"),
            ("SELECT /*! 2*3*/", "SELECT ?*?"),
            ("SELECT /*!50110 KEY_BLOCK_SIZE=1024 */", "SELECT KEY_BLOCK_SIZE=?"),
            ("SELECT `a b`, `x``y` FROM `T`", "SELECT `a b`,`x``y` FROM `T`"),
            ("SELECT 1abc, 0xZZ, 1e, t1.c, a.5b FROM 2t", "SELECT 1abc,0xZZ,1e,t1.c,a.5b FROM 2t"),
            ("SELECT 1;", "SELECT ?"),
            ("SELECT 1 ; ;", "SELECT ?"),
            ("SELECT 1; SELECT 2", "SELECT ?; SELECT ?"),
            ("", ""),
            ("   -- only a comment", ""),
            ("SELECT 'unterminated", "SELECT ?"),
            ("SELECT /* unterminated", "SELECT"),
            ("SELECT * FROM t WHERE id = ? LIMIT 10", "SELECT * FROM t WHERE id = ? LIMIT ?"),
            ("SELECT @a := 1, @@session.x", "SELECT @a := ?,@@session.x"),
            ("SELECT (1)", "SELECT (...)"),
            ("SELECT (1+2)", "SELECT (?+?)"),
            ("SELECT (1,a)", "SELECT (?,a)"),
            ("SELECT (1,(2))", "SELECT (?,(...))"),
            ("UPDATE t SET a = 1, b = 'x' WHERE c = 2", "UPDATE t SET a = ?,b = ? WHERE c = ?"),
            ("SELECT caf\u{e9} FROM t", "SELECT caf\u{e9} FROM t"),
        ];
        for (input, want) in cases {
            assert_eq!(&norm(input), want, "input {input:?}");
        }
    }

    #[test]
    fn literals_do_not_change_the_digest() {
        let a = Normalizer::digest(b"SELECT * FROM t WHERE id IN (1,2,3) AND n = 'bob' LIMIT 5");
        let b =
            Normalizer::digest(b"SELECT * FROM t WHERE id IN (9) AND n = \"al\\\"ice\" LIMIT 50");
        assert_eq!(a, b);
        let c = Normalizer::digest(b"SELECT * FROM t WHERE id IN (1,2,3) AND m = 'bob' LIMIT 5");
        assert_ne!(a.hash, c.hash);
        assert_eq!(a.hash, fnv1a(FNV_START, a.text.as_bytes()));
    }

    #[test]
    fn long_statements_are_cut_but_hashed_whole() {
        let mut n = Normalizer::new();
        n.feed(b"SELECT ");
        for i in 0..100_000 {
            n.feed(format!("c{i}, ").as_bytes());
        }
        n.feed(b"x FROM t");
        let d = n.finish();
        assert!(d.text.len() <= MAX_TEXT + 3, "{}", d.text.len());
        assert!(d.text.ends_with("..."));
        let mut n2 = Normalizer::new();
        n2.feed(b"SELECT ");
        for i in 0..100_000 {
            n2.feed(format!("c{i}, ").as_bytes());
        }
        n2.feed(b"y FROM t");
        assert_ne!(
            d.hash,
            n2.finish().hash,
            "the hash covers the text past the cut"
        );
        // A huge IN list collapses without holding anything.
        let mut n = Normalizer::new();
        n.feed(b"SELECT * FROM t WHERE id IN (");
        for i in 0..1_000_000 {
            n.feed(format!("{i},").as_bytes());
        }
        n.feed(b"0)");
        assert_eq!(&*n.finish().text, "SELECT * FROM t WHERE id IN (...)");
    }

    #[test]
    fn cut_on_a_character_boundary() {
        let mut s = String::from("SELECT ");
        while s.len() < 3 * MAX_TEXT {
            s.push('\u{e9}');
        }
        let d = Normalizer::digest(s.as_bytes());
        assert!(
            d.text.ends_with("\u{e9}..."),
            "{}",
            &d.text[d.text.len() - 8..]
        );
        assert!(d.text.len() <= MAX_TEXT + 3);
    }

    #[test]
    fn invalid_utf8_gives_valid_text() {
        let d = Normalizer::digest(b"SELECT \xff\xfe FROM `\x80\n` WHERE a = '\xc3'");
        assert_eq!(
            &*d.text,
            "SELECT \u{fffd}\u{fffd} FROM `\u{fffd} ` WHERE a = ?"
        );
    }

    #[test]
    fn reuse_after_finish() {
        let mut n = Normalizer::new();
        n.feed(b"SELECT 'open string /*! (1,");
        let _ = n.finish();
        n.feed(b"SELECT 1");
        assert_eq!(&*n.finish().text, "SELECT ?");
    }

    /// A small deterministic generator (no property-testing crate in the dev-dependencies).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn upto(&mut self, n: usize) -> usize {
            (self.next() % (n as u64 + 1)) as usize
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.upto(xs.len() - 1)]
        }
    }

    const PIECES: &[&str] = &[
        "SELECT", " ", "  ", "\n", "a", "t1", "`q``b`", "'s''t'", "'a\\'b'", "\"d\"", "1", "-",
        "--", "-- x\n", "# y\n", "/*", "*/", "/*!", "/*M!5", "/*+", "*", "(", ")", ",", ";", "?",
        ".", ".5", "1e", "1e-", "0x", "0xAF", "0b1", "X'", "_utf8'", "'", "=", "IN", "VALUES",
        "\\", "`", "\"", "1.5e+3", "where", "+", "\t", "é", "#", "\r\n",
    ];

    fn random_statement(rng: &mut Rng) -> Vec<u8> {
        let n = rng.upto(40);
        let mut s = Vec::new();
        for _ in 0..n {
            if rng.upto(20) == 0 {
                s.push(rng.next() as u8);
            } else {
                s.extend_from_slice(rng.pick(PIECES).as_bytes());
            }
        }
        s
    }

    fn chunked(stmt: &[u8], cuts: &[usize]) -> Digest {
        let mut n = Normalizer::new();
        let mut at = 0;
        for &c in cuts {
            n.feed(&stmt[at..c]);
            at = c;
        }
        n.feed(&stmt[at..]);
        n.finish()
    }

    #[test]
    fn chunking_never_changes_the_digest() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut reused = Normalizer::new();
        for _ in 0..3000 {
            let stmt = random_statement(&mut rng);
            let whole = Normalizer::digest(&stmt);
            assert!(whole.text.len() <= MAX_TEXT + 3);
            if !whole.text.contains('\u{fffd}') && !whole.text.ends_with("...") {
                assert_eq!(
                    whole.hash,
                    fnv1a(FNV_START, whole.text.as_bytes()),
                    "{stmt:?}"
                );
            }
            // Every single split point.
            for k in 0..=stmt.len() {
                assert_eq!(chunked(&stmt, &[k]), whole, "split at {k} of {stmt:?}");
            }
            // Byte by byte, and random pieces, on a reused normaliser.
            let mut cuts: Vec<usize> = (0..rng.upto(6)).map(|_| rng.upto(stmt.len())).collect();
            cuts.sort_unstable();
            assert_eq!(chunked(&stmt, &cuts), whole, "cuts {cuts:?} of {stmt:?}");
            for b in &stmt {
                reused.feed(std::slice::from_ref(b));
            }
            assert_eq!(reused.finish(), whole, "byte by byte {stmt:?}");
        }
    }

    #[test]
    fn statements_differing_in_literals_share_a_digest() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let lits = |rng: &mut Rng| -> String {
            match rng.upto(9) {
                0 => format!("{}", rng.next() % 100_000),
                1 => format!("-{}", rng.next() % 1000),
                2 => format!("{}.{}", rng.next() % 100, rng.next() % 100),
                3 => format!("{}e-{}", rng.next() % 10, rng.next() % 10),
                4 => format!("0x{:X}", rng.next() % 65536),
                5 => format!("'{}'", "x\\'y''z".repeat(rng.upto(3))),
                6 => format!("\"{}\"", "ab".repeat(rng.upto(3))),
                7 => format!("X'{:x}'", rng.next() % 256),
                8 => "?".into(),
                _ => format!("+{}", rng.next() % 10),
            }
        };
        for _ in 0..500 {
            let list = |rng: &mut Rng| -> String {
                let n = 1 + rng.upto(5);
                (0..n).map(|_| lits(rng)).collect::<Vec<_>>().join(", ")
            };
            let make = |rng: &mut Rng| {
                format!(
                    "SELECT a, {} FROM t WHERE b = {} AND c IN ({}) LIMIT {}; INSERT INTO u VALUES ({}), ({})",
                    lits(rng),
                    lits(rng),
                    list(rng),
                    lits(rng),
                    list(rng),
                    list(rng)
                )
            };
            let a = make(&mut rng);
            let b = make(&mut rng);
            assert_eq!(
                Normalizer::digest(a.as_bytes()),
                Normalizer::digest(b.as_bytes()),
                "{a} / {b}"
            );
        }
        assert_eq!(
            &*Normalizer::digest(b"SELECT a, 1 FROM t WHERE b = 2 AND c IN (3) LIMIT 4; INSERT INTO u VALUES (5), (6)").text,
            "SELECT a,? FROM t WHERE b = ? AND c IN (...) LIMIT ?; INSERT INTO u VALUES (...)"
        );
    }
}
