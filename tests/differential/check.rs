//! The model: given what the client sent ([`Plan`]), what it got back ([`Observed`]) and what
//! the backends recorded ([`Record`]s), list every way the proxy departed from a faithful,
//! in-order relay. Each [`Problem`] has a short class (for the run's summary) and a sentence.
//!
//! The expected outcome of a connection:
//! - it must end right after the response to the first request that ends it (an early answer,
//!   an invalid request, or `Connection: close` from the client); it may also end after a
//!   close-delimited response or after a proxy error for a request the backend dropped;
//! - every request before that end gets exactly one final response, in order, preceded by the
//!   1xx the backend sent; nothing comes after it;
//! - every answered request reached a backend exactly once (an idempotent one may be replayed
//!   after the backend dropped it unanswered), whole, with the same method, target, decoded
//!   body and trailers, no chunk extensions, no hop-by-hop fields, an X-Forwarded-For;
//! - the invalid request reaches a backend at most as an incomplete request; nothing the
//!   client did not get an answer for reaches a backend at all.

use super::backend::{short, Record, Status};
use super::driver::{End, Got, Observed, HOLD_WAIT, READ_TIMEOUT};
use super::plan::{response_body, Method, Plan, Request};
use crate::common::client::Framing;
use crate::common::sha256_hex;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Clone, Debug)]
pub struct Problem {
    pub class: &'static str,
    pub seq: Option<usize>,
    pub text: String,
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    /// A problem with request `seq`.
    fn add(&mut self, class: &'static str, seq: usize, text: String) {
        self.0.push(Problem {
            class,
            seq: Some(seq),
            text,
        });
    }

    /// A problem with the connection as a whole.
    fn add_conn(&mut self, class: &'static str, text: String) {
        self.0.push(Problem {
            class,
            seq: None,
            text,
        });
    }
}

pub fn check(plan: &Plan, obs: &Observed, recs: &[Record]) -> Vec<Problem> {
    let n = plan.requests.len();
    let expected = plan
        .requests
        .iter()
        .position(Request::ends_connection)
        .map_or(n, |k| k + 1);
    let mut p = Problems::default();
    for (i, got) in obs.got.iter().enumerate() {
        if i < expected {
            check_response(plan, &plan.requests[i], got, &mut p);
        } else {
            p.add(
                "extra-response",
                i,
                format!(
                    "a response came after the connection should have closed: {}",
                    got.summary()
                ),
            );
        }
    }
    check_end(plan, obs, expected, &mut p);
    check_backend(plan, recs, obs.got.len().min(expected), &mut p);
    for &k in &obs.held {
        p.add(
            "early-answer-held",
            k,
            format!(
                "the backend's early 403 was not relayed while the request body was incomplete \
                 (the client waited {HOLD_WAIT:?}, then sent the rest)"
            ),
        );
    }
    p.0
}

/// One final response against the request it answers.
fn check_response(plan: &Plan, r: &Request, got: &Got, p: &mut Problems) {
    let i = r.seq;
    if let Some(inv) = &r.invalid {
        if got.status != 400 || !got.by_proxy() {
            p.add(
                "invalid-not-refused",
                i,
                format!(
                    "invalid request ({inv:?}) answered {}, expected the proxy's own 400",
                    got.summary()
                ),
            );
        }
        return;
    }
    if r.behave.early {
        if got.status != 403 || got.header("x-seq") != Some(&i.to_string()) {
            p.add(
                "early-answer",
                i,
                format!("expected the backend's early 403, got {}", got.summary()),
            );
        }
        return;
    }
    if r.behave.drop && got.by_proxy() && got.status >= 500 {
        return; // the backend closed without answering: a 5xx from the proxy is right
    }
    if got.by_proxy() {
        p.add(
            "proxy-error",
            i,
            format!("the proxy answered {} itself", got.summary()),
        );
        return;
    }
    if got.header("x-seq") != Some(&i.to_string()) {
        p.add(
            "wrong-response",
            i,
            format!("got the response of another request: {}", got.summary()),
        );
        return;
    }
    if got.status != r.behave.status {
        p.add(
            "status",
            i,
            format!("status {} instead of {}", got.status, r.behave.status),
        );
    }
    check_echo(r, got, p);
    check_interim(r, got, p);
    check_response_body(plan, r, got, p);
}

