//! The edge's families of `/metrics`: TLS handshakes (completed by kind, failed by reason) and
//! PROXY protocol headers by result, per shard.

use super::prom::{Kind, Writer};
use crate::shared::Shared;

pub(super) fn metrics(w: &mut Writer, shared: &Shared) {
    let ids: Vec<String> = (0..shared.stats.len()).map(|i| i.to_string()).collect();
    w.family(
        "shardgate_tls_handshakes",
        Kind::Counter,
        "TLS handshakes completed, by kind (full, or resumed with a session ticket).",
    );
    for (id, st) in ids.iter().zip(&shared.stats) {
        let st = &st.0;
        for (kind, c) in [("full", &st.tls_full), ("resumed", &st.tls_resumed)] {
            let labels = [("shard", id.as_str()), ("kind", kind)];
            w.sample("shardgate_tls_handshakes_total", &labels, c.get() as f64);
        }
    }
    w.family(
        "shardgate_tls_handshake_failures",
        Kind::Counter,
        "TLS handshakes that failed, by reason.",
    );
    for (id, st) in ids.iter().zip(&shared.stats) {
        for (reason, c) in crate::stats::TLS_FAILURES.iter().zip(&st.0.tls_failed) {
            let labels = [("shard", id.as_str()), ("reason", *reason)];
            w.sample(
                "shardgate_tls_handshake_failures_total",
                &labels,
                c.get() as f64,
            );
        }
    }
    w.family(
        "shardgate_proxy_protocol",
        Kind::Counter,
        "PROXY protocol headers on accept_proxy frontends, by result.",
    );
    for (id, st) in ids.iter().zip(&shared.stats) {
        let st = &st.0;
        for (result, c) in [
            ("accepted", &st.proxy_accepted),
            ("bad", &st.proxy_bad),
            ("untrusted", &st.proxy_untrusted),
        ] {
            let labels = [("shard", id.as_str()), ("result", result)];
            w.sample("shardgate_proxy_protocol_total", &labels, c.get() as f64);
        }
    }
}
