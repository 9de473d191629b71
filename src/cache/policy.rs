//! RFC 9111 as decisions over plain values, so each rule is a unit test: may a response be
//! stored (§3), how long it stays fresh (§4.2.1, heuristics §4.2.2), how old it is (§4.2.3),
//! and what a request may be answered with (§4, §5.2.1, RFC 5861).

use crate::proto::http::cache_control::CacheControl;

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1 "heuristically
/// cacheable").
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Statuses this cache understands, for `must-understand` (§5.2.2.3): only those may be
/// stored when the response carries it.
fn understood(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The response facts storing needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Response {
    pub status: u16,
    pub cc: CacheControl,
    /// An `Expires` field was present; its value when it parsed.
    pub expires: Option<Option<u64>>,
    pub date: Option<u64>,
    pub last_modified: Option<u64>,
    /// `Age` in seconds.
    pub age: u64,
    pub set_cookie: bool,
    pub vary_star: bool,
    /// The response carries `Pragma: no-cache` (ignored for responses: §5.4).
    pub has_validator: bool,
}

/// The request facts storing and serving need.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request {
    pub cc: CacheControl,
    /// `Pragma: no-cache` without any `Cache-Control` (§5.4).
    pub pragma_no_cache: bool,
    pub authorization: bool,
}

/// Why a response is not stored (for the debug log and tests).
pub fn not_storable(req: &Request, resp: &Response) -> Option<&'static str> {
    if req.cc.no_store {
        return Some("request no-store");
    }
    if resp.cc.no_store {
        return Some("response no-store");
    }
    if resp.cc.private {
        return Some("private");
    }
    // §3: a final status; 206 and 304 are not stored whole responses (partial content is
    // not kept here); any other status may be stored with explicit freshness, unless
    // `must-understand` asks for a status this cache knows.
    if resp.status < 200 || resp.status == 206 || resp.status == 304 {
        return Some("not a storable status");
    }
    if resp.cc.must_understand && !understood(resp.status) {
        return Some("must-understand with a status not understood");
    }
    if resp.vary_star {
        return Some("Vary: *");
    }
    // Serving one client's cookie to another is the classic shared-cache leak; Varnish and
    // nginx do not store these either.
    if resp.set_cookie {
        return Some("Set-Cookie");
    }
    if req.authorization
        && !(resp.cc.public || resp.cc.s_maxage.is_some() || resp.cc.must_revalidate)
    {
        return Some("Authorization without public, s-maxage or must-revalidate");
    }
    let explicit = resp.cc.public
        || resp.cc.max_age.is_some()
        || resp.cc.s_maxage.is_some()
        || resp.expires.is_some();
    if !explicit && !heuristically_cacheable(resp.status) {
        return Some("no explicit freshness for this status");
    }
    if !explicit && resp.last_modified.is_none() && !resp.has_validator {
        // Nothing to compute a heuristic from, and nothing to revalidate with: it would be
        // stale at once and could only ever be fetched again.
        return Some("no freshness and no validator");
    }
    None
}

/// Heuristic freshness: 10 % of the time since Last-Modified, at most a day (§4.2.2).
const HEURISTIC_MAX: u64 = 86_400;

/// Freshness lifetime in seconds (§4.2.1): s-maxage, then max-age, then Expires − Date, then
/// the heuristic for heuristically cacheable statuses. An invalid directive value or Expires
/// makes it 0 (stale at once).
pub fn lifetime(resp: &Response, response_time: u64) -> u64 {
    if let Some(v) = resp.cc.s_maxage {
        return v.map_or(0, u64::from);
    }
    if let Some(v) = resp.cc.max_age {
        return v.map_or(0, u64::from);
    }
    if let Some(exp) = resp.expires {
        let date = resp.date.unwrap_or(response_time);
        return exp.map_or(0, |e| e.saturating_sub(date));
    }
    if heuristically_cacheable(resp.status) || resp.cc.public {
        if let Some(lm) = resp.last_modified {
            let date = resp.date.unwrap_or(response_time);
            return (date.saturating_sub(lm) / 10).min(HEURISTIC_MAX);
        }
    }
    0
}

/// The initial age of a response (§4.2.3), in milliseconds: what its `Age` said plus the time
/// it took to come, or how old its `Date` says it is, whichever is more. Times in ms.
pub fn initial_age_ms(resp: &Response, request_ms: u64, response_ms: u64) -> u64 {
    let apparent = resp
        .date
        .map_or(0, |d| response_ms.saturating_sub(d.saturating_mul(1000)));
    let corrected = resp
        .age
        .saturating_mul(1000)
        .saturating_add(response_ms.saturating_sub(request_ms));
    apparent.max(corrected)
}