/// The body digest the backend echoed against the body the client sent.
fn check_echo(r: &Request, got: &Got, p: &mut Problems) {
    let sent = (r.body.len().to_string(), sha256_hex(&r.body));
    let echoed = (
        got.header("x-body-len").unwrap_or("-").to_string(),
        got.header("x-body-sha256").unwrap_or("-").to_string(),
    );
    if sent != echoed {
        p.add(
            "request-body",
            r.seq,
            format!(
                "backend decoded {} B sha {}, client sent {} B sha {}",
                echoed.0,
                short(&echoed.1),
                sent.0,
                short(&sent.1)
            ),
        );
    }
}

/// RFC 9110 §15.2: the 1xx (other than 101) the backend sent reach the client, in order.
fn check_interim(r: &Request, got: &Got, p: &mut Problems) {
    let codes: Vec<u16> = got.interim.iter().map(|x| x.status).collect();
    if codes != r.behave.interim {
        p.add(
            "interim-1xx",
            r.seq,
            format!(
                "client got 1xx {codes:?}, backend sent {:?}",
                r.behave.interim
            ),
        );
        return;
    }
    let link = format!("</s/{}.css>; rel=preload", r.seq);
    for x in got.interim.iter().filter(|x| x.status == 103) {
        if x.link.as_deref() != Some(&link) {
            p.add(
                "interim-1xx",
                r.seq,
                format!("103 lost its Link header: {:?}", x.link),
            );
        }
    }
}

fn check_response_body(plan: &Plan, r: &Request, got: &Got, p: &mut Problems) {
    let bodiless = r.method == Method::Head || r.behave.status == 204;
    let len = if bodiless { 0 } else { r.behave.len };
    let want = response_body(plan.conn, r.seq, len);
    if got.body_len != len || got.body_sha != sha256_hex(&want) {
        p.add(
            "response-body",
            r.seq,
            format!(
                "client got {} B sha {} ({:?}), backend sent {len} B sha {} ({:?})",
                got.body_len,
                short(&got.body_sha),
                got.framing,
                short(&sha256_hex(&want)),
                r.behave.framing
            ),
        );
    }
}

/// How and when the connection ended, against when it had to (or could).
fn check_end(plan: &Plan, obs: &Observed, expected: usize, p: &mut Problems) {
    let a = obs.got.len();
    let closed = matches!(obs.end, End::Eof | End::Reset);
    if a >= expected {
        let why = plan.requests[expected - 1].ends_connection();
        match &obs.end {
            End::Extra(bytes) => p.add_conn(
                "extra-response",
                format!("bytes after the last response: {bytes:?}"),
            ),
            End::Garbled(m) => p.add_conn(
                "extra-response",
                format!("unreadable bytes after the last response: {m}"),
            ),
            End::Timeout(_) if why => p.add(
                "not-closed",
                expected - 1,
                format!(
                    "connection still open {READ_TIMEOUT:?} after the response to #{} ({})",
                    expected - 1,
                    ending_reason(&plan.requests[expected - 1])
                ),
            ),
            _ => {}
        }
        return;
    }
    // Fewer responses than expected: fine only right after a response that may end it.
    let may_end = a > 0 && {
        let (last, r) = (&obs.got[a - 1], &plan.requests[a - 1]);
        last.framing == Framing::Close || (r.behave.drop && last.by_proxy())
    };
    if may_end && closed {
        return;
    }
    let prev = if a > 0 {
        format!(
            " (previous: #{} {})",
            a - 1,
            plan.requests[a - 1].behave.encode()
        )
    } else {
        String::new()
    };
    let head_answered_by_proxy =
        a > 0 && plan.requests[a - 1].method == Method::Head && obs.got[a - 1].by_proxy();
    let (class, what) = match &obs.end {
        End::Timeout(doing) => ("stall", format!("no byte for {READ_TIMEOUT:?} ({doing})")),
        End::Eof => (
            "closed-early",
            "the proxy closed the connection".to_string(),
        ),
        End::Reset => ("reset", "the connection was reset".to_string()),
        End::Garbled(m) if head_answered_by_proxy => (
            "garbled",
            format!("{m}: the proxy's own answer to a HEAD request carried a body"),
        ),
        End::Garbled(m) => ("garbled", m.clone()),
        End::Clean | End::Extra(_) => ("garbled", format!("{:?}", obs.end)),
    };
    p.add(
        class,
        a,
        format!(
            "no response to #{a} of {expected} expected: {what}{prev}; {} bytes of {} written{}",
            obs.written,
            obs.total,
            obs.write_error
                .as_ref()
                .map_or(String::new(), |e| format!(" (write error: {e})"))
        ),
    );
}

