//! The driver shared by the `http` and `mysql` modes: turns flags into an engine `Plan`,
//! refuses plans the machine cannot carry (open files, ephemeral ports) before opening a
//! socket, checks that each target accepts a connection, runs the engine with a live progress
//! line on a terminal, then prints the report and writes the requested files.

use crate::cli::LoadArgs;
use crate::engine::{self, Outcome, Plan, Protocol};
use crate::report::{self, Summary};
use crate::sys;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// File descriptors a run needs besides its connections (epolls, stdio, files, margin).
const FD_RESERVE: u64 = 64;
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Builds and validates the plan for `targets` from the engine flags.
pub(crate) fn plan(a: &LoadArgs, targets: Vec<SocketAddr>) -> Result<Plan, String> {
    if a.connections == 0 {
        return Err("-c must be at least 1".into());
    }
    if let Some(r) = a.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(format!(
                "bad rate -R {r}: must be a positive number of requests per second"
            ));
        }
    }
    if a.requests == Some(0) {
        return Err("-n must be at least 1".into());
    }
    if a.timeout.is_zero() || a.connect_timeout.is_zero() {
        return Err("timeouts must be greater than zero".into());
    }
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        return Err("-t must be at least 1".into());
    }
    let duration = match (a.duration, a.requests) {
        (None, None) => Some(DEFAULT_DURATION),
        (d, _) => d,
    };
    let plan = Plan {
        connections: a.connections,
        threads,
        duration,
        requests: a.requests,
        rate: a.rate,
        ramp: a.ramp,
        timeout: a.timeout,
        connect_timeout: a.connect_timeout,
        close: false,
        sources: a.source.as_ref().map(|s| s.0.clone()).unwrap_or_default(),
        targets,
    };
    check_limits(&plan)?;
    Ok(plan)
}

/// Refuses a plan that would run out of file descriptors or ephemeral ports midway.
pub(crate) fn check_limits(plan: &Plan) -> Result<(), String> {
    let limit =
        sys::raise_nofile_limit().map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    let need = plan.connections as u64 + FD_RESERVE;
    if need > limit {
        return Err(format!(
            "{} connections need about {need} open files, but the limit is {limit} (ulimit -n); \
             lower -c to at most {} or split the load over several loadgen processes",
            plan.connections,
            limit.saturating_sub(FD_RESERVE)
        ));
    }
    let ports = ephemeral_ports();
    // Connection i goes to target i % T from source (i / T) % S: each (source, target) pair
    // gets about c / (T * S) connections, and each needs its own ephemeral port.
    let pairs = plan.targets.len().max(1) * plan.sources.len().max(1);
    let per_pair = plan.connections.div_ceil(pairs) as u64;
    if per_pair > ports {
        return Err(format!(
            "{} connections put {per_pair} on one (source, destination) pair, but only {ports} \
             ephemeral ports exist (net.ipv4.ip_local_port_range); add local addresses with \
             --source 127.0.0.2-127.0.0.9",
            plan.connections
        ));
    }
    Ok(())
}

fn ephemeral_ports() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().filter_map(|x| x.parse::<u64>().ok());
            Some(it.next()?..=it.next()?)
        })
        .map_or(28_232, |r| r.end() - r.start() + 1)
}

/// Connects once to each target so a dead address is a clear error, not a run of failures.
pub(crate) fn preflight(plan: &Plan, names: &[String]) -> Result<(), String> {
    for (i, addr) in plan.targets.iter().enumerate() {
        let name = names
            .get(i)
            .map_or_else(|| addr.to_string(), |n| format!("{n} ({addr})"));
        TcpStream::connect_timeout(addr, plan.connect_timeout)
            .map_err(|e| format!("cannot connect to {name}: {e}"))?;
    }
    Ok(())
}

/// Runs the plan; prints the progress line only when stdout is a terminal.
pub(crate) fn execute<P: Protocol>(proto: &P, plan: &Plan) -> Result<Outcome, String> {
    let tty = sys::stdout_is_tty();
    let mut last = (0.0, 0u64);
    let outcome = engine::run(proto, plan, |t, responses, errors, open| {
        if tty {
            let rate = (responses - last.1) as f64 / (t - last.0).max(1e-9);
            last = (t, responses);
            let mut out = std::io::stdout().lock();
            let _ = write!(
                out,
                "\r\x1b[K[{t:5.1}s] {rate:9.0} req/s  {responses} replies  {errors} errors  {open} connections open"
            );
            let _ = out.flush();
        }
    });
    if tty {
        print!("\r\x1b[K");
        let _ = std::io::stdout().flush();
    }
    outcome
}

/// Prints the report and writes the files; returns the process exit code for the run.
pub(crate) fn finish<P: Protocol>(
    mode: &str,
    targets: Vec<String>,
    plan: &Plan,
    proto: &P,
    outcome: &Outcome,
    a: &LoadArgs,
) -> Result<(Summary, i32), String> {
    let summary = Summary::new(mode, targets, plan, proto, outcome);
    print!("{}", summary.text());
    report::write_files(
        &summary,
        outcome,
        a.json.as_deref(),
        a.hgrm.as_deref(),
        a.plot.as_deref(),
    )?;
    let code = if summary.aborted.is_some() { 1 } else { 0 };
    Ok((summary, code))
}

/// A one-line description of the run, printed before it starts.
pub(crate) fn banner(what: &str, plan: &Plan) -> String {
    let shape = match (plan.requests, plan.duration) {
        (Some(n), _) => format!("{n} requests"),
        (None, Some(d)) => format!("{:?}", d),
        (None, None) => String::new(),
    };
    let pace = plan.rate.map_or("closed loop".to_string(), |r| {
        format!("{r} req/s open loop")
    });
    format!(
        "loadgen: {shape} @ {what}, {} connections, {} threads, {pace}",
        plan.connections,
        plan.threads.min(plan.connections)
    )
}
