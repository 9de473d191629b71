//! Turning a run's merged stats into what people read: the final text report (wrk/oha style),
//! the `--json` document (everything in the text and more), the `--hgrm` percentile file and
//! the `--plot` SVG. One `Summary` feeds all of them so they never disagree.

pub(crate) mod hgrm;
pub(crate) mod svg;

use crate::engine::{ErrorClass, Outcome, Plan, Protocol};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Latency figures in milliseconds.
#[derive(Serialize, Debug, Clone, Copy)]
pub(crate) struct Latency {
    pub(crate) min: f64,
    pub(crate) mean: f64,
    pub(crate) stdev: f64,
    pub(crate) p50: f64,
    pub(crate) p75: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p99_9: f64,
    pub(crate) p99_99: f64,
    pub(crate) max: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |p: f64| ms(h.value_at_quantile(p));
        Latency {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            stdev: h.stdev() / 1000.0,
            p50: q(0.5),
            p75: q(0.75),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            p99_99: q(0.9999),
            max: ms(h.max()),
        }
    }
}

#[derive(Serialize, Debug)]
pub(crate) struct Summary {
    pub(crate) mode: String,
    pub(crate) targets: Vec<String>,
    pub(crate) threads: usize,
    pub(crate) connections: usize,
    /// Seconds over which connections were opened before the load started.
    pub(crate) ramp_s: f64,
    /// Requested rate (open loop), or null for closed loop.
    pub(crate) rate: Option<f64>,
    pub(crate) latency_measured_from: &'static str,
    /// Seconds from the start of load (after any ramp) to the last reply.
    pub(crate) elapsed_s: f64,
    /// Complete replies, whatever their status.
    pub(crate) responses: u64,
    /// Replies that were not a success (HTTP status >= 400 or < 200, MySQL ERR).
    pub(crate) non_success: u64,
    /// Requests sent that got no complete reply (a subset of `errors`).
    pub(crate) failed_requests: u64,
    pub(crate) req_per_s: f64,
    pub(crate) bytes_read: u64,
    pub(crate) bytes_written: u64,
    pub(crate) read_mib_per_s: f64,
    pub(crate) latency_ms: Latency,
    /// Open loop only: latency from the actual send, i.e. without the correction.
    pub(crate) uncorrected_latency_ms: Option<Latency>,
    pub(crate) errors: BTreeMap<&'static str, u64>,
    pub(crate) error_total: u64,
    /// The first message seen for each error class that occurred.
    pub(crate) error_messages: BTreeMap<&'static str, String>,
    pub(crate) status: BTreeMap<String, u64>,
    pub(crate) connections_opened: u64,
    pub(crate) connect_attempts: u64,
    pub(crate) open_at_load_start: u64,
    pub(crate) open_at_end: u64,
    pub(crate) max_open: u64,
    /// Open loop: requests that fell due but never found a free connection before the end.
    pub(crate) unsent: u64,
    /// Requests still waiting for a reply when the run ended.
    pub(crate) unfinished: u64,
    pub(crate) aborted: Option<String>,
}

impl Summary {
    pub(crate) fn new<P: Protocol>(
        mode: &str,
        targets: Vec<String>,
        plan: &Plan,
        proto: &P,
        o: &Outcome,
    ) -> Summary {
        let s = &o.stats;
        let secs = o.elapsed.as_secs_f64().max(1e-9);
        let mut errors = BTreeMap::new();
        let mut error_messages = BTreeMap::new();
        for c in ErrorClass::ALL {
            errors.insert(c.name(), s.errors[c as usize]);
            if let Some(m) = &s.error_samples[c as usize] {
                error_messages.insert(c.name(), m.clone());
            }
        }
        Summary {
            mode: mode.to_string(),
            targets,
            threads: o.threads,
            connections: plan.connections,
            ramp_s: plan.ramp.as_secs_f64(),
            rate: plan.rate,
            latency_measured_from: if plan.rate.is_some() {
                "scheduled send time (corrected for coordinated omission)"
            } else {
                "actual send time (closed loop)"
            },
            elapsed_s: o.elapsed.as_secs_f64(),
            responses: s.responses,
            non_success: s.bad_status,
            failed_requests: s.failed_requests,
            req_per_s: s.responses as f64 / secs,
            bytes_read: s.bytes_in,
            bytes_written: s.bytes_out,
            read_mib_per_s: s.bytes_in as f64 / secs / (1024.0 * 1024.0),
            latency_ms: Latency::of(&s.latency),
            uncorrected_latency_ms: s.uncorrected.as_ref().map(Latency::of),
            errors,
            error_total: s.error_total(),
            error_messages,
            status: s
                .codes()
                .into_iter()
                .map(|(k, v)| (proto.code_label(k), v))
                .collect(),
            connections_opened: s.connects_ok,
            connect_attempts: s.connects_started,
            open_at_load_start: s.open_at_load_start,
            open_at_end: s.open_at_end,
            max_open: s.max_open,
            unsent: s.unsent,
            unfinished: s.unfinished,
            aborted: s.aborted.clone(),
        }
    }