fn ending_reason(r: &Request) -> &'static str {
    if r.invalid.is_some() {
        "invalid request"
    } else if r.behave.early {
        "early answer"
    } else {
        "client sent Connection: close"
    }
}

/// The backend's records against the requests and the responses.
fn check_backend(plan: &Plan, recs: &[Record], answered: usize, p: &mut Problems) {
    let n = plan.requests.len();
    let mut by_seq: BTreeMap<usize, Vec<&Record>> = BTreeMap::new();
    for rec in recs {
        match rec.seq {
            Some(s) if s < n => by_seq.entry(s).or_default().push(rec),
            _ => p.add_conn(
                "stray-request",
                format!(
                    "the backend got a request the client never sent: {}",
                    rec.summary()
                ),
            ),
        }
    }
    for r in &plan.requests {
        let got = by_seq.get(&r.seq).map_or(&[][..], Vec::as_slice);
        if r.seq >= answered {
            check_unanswered(r, got, p);
        } else if r.invalid.is_some() {
            check_invalid_at_backend(r, got, p);
        } else {
            check_forwarded(r, got, p);
        }
    }
    let order: Vec<usize> = recs.iter().filter_map(|r| r.seq).collect();
    if order.windows(2).any(|w| w[1] < w[0]) {
        p.add_conn(
            "order",
            format!("requests reached the backends in the order {order:?}"),
        );
    }
}

/// A request the client got no answer for must not have reached a backend (the invalid one
/// may have, in part).
fn check_unanswered(r: &Request, got: &[&Record], p: &mut Problems) {
    for rec in got {
        let partial = matches!(rec.status, Status::Incomplete(_) | Status::InProgress);
        if r.invalid.is_some() && partial {
            continue;
        }
        p.add(
            "forwarded-unanswered",
            r.seq,
            format!(
                "reached the backend but the client got no response to it: {}",
                rec.summary()
            ),
        );
    }
}

fn check_invalid_at_backend(r: &Request, got: &[&Record], p: &mut Problems) {
    for rec in got {
        if !matches!(rec.status, Status::Incomplete(_) | Status::InProgress) {
            p.add(
                "invalid-forwarded",
                r.seq,
                format!("the invalid request reached the backend: {}", rec.summary()),
            );
        }
    }
}

fn check_forwarded(r: &Request, got: &[&Record], p: &mut Problems) {
    let Some(first) = got.first() else {
        p.add(
            "missing-at-backend",
            r.seq,
            "answered, but never reached a backend".into(),
        );
        return;
    };
    if got.len() > 1 {
        let class = if !r.method.idempotent() {
            "non-idempotent-replayed"
        } else if !r.behave.drop {
            "duplicated"
        } else {
            ""
        };
        if !class.is_empty() {
            let all: Vec<String> = got.iter().map(|x| x.summary()).collect();
            p.add(
                class,
                r.seq,
                format!("reached a backend {} times: {}", got.len(), all.join(" / ")),
            );
        }
    }
    let want = if r.behave.early {
        Status::HeadOnly
    } else {
        Status::Complete
    };
    if first.status != want {
        p.add(
            "backend-request",
            r.seq,
            format!("backend: {} (expected {want:?})", first.summary()),
        );
        return;
    }
    compare_fields(r, first, p);
}

