//! From a response head to a stored entry (fields kept, freshness, Vary values), merging a
//! 304 into one, and the request a fetch sends.

use super::*;

/// Rewrite the request head in `out` (the head alone: the request has no body) for a fetch
/// the cache makes: the client's conditionals and Range go (the cache wants the whole
/// response and answers those itself), the stored entry's validators come in.
pub fn rewrite_request(out: &mut Vec<u8>, validators: Option<&Entry>) {
    const DROP: [&[u8]; 6] = [
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
    ];
    let mut next = Vec::with_capacity(out.len() + 96);
    let mut lines = out.split(|&b| b == b'\n');
    if let Some(first) = lines.next() {
        next.extend_from_slice(first);
        next.push(b'\n');
    }
    for line in lines {
        let l = line.strip_suffix(b"\r").unwrap_or(line);
        if l.is_empty() {
            break;
        }
        let name = l.split(|&b| b == b':').next().unwrap_or_default();
        if DROP.iter().any(|d| name.eq_ignore_ascii_case(d)) {
            continue;
        }
        next.extend_from_slice(line);
        next.push(b'\n');
    }
    if let Some(e) = validators {
        if let Some(t) = &e.etag {
            field(&mut next, "If-None-Match", t);
        }
        if let Some(lm) = e.last_modified {
            next.extend_from_slice(b"If-Modified-Since: ");
            date::write(lm, &mut next);
            next.extend_from_slice(b"\r\n");
        }
    }
    next.extend_from_slice(b"\r\n");
    *out = next;
}

/// Fields a stored response does not keep: hop-by-hop, framing, and those recomputed.
pub(super) fn dropped_field(name: &[u8]) -> bool {
    const DROP: [&[u8]; 11] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"trailer",
        b"content-length",
        b"age",
        b"x-cache",
        b"proxy-authenticate",
    ];
    DROP.iter().any(|d| name.eq_ignore_ascii_case(d))
}

/// What storing reads of a response head's fields.
pub(super) struct Facts {
    pub(super) resp: policy::Response,
    pub(super) etag: Option<Bytes>,
    pub(super) vary: Vec<Box<str>>,
    /// Fields named by `Connection` (hop-by-hop too).
    pub(super) connection_named: Vec<Vec<u8>>,
}

pub(super) fn facts(buf: &[u8], status: u16, headers: &[HeaderSpan]) -> Facts {
    let vals = |n: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.of(buf).eq_ignore_ascii_case(n.as_bytes()))
            .map(move |h| h.value.of(buf))
    };
    let cc = CacheControl::of(vals("cache-control"));
    let mut vary = Vec::new();
    let mut vary_star = false;
    for v in vals("vary") {
        for item in split_list(v) {
            if item == b"*" {
                vary_star = true;
            } else if let Ok(s) = std::str::from_utf8(item) {
                vary.push(s.to_ascii_lowercase().into_boxed_str());
            }
        }
    }
    let etag = vals("etag").next().map(Bytes::copy_from_slice);
    let last_modified = vals("last-modified").next().and_then(date::parse);
    // §1.2.2: delta-seconds beyond 2^31 are 2^31 (and a huge Age cannot overflow later).
    let age = vals("age")
        .next()
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok())
        .unwrap_or(0)
        .min(1 << 31);
    let connection_named = vals("connection")
        .flat_map(split_list)
        .map(|n| n.to_ascii_lowercase())
        .collect();
    Facts {
        resp: policy::Response {
            status,
            cc,
            expires: vals("expires").next().map(date::parse),
            date: vals("date").next().and_then(date::parse),
            last_modified,
            age,
            set_cookie: vals("set-cookie").next().is_some(),
            vary_star,
            has_validator: etag.is_some() || last_modified.is_some(),
        },
        etag,
        vary,
        connection_named,
    }
}

/// The stored fields of a response head: end-to-end ones, as sent.
pub(super) fn stored_fields(
    buf: &[u8],
    headers: &[HeaderSpan],
    named: &[Vec<u8>],
    out: &mut Vec<u8>,
) {
    for h in headers {
        let name = h.name.of(buf);
        if dropped_field(name) || named.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.of(buf));
        out.extend_from_slice(b"\r\n");
    }
}