/// What a stored response may be used for, for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Fresh (or stale within the request's max-stale): answer from the cache.
    Fresh,
    /// Stale within the request's `max-stale`: answer from the cache, marked stale.
    StaleAllowed,
    /// Stale within `stale-while-revalidate`: answer now, refresh after.
    StaleRevalidate,
    /// Ask the origin (conditionally, when the entry has a validator).
    Validate,
}

/// The parts of a stored response that serving decides on.
#[derive(Clone, Copy, Debug)]
pub struct Stored {
    pub lifetime: u64,
    pub cc: CacheControl,
}

/// May the stored response answer this request, `age_ms` old?
pub fn usable(stored: &Stored, req: &Request, age_ms: u64) -> Use {
    if req.cc.no_cache || req.pragma_no_cache || stored.cc.no_cache {
        return Use::Validate;
    }
    let life_ms = stored.lifetime.saturating_mul(1000);
    if let Some(Some(max)) = req.cc.max_age {
        if age_ms > u64::from(max) * 1000 {
            return Use::Validate;
        }
    }
    if let Some(Some(0)) | Some(None) = req.cc.max_age {
        return Use::Validate;
    }
    let fresh = life_ms > age_ms;
    if fresh {
        let left = life_ms - age_ms;
        if let Some(min) = req.cc.min_fresh {
            if left < u64::from(min) * 1000 {
                return Use::Validate;
            }
        }
        return Use::Fresh;
    }
    let stale_ms = age_ms - life_ms;
    // §4.2.4 / §5.2.2.2: must-revalidate, proxy-revalidate and s-maxage (for a shared cache)
    // forbid serving stale without validation, whatever the request allows.
    let strict =
        stored.cc.must_revalidate || stored.cc.proxy_revalidate || stored.cc.s_maxage.is_some();
    if strict {
        return Use::Validate;
    }
    if let Some(ms) = req.cc.max_stale {
        if stale_ms <= u64::from(ms).saturating_mul(1000) {
            return Use::StaleAllowed;
        }
    }
    if let Some(swr) = stored.cc.stale_while_revalidate {
        if stale_ms <= u64::from(swr) * 1000 {
            return Use::StaleRevalidate;
        }
    }
    Use::Validate
}