/// The semantic fields of one forwarded request.
fn compare_fields(r: &Request, rec: &Record, p: &mut Problems) {
    let mut diffs = String::new();
    if rec.method != r.method.as_str() || rec.target != r.target {
        let _ = write!(diffs, " request line {} {};", rec.method, rec.target);
    }
    if rec.status == Status::Complete
        && (rec.body_len != r.body.len() as u64 || rec.body_sha != sha256_hex(&r.body))
    {
        let _ = write!(
            diffs,
            " body {} B sha {} instead of {} B sha {};",
            rec.body_len,
            short(&rec.body_sha),
            r.body.len(),
            short(&sha256_hex(&r.body))
        );
    }
    if rec.status == Status::Complete && !same_fields(&rec.trailers, r.trailers()) {
        let _ = write!(
            diffs,
            " trailers {:?} instead of {:?};",
            rec.trailers,
            r.trailers()
        );
    }
    if rec.pad_len != r.pad {
        let _ = write!(diffs, " X-Pad {} B instead of {};", rec.pad_len, r.pad);
    }
    if !rec.xff {
        diffs.push_str(" no X-Forwarded-For;");
    }
    if !diffs.is_empty() {
        p.add(
            "backend-request",
            r.seq,
            format!("backend saw{diffs} ({})", rec.summary()),
        );
    }
    if !rec.hop_fields.is_empty() {
        p.add(
            "hop-by-hop-forwarded",
            r.seq,
            format!(
                "hop-by-hop fields reached the backend: {:?}",
                rec.hop_fields
            ),
        );
    }
    if rec.ext_seen {
        p.add(
            "chunk-ext-forwarded",
            r.seq,
            "a forwarded chunk size line still carried an extension".into(),
        );
    }
}

fn same_fields(a: &[(String, String)], b: &[(String, String)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0.eq_ignore_ascii_case(&y.0) && x.1 == y.1)
}

/// A readable account of one failed connection: the problems, then request by request what
/// the client sent, what the backends saw and what the client got.
pub fn report(plan: &Plan, obs: &Observed, recs: &[Record], problems: &[Problem]) -> String {
    let mut s = format!(
        "sequence seed {} (replay: DIFF_SEED={}), conn {}, {} requests:\n  problems:\n",
        plan.seed,
        plan.seed,
        plan.conn,
        plan.requests.len()
    );
    for pr in problems.iter().take(12) {
        let seq = pr.seq.map_or(String::new(), |s| format!(" #{s}"));
        let _ = writeln!(s, "    [{}]{seq} {}", pr.class, pr.text);
    }
    if problems.len() > 12 {
        let _ = writeln!(s, "    ... and {} more", problems.len() - 12);
    }
    s.push_str("  requests (sent / backend / client):\n");
    for r in &plan.requests {
        let _ = writeln!(s, "    {}", r.summary());
        for rec in recs.iter().filter(|x| x.seq == Some(r.seq)) {
            let _ = writeln!(s, "        backend: {}", rec.summary());
        }
        if let Some(g) = obs.got.get(r.seq) {
            let _ = writeln!(s, "        client:  {}", g.summary());
        }
    }
    for g in obs.got.iter().skip(plan.requests.len()) {
        let _ = writeln!(s, "    extra response: {}", g.summary());
    }
    for rec in recs
        .iter()
        .filter(|x| x.seq.is_none_or(|s| s >= plan.requests.len()))
    {
        let _ = writeln!(s, "    stray at backend: {}", rec.summary());
    }
    let _ = writeln!(
        s,
        "  end: {:?}; wrote {}/{} bytes{}",
        obs.end,
        obs.written,
        obs.total,
        obs.write_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (write error: {e})"))
    );
    s
}
