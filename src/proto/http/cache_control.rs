//! `Cache-Control` (RFC 9111 §5.2) read from every field line of a head. Unknown directives are
//! ignored (§5.2.3); a directive whose argument does not parse is treated as the RFC says for
//! each: a `max-age` that is not a number makes the response stale (§4.2.1 "invalid"), a
//! duplicated one likewise. Delta-seconds over 2^31 are capped at 2^31 (§1.2.2).

/// Every directive the cache acts on, from the request or from the response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    /// `no-cache` (any form: the field-name list of the qualified form is not honoured
    /// selectively; the whole response is revalidated, which §5.2.2.4 allows).
    pub no_cache: bool,
    pub no_transform: bool,
    pub only_if_cached: bool,
    pub public: bool,
    /// `private` (qualified or not: a shared cache does not store it either way).
    pub private: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub immutable: bool,
    /// `Some(None)` for an invalid or repeated value.
    pub max_age: Option<Option<u32>>,
    pub s_maxage: Option<Option<u32>>,
    /// `max-stale` alone is `Some(u32::MAX)`.
    pub max_stale: Option<u32>,
    pub min_fresh: Option<u32>,
    pub stale_while_revalidate: Option<u32>,
    pub stale_if_error: Option<u32>,
}

/// §1.2.2: a delta-seconds too large is 2^31.
const DELTA_CAP: u64 = 1 << 31;

fn delta(v: &[u8]) -> Option<u32> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for d in v {
        n = (n * 10 + (d - b'0') as u64).min(DELTA_CAP);
    }
    Some(n as u32)
}

impl CacheControl {
    /// Add the directives of one field value.
    pub fn add(&mut self, value: &[u8]) {
        for item in split_list(value) {
            let (name, arg) = match memchr::memchr(b'=', item) {
                Some(eq) => (
                    item[..eq].trim_ascii(),
                    Some(unquote(item[eq + 1..].trim_ascii())),
                ),
                None => (item, None),
            };
            let is = |d: &str| name.eq_ignore_ascii_case(d.as_bytes());
            let n = arg.and_then(delta);
            if is("no-store") {
                self.no_store = true;
            } else if is("no-cache") {
                self.no_cache = true;
            } else if is("no-transform") {
                self.no_transform = true;
            } else if is("only-if-cached") {
                self.only_if_cached = true;
            } else if is("public") {
                self.public = true;
            } else if is("private") {
                self.private = true;
            } else if is("must-revalidate") {
                self.must_revalidate = true;
            } else if is("proxy-revalidate") {
                self.proxy_revalidate = true;
            } else if is("must-understand") {
                self.must_understand = true;
            } else if is("immutable") {
                self.immutable = true;
            } else if is("max-age") {
                self.max_age = Some(if self.max_age.is_some() { None } else { n });
            } else if is("s-maxage") {
                self.s_maxage = Some(if self.s_maxage.is_some() { None } else { n });
            } else if is("max-stale") {
                self.max_stale = Some(match arg {
                    None => u32::MAX,
                    Some(_) => n.unwrap_or(0),
                });
            } else if is("min-fresh") {
                self.min_fresh = n.or(Some(0));
            } else if is("stale-while-revalidate") {
                self.stale_while_revalidate = n;
            } else if is("stale-if-error") {
                self.stale_if_error = n;
            }
        }
    }

    /// The directives of every value given.
    pub fn of<'a>(values: impl Iterator<Item = &'a [u8]>) -> CacheControl {
        let mut cc = CacheControl::default();
        for v in values {
            cc.add(v);
        }
        cc
    }
}

/// The items of a comma-separated list, trimmed, empty ones skipped; commas inside a quoted
/// string do not split.
pub fn split_list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = v;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let mut quoted = false;
        let mut escaped = false;
        let mut end = rest.len();
        for (i, &b) in rest.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == b',' && !quoted {
                end = i;
                break;
            }
        }
        let item = rest[..end].trim_ascii();
        rest = rest.get(end + 1..).unwrap_or(&[]);
        if !item.is_empty() {
            return Some(item);
        }
    })
}

fn unquote(v: &[u8]) -> &[u8] {
    if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives() {
        let cc = CacheControl::of(
            [
                &b"public, max-age=60, S-MAXAGE=\"30\""[..],
                b"stale-while-revalidate=5,,stale-if-error=99999999999",
            ]
            .into_iter(),
        );
        assert!(cc.public && !cc.private);
        assert_eq!(cc.max_age, Some(Some(60)));
        assert_eq!(cc.s_maxage, Some(Some(30)));
        assert_eq!(cc.stale_while_revalidate, Some(5));
        assert_eq!(cc.stale_if_error, Some(1 << 31));
        let cc =
            CacheControl::of([&b"max-age=1, max-age=2, private=\"set-cookie, x\""[..]].into_iter());
        assert_eq!(cc.max_age, Some(None), "a repeated max-age is invalid");
        assert!(cc.private);
        let cc = CacheControl::of(
            [&b"max-age=abc, max-stale, no-cache=\"a,b\", foo=\"x,max-age=9\""[..]].into_iter(),
        );
        assert_eq!(cc.max_age, Some(None));
        assert_eq!(cc.max_stale, Some(u32::MAX));
        assert!(cc.no_cache);
        assert_eq!(
            split_list(b" a , \"b,c\" ,, d").collect::<Vec<_>>(),
            vec![&b"a"[..], b"\"b,c\"", b"d"]
        );
    }
}
