//! The cache's control commands (`show cache`, `purge URL`, `purge prefix URL`) and its
//! `/metrics` families.

use crate::metrics::prom::{Kind, Writer};
use crate::shared::Shared;

use super::{key, Purge};

/// `show cache`: one line per zone, summed over shards.
pub fn text(shared: &Shared) -> String {
    let mut out = String::from(
        "zone entries bytes hit miss stale revalidated expired bypass hit_ratio stored evicted purged coalesced\n",
    );
    for (zone, t) in shared.caches.totals() {
        let lookups = t.hit + t.miss + t.stale + t.revalidated + t.expired;
        let ratio = if lookups == 0 {
            0.0
        } else {
            (t.hit + t.stale + t.revalidated) as f64 / lookups as f64
        };
        out.push_str(&format!(
            "{zone} {} {} {} {} {} {} {} {} {ratio:.3} {} {} {} {}\n",
            t.entries,
            t.bytes,
            t.hit,
            t.miss,
            t.stale,
            t.revalidated,
            t.expired,
            t.bypass,
            t.stored,
            t.evicted,
            t.purged,
            t.coalesced
        ));
    }
    out
}

/// The cache key of a URL given to `purge`: `http://HOST/PATH`, `https://HOST/PATH` or
/// `HOST/PATH`.
fn url_key(url: &str) -> Result<Vec<u8>, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let slash = rest.find('/').unwrap_or(rest.len());
    let (host, target) = rest.split_at(slash);
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '?') {
        return Err(format!(
            "{url:?}: expected a URL such as http://example.com/path"
        ));
    }
    let mut k = Vec::new();
    key(host.as_bytes(), target.as_bytes(), &mut k);
    Ok(k)
}

/// `purge URL` / `purge prefix URL`: queued for every shard's zones, each applies it before
/// its next lookup, so no answer after this one comes from what it names.
pub fn purge(shared: &Shared, args: &[&str]) -> Result<String, String> {
    let (p, what) = match args {
        ["prefix", url] => (Purge::Prefix(url_key(url)?), "prefix"),
        [url] if *url != "prefix" => (Purge::Key(url_key(url)?), "url"),
        _ => return Err("expected URL or prefix URL".into()),
    };
    let shown = match &p {
        Purge::Key(k) | Purge::Prefix(k) => String::from_utf8_lossy(k).into_owned(),
    };
    shared.caches.purge(p);
    Ok(format!(
        "ok: purged {what} {shown} on every shard (applied before each shard's next lookup)\n"
    ))
}

/// The `shardgate_cache_*` families.
pub fn metrics(w: &mut Writer, shared: &Shared) {
    let totals = shared.caches.totals();
    if totals.is_empty() {
        return;
    }
    w.family(
        "shardgate_cache_entries",
        Kind::Gauge,
        "Responses stored, per cache zone (all shards).",
    );
    for (z, t) in &totals {
        w.sample(
            "shardgate_cache_entries",
            &[("zone", z.as_str())],
            t.entries as f64,
        );
    }
    w.family(
        "shardgate_cache_bytes",
        Kind::Gauge,
        "Bytes held by stored responses (heads, bodies, overhead), per cache zone.",
    );
    for (z, t) in &totals {
        w.sample(
            "shardgate_cache_bytes",
            &[("zone", z.as_str())],
            t.bytes as f64,
        );
    }
    w.family(
        "shardgate_cache_requests",
        Kind::Counter,
        "Requests that went through the cache, by result (the X-Cache value).",
    );
    for (z, t) in &totals {
        for (result, n) in [
            ("hit", t.hit),
            ("miss", t.miss),
            ("stale", t.stale),
            ("revalidated", t.revalidated),
            ("expired", t.expired),
            ("bypass", t.bypass),
        ] {
            w.sample(
                "shardgate_cache_requests_total",
                &[("zone", z.as_str()), ("result", result)],
                n as f64,
            );
        }
    }
    for (name, help, pick) in [
        (
            "shardgate_cache_stored",
            "Responses stored (a refresh or 304 merge counts again).",
            (|t: &super::ZoneTotals| t.stored) as fn(&super::ZoneTotals) -> u64,
        ),
        (
            "shardgate_cache_evicted",
            "Entries evicted to stay within the zone's size.",
            |t| t.evicted,
        ),
        (
            "shardgate_cache_purged",
            "Entries removed by purges and unsafe requests.",
            |t| t.purged,
        ),
        (
            "shardgate_cache_coalesced",
            "Requests that waited for another request's fetch of the same object.",
            |t| t.coalesced,
        ),
    ] {
        w.family(name, Kind::Counter, help);
        let total = format!("{name}_total");
        for (z, t) in &totals {
            w.sample(&total, &[("zone", z.as_str())], pick(t) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_keys() {
        assert_eq!(
            super::url_key("http://Ex.com:80/a?b").unwrap(),
            b"ex.com/a?b"
        );
        assert_eq!(super::url_key("ex.com").unwrap(), b"ex.com/");
        assert!(super::url_key("/a").is_err());
        assert!(super::url_key("http:///a").is_err());
    }
}