/// Build the entry for a response (head in `head_buf`, whole body in `body`).
pub(super) fn entry_for(
    plan: &Plan,
    head_buf: &[u8],
    resp: &ResponseHead,
    f: &Facts,
    body: Bytes,
) -> Entry {
    let response_ms = now_ms();
    let mut fields = Vec::with_capacity(resp.head_len);
    stored_fields(head_buf, &resp.headers, &f.connection_named, &mut fields);
    let v = RequestView {
        buf: &plan.head_bytes,
        host: None,
        path: &[],
        target: &[],
        headers: &plan.headers,
    };
    let vary = f
        .vary
        .iter()
        .map(|n| (n.clone(), cache::vary_value(n, v.header_values(n))))
        .collect();
    Entry::new(
        resp.status,
        Bytes::copy_from_slice(crate::proto::http::write::reason(head_buf, resp.head_len)),
        Bytes::from(fields),
        body,
        response_ms,
        policy::initial_age_ms(&f.resp, plan.request_ms, response_ms),
        policy::Stored {
            lifetime: policy::lifetime(&f.resp, response_ms / 1000),
            cc: f.resp.cc,
        },
        f.etag.clone(),
        f.resp.last_modified,
        vary,
        f.resp.cc.public || f.resp.cc.s_maxage.is_some() || f.resp.cc.must_revalidate,
    )
}

/// A 304 merged into the stored entry (§4.3.4): the 304's fields replace the stored ones of
/// the same name; the body stays.
pub(super) fn merged(
    plan: &Plan,
    old: &Entry,
    head_buf: &[u8],
    resp: &ResponseHead,
) -> (Option<Entry>, Option<Entry>) {
    let f = facts(head_buf, resp.status, &resp.headers);
    let mut fields = Vec::with_capacity(old.fields.len() + resp.head_len);
    let mut new_fields = Vec::new();
    stored_fields(
        head_buf,
        &resp.headers,
        &f.connection_named,
        &mut new_fields,
    );
    let replaced = |name: &[u8]| {
        resp.headers
            .iter()
            .any(|h| h.name.of(head_buf).eq_ignore_ascii_case(name))
    };
    for line in old.fields.split_inclusive(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if !replaced(name) || name.eq_ignore_ascii_case(b"content-type") {
            fields.extend_from_slice(line);
        }
    }
    for line in new_fields.split_inclusive(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if !name.eq_ignore_ascii_case(b"content-type") {
            fields.extend_from_slice(line);
        }
    }
    // The merged fields decide freshness from now on.
    let mut all = Vec::with_capacity(fields.len() + 32);
    all.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    all.extend_from_slice(&fields);
    all.extend_from_slice(b"\r\n");
    let mf = match crate::proto::http::parse::parse_response(
        &all,
        Method::Get,
        all.len() + 1,
        1000,
        Vec::new(),
    ) {
        Ok(crate::proto::http::Status::Complete(h)) => facts(&all, old.status, &h.headers),
        _ => f,
    };
    let response_ms = now_ms();
    let build = |fields: Vec<u8>| {
        Entry::new(
            old.status,
            old.reason.clone(),
            Bytes::from(fields),
            old.body.clone(),
            response_ms,
            policy::initial_age_ms(&mf.resp, plan.request_ms, response_ms),
            policy::Stored {
                lifetime: policy::lifetime(&mf.resp, response_ms / 1000),
                cc: mf.resp.cc,
            },
            mf.etag.clone().or_else(|| old.etag.clone()),
            mf.resp.last_modified.or(old.last_modified),
            old.vary.clone(),
            old.auth_ok,
        )
    };
    // What may be stored: the merged response must still be storable (§3; Set-Cookie aside,
    // which is simply never stored), and without the cookie.
    let mut facts_no_cookie = mf.resp;
    facts_no_cookie.set_cookie = false;
    let storable = policy::not_storable(&plan.req, &facts_no_cookie).is_none();
    let has_cookie = mf.resp.set_cookie;
    let stored = storable.then(|| {
        let without: Vec<u8> = fields
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| {
                let name = l.split(|&b| b == b':').next().unwrap_or_default();
                !name.eq_ignore_ascii_case(b"set-cookie")
            })
            .flatten()
            .copied()
            .collect();
        build(without)
    });
    // This client's answer differs from the stored copy only when it carries a cookie.
    let mine = (has_cookie || stored.is_none()).then(|| build(fields));
    (mine, stored)
}

/// A copy of an entry (for an answer that must not share the stored one).
pub(super) fn clone_entry(e: &Entry) -> Entry {
    Entry::new(
        e.status,
        e.reason.clone(),
        e.fields.clone(),
        e.body.clone(),
        e.response_ms,
        e.initial_age_ms,
        e.stored,
        e.etag.clone(),
        e.last_modified,
        e.vary.clone(),
        e.auth_ok,
    )
}