    /// The human report.
    pub(crate) fn text(&self) -> String {
        let mut o = String::new();
        let loop_kind = match self.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(
            o,
            "{} run, {loop_kind}, {} threads, {} connections",
            self.mode, self.threads, self.connections
        );
        let _ = writeln!(
            o,
            "  Requests:    {} replies in {:.2}s = {:.1} req/s",
            self.responses, self.elapsed_s, self.req_per_s
        );
        let _ = writeln!(
            o,
            "  Transfer:    {:.2} MiB read ({:.2} MiB/s), {:.2} MiB written",
            self.bytes_read as f64 / 1048576.0,
            self.read_mib_per_s,
            self.bytes_written as f64 / 1048576.0
        );
        let _ = writeln!(
            o,
            "  Latency (ms), measured from {}:",
            self.latency_measured_from
        );
        let _ = writeln!(o, "{}", latency_table(&self.latency_ms, ""));
        if let Some(u) = &self.uncorrected_latency_ms {
            let _ = writeln!(o, "{}", latency_table(u, "uncorrected"));
        }
        let codes: Vec<String> = self
            .status
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            o,
            "  Status:      {}",
            if codes.is_empty() {
                "none".into()
            } else {
                codes.join(", ")
            }
        );
        if self.non_success > 0 {
            let _ = writeln!(o, "  Non-success replies: {}", self.non_success);
        }
        if self.error_total == 0 {
            let _ = writeln!(o, "  Errors:      none");
        } else {
            let _ = writeln!(
                o,
                "  Errors:      {} ({} failed requests)",
                self.error_total, self.failed_requests
            );
            for (class, n) in self.errors.iter().filter(|(_, &n)| n > 0) {
                let msg = self
                    .error_messages
                    .get(class)
                    .map(String::as_str)
                    .unwrap_or("");
                let _ = writeln!(o, "    {class:<16} {n:>10}   e.g. {msg}");
            }
        }
        let at_start = if self.ramp_s > 0.0 {
            format!("{} open when load started, ", self.open_at_load_start)
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "  Connections: {} opened ({} attempts), {at_start}{} open at the end, max {}",
            self.connections_opened, self.connect_attempts, self.open_at_end, self.max_open
        );
        if self.unsent > 0 || self.unfinished > 0 {
            let _ = writeln!(
                o,
                "  At the end:  {} due but unsent, {} awaiting reply",
                self.unsent, self.unfinished
            );
        }
        if let Some(a) = &self.aborted {
            let _ = writeln!(o, "  ABORTED:     {a}");
        }
        o
    }
}

fn latency_table(l: &Latency, label: &str) -> String {
    let cols = [
        ("min", l.min),
        ("p50", l.p50),
        ("p90", l.p90),
        ("p99", l.p99),
        ("p99.9", l.p99_9),
        ("max", l.max),
        ("mean", l.mean),
        ("stdev", l.stdev),
    ];
    let mut head = format!("    {label:<12}");
    let mut vals = format!("    {:<12}", "");
    for (name, v) in cols {
        let _ = write!(head, "{name:>10}");
        let _ = write!(vals, "{v:>10.3}");
    }
    format!("{head}\n{vals}")
}

/// Writes the files asked for with --json/--hgrm/--plot.
pub(crate) fn write_files(
    summary: &Summary,
    o: &Outcome,
    json: Option<&Path>,
    hgrm_path: Option<&Path>,
    plot: Option<&Path>,
) -> Result<(), String> {
    let write = |p: &Path, data: &[u8]| {
        std::fs::write(p, data).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    if let Some(p) = json {
        let mut doc = serde_json::to_vec_pretty(summary).map_err(|e| format!("json: {e}"))?;
        doc.push(b'\n');
        write(p, &doc)?;
    }
    if let Some(p) = hgrm_path {
        write(p, hgrm::render(&o.stats.latency).as_bytes())?;
    }
    if let Some(p) = plot {
        let mut series = vec![(summary.latency_measured_from_label(), &o.stats.latency)];
        if let Some(u) = &o.stats.uncorrected {
            series.push(("uncorrected (from actual send)".to_string(), u));
        }
        let title = format!(
            "{} {}: {:.0} req/s, {} connections",
            summary.mode,
            summary.targets.first().map(String::as_str).unwrap_or(""),
            summary.req_per_s,
            summary.connections
        );
        write(p, svg::render(&title, &series).as_bytes())?;
    }
    Ok(())
}

impl Summary {
    fn latency_measured_from_label(&self) -> String {
        if self.rate.is_some() {
            "corrected (from scheduled send)".into()
        } else {
            "from actual send".into()
        }
    }
}