/// After the origin failed (5xx or unreachable), may the stale response be used (RFC 5861
/// `stale-if-error`, from the response or the request)?
pub fn stale_if_error(stored: &Stored, req: &Request, age_ms: u64) -> bool {
    // no-cache: never used without a successful validation (§5.2.2.4), errors included.
    let strict = stored.cc.must_revalidate
        || stored.cc.proxy_revalidate
        || stored.cc.s_maxage.is_some()
        || stored.cc.no_cache;
    if strict {
        return false;
    }
    let life_ms = stored.lifetime.saturating_mul(1000);
    let stale_ms = age_ms.saturating_sub(life_ms);
    let window = stored.cc.stale_if_error.max(req.cc.stale_if_error);
    window.is_some_and(|s| stale_ms <= u64::from(s) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(v: &str) -> CacheControl {
        CacheControl::of([v.as_bytes()].into_iter())
    }

    fn resp(status: u16, c: &str) -> Response {
        Response {
            status,
            cc: cc(c),
            ..Default::default()
        }
    }

    #[test]
    fn storing_section_3() {
        let req = Request::default();
        assert_eq!(not_storable(&req, &resp(200, "max-age=10")), None);
        assert!(not_storable(&req, &resp(200, "no-store, max-age=10")).is_some());
        assert!(not_storable(&req, &resp(200, "private, max-age=10")).is_some());
        assert!(
            not_storable(&req, &resp(200, "")).is_some(),
            "no freshness, no validator"
        );
        let mut r = resp(200, "");
        r.last_modified = Some(1);
        assert_eq!(not_storable(&req, &r), None, "heuristic");
        assert!(not_storable(&req, &resp(500, "")).is_some());
        assert_eq!(not_storable(&req, &resp(302, "max-age=5")), None);
        assert!(not_storable(&req, &resp(302, "")).is_some());
        assert_eq!(
            not_storable(&req, &resp(299, "max-age=5")),
            None,
            "explicit freshness"
        );
        assert_eq!(not_storable(&req, &resp(503, "max-age=5")), None);
        assert!(not_storable(&req, &resp(299, "max-age=5, must-understand")).is_some());
        assert!(not_storable(&req, &resp(206, "max-age=5")).is_some());
        let mut sc = resp(200, "max-age=10");
        sc.set_cookie = true;
        assert!(not_storable(&req, &sc).is_some());
        let auth = Request {
            authorization: true,
            ..Default::default()
        };
        assert!(not_storable(&auth, &resp(200, "max-age=10")).is_some());
        assert_eq!(not_storable(&auth, &resp(200, "public, max-age=10")), None);
        assert_eq!(not_storable(&auth, &resp(200, "s-maxage=10")), None);
        let nostore = Request {
            cc: cc("no-store"),
            ..Default::default()
        };
        assert!(not_storable(&nostore, &resp(200, "max-age=10")).is_some());
    }

    #[test]
    fn lifetime_section_4_2_1() {
        assert_eq!(lifetime(&resp(200, "max-age=10, s-maxage=20"), 0), 20);
        assert_eq!(lifetime(&resp(200, "max-age=10"), 0), 10);
        assert_eq!(lifetime(&resp(200, "max-age=x"), 0), 0);
        let mut e = resp(200, "");
        e.date = Some(1000);
        e.expires = Some(Some(1060));
        assert_eq!(lifetime(&e, 5000), 60);
        e.expires = Some(None);
        assert_eq!(lifetime(&e, 5000), 0, "invalid Expires is already expired");
        let mut h = resp(200, "");
        h.date = Some(100_000);
        h.last_modified = Some(0);
        assert_eq!(lifetime(&h, 100_000), 10_000);
        h.status = 302;
        assert_eq!(lifetime(&h, 100_000), 0, "no heuristic for 302");
    }

    #[test]
    fn age_section_4_2_3() {
        let mut r = resp(200, "");
        r.age = 30;
        r.date = Some(100);
        // Sent at 100 s, asked at 99.5 s, came at 101 s: Age 30 + 1.5 s in transit.
        assert_eq!(initial_age_ms(&r, 99_500, 101_000), 31_500);
        r.age = 0;
        assert_eq!(
            initial_age_ms(&r, 100_000, 110_000),
            10_000,
            "apparent age from Date"
        );
    }

    #[test]
    fn serving_section_4_and_5861() {
        let s = Stored {
            lifetime: 10,
            cc: cc("stale-while-revalidate=5, stale-if-error=60"),
        };
        let none = Request::default();
        assert_eq!(usable(&s, &none, 9_999), Use::Fresh);
        assert_eq!(usable(&s, &none, 10_000), Use::StaleRevalidate);
        assert_eq!(usable(&s, &none, 15_000), Use::StaleRevalidate);
        assert_eq!(usable(&s, &none, 15_001), Use::Validate);
        let q = |c: &str| Request {
            cc: cc(c),
            ..Default::default()
        };
        assert_eq!(usable(&s, &q("no-cache"), 0), Use::Validate);
        assert_eq!(usable(&s, &q("max-age=0"), 500), Use::Validate);
        assert_eq!(usable(&s, &q("max-age=5"), 4_000), Use::Fresh);
        assert_eq!(usable(&s, &q("max-age=5"), 6_000), Use::Validate);
        assert_eq!(usable(&s, &q("min-fresh=5"), 6_000), Use::Validate);
        assert_eq!(usable(&s, &q("max-stale=100"), 50_000), Use::StaleAllowed);
        assert_eq!(usable(&s, &q("max-stale"), 5_000_000), Use::StaleAllowed);
        let pragma = Request {
            pragma_no_cache: true,
            ..Default::default()
        };
        assert_eq!(usable(&s, &pragma, 0), Use::Validate);
        let strict = Stored {
            lifetime: 10,
            cc: cc("must-revalidate, stale-while-revalidate=5"),
        };
        assert_eq!(usable(&strict, &q("max-stale"), 11_000), Use::Validate);
        assert!(!stale_if_error(&strict, &none, 11_000));
        assert!(stale_if_error(&s, &none, 69_000));
        assert!(!stale_if_error(&s, &none, 71_000));
        let nc = Stored {
            lifetime: 100,
            cc: cc("no-cache"),
        };
        assert_eq!(usable(&nc, &none, 0), Use::Validate);
        let nc_sie = Stored {
            lifetime: 100,
            cc: cc("no-cache, stale-if-error=600"),
        };
        assert!(
            !stale_if_error(&nc_sie, &none, 200_000),
            "no-cache forbids it"
        );
    }
}
