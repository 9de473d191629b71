//! The Grafana dashboard (`config/grafana-dashboard.json`): valid JSON in Grafana's model, a
//! Prometheus datasource variable that every panel uses, and queries that name only metrics
//! a live daemon exports (families and label names, from a scrape).

mod common;

use common::prom::Exposition;
use common::proxy::single_pool;
use common::{req, Backend, Conn};
use serde_json::Value;
use std::collections::BTreeSet;

fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana-dashboard.json");
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every PromQL string in the dashboard: panel targets, variable queries, annotations.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains("shardgate_") => out.push(s.clone()),
                    _ => queries(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| queries(x, out)),
        _ => {}
    }
}

/// The `shardgate_[a-z_]+` names in a query.
fn names(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = q;
    while let Some(i) = rest.find("shardgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// A live daemon's exposition: every family it exports, and every label name its samples carry.
fn live() -> (Exposition, BTreeSet<String>) {
    let backend = Backend::start("app");
    let p = single_pool(backend.addr_string(), 1, "", "", "");
    let mut c = Conn::connect(p.addr("web"));
    c.send(&req("GET", "/", "grafana.test", &[], b""));
    assert_eq!(c.read_response().status, 200);
    let (code, text) = p.ctl("show metrics");
    assert_eq!(code, 0, "{text}");
    let e = Exposition::parse(&text, false);
    let mut labels: BTreeSet<String> = e
        .samples
        .iter()
        .flat_map(|s| s.labels.keys().cloned())
        .collect();
    // Prometheus adds these; the MySQL families carry these when there is MySQL traffic (this
    // daemon has none: the MySQL tests check those series).
    labels.extend(["instance", "job", "user", "command"].map(String::from));
    (e, labels)
}

/// Is `name` a sample name of a family the daemon exports?
fn known(e: &Exposition, name: &str) -> bool {
    if e.types.get(name).is_some_and(|t| t != "histogram") {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|s| {
        name.strip_suffix(s)
            .is_some_and(|h| e.types.get(h).is_some_and(|t| t == "histogram"))
    })
}

/// The label names in `by (...)` clauses and `{name=...}` selectors of a query.
fn label_names(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (open, close) in [("by (", ')'), ("{", '}')] {
        let mut rest = q;
        while let Some(i) = rest.find(open) {
            let inner = &rest[i + open.len()..];
            let end = inner.find(close).unwrap_or(inner.len());
            for part in inner[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
            rest = &inner[end..];
        }
    }
    out
}

#[test]
fn every_metric_and_label_queried_is_exported_by_a_live_daemon() {
    let (e, labels) = live();
    let d = dashboard();
    let mut qs = Vec::new();
    queries(&d, &mut qs);
    assert!(qs.len() > 20, "too few queries found: {qs:?}");
    let mut used = BTreeSet::new();
    for q in &qs {
        for n in names(q) {
            assert!(known(&e, &n), "metric {n} is not exported (query {q})");
            used.insert(n);
        }
        for l in label_names(q) {
            assert!(
                labels.contains(&l),
                "label {l} is on no exported series (query {q})"
            );
        }
        // Histograms are only read through their series, never by the bare name.
        for n in names(q) {
            assert!(
                e.types.get(&n).is_none_or(|t| t != "histogram"),
                "histogram {n} used without _bucket/_sum/_count: {q}"
            );
        }
    }
    // The panels the dashboard promises.
    for must in [
        "shardgate_http_requests_total",
        "shardgate_http_responses_total",
        "shardgate_http_request_duration_seconds_bucket",
        "shardgate_server_in_flight",
        "shardgate_server_queued",
        "shardgate_server_up",
        "shardgate_site_requests_total",
        "shardgate_mysql_user_commands_total",
        "shardgate_mysql_command_duration_seconds_bucket",
    ] {
        assert!(used.contains(must), "no panel uses {must}");
    }
    assert!(
        qs.iter().any(|q| q.contains("histogram_quantile(0.99")),
        "no p99"
    );
}

#[test]
fn grafana_model_with_a_prometheus_datasource_variable() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().unwrap() >= 36,
        "Grafana 9+ model"
    );
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());

    // Core panel types only (no plugin to install), each on the variable's datasource, with
    // unique ids.
    let core = [
        "row",
        "timeseries",
        "stat",
        "state-timeline",
        "table",
        "gauge",
        "bargauge",
        "text",
    ];
    let mut ids = BTreeSet::new();
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for p in panels {
        let ty = p["type"].as_str().unwrap();
        assert!(core.contains(&ty), "panel type {ty} is not a core panel");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id {}",
            p["id"]
        );
        if ty == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"],
            ds_ref.as_str(),
            "panel {}",
            p["title"]
        );
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(
                t["datasource"]["uid"],
                ds_ref.as_str(),
                "panel {}",
                p["title"]
            );
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
        }
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {} overflows the grid", p["title"]);
    }
}
