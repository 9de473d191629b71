//! loadgen: shardgate's bundled load generator. Four modes: `http` and `mysql` drive load
//! through the engine (thread-per-core epoll loops, HdrHistograms merged at the end),
//! `serve` is the benchmark backend, `verify` is the 10k-connection target run.
//!
//! Layout: `cli` (flags) → `load` (plan, limits, report) → `engine` (workers) with a
//! `Protocol` from `http` or `mysql`; `serve` and `verify` are their own modes; `report`
//! renders text/JSON/hgrm/SVG; `sys` holds the only `unsafe` (libc calls).
//!
//! Exit codes: 0 run completed (verify: every target held), 1 run aborted (verify: a target
//! missed), 2 bad arguments or a setup error (bad URL, refused connection, limits).

mod cli;
mod engine;
mod http;
mod load;
mod mysql;
mod report;
mod serve;
mod sys;
mod url;
mod verify;

use clap::Parser;
use std::net::SocketAddr;

fn main() {
    let cli = cli::Cli::parse();
    let result = match cli.cmd {
        cli::Cmd::Http(a) => run_http(a),
        cli::Cmd::Mysql(a) => mysql::run(a),
        cli::Cmd::Serve(a) => serve::run(a),
        cli::Cmd::Verify(a) => verify::run(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            std::process::exit(2);
        }
    }
}

fn run_http(a: cli::HttpArgs) -> Result<i32, String> {
    let mut raw = a.urls.clone();
    if let Some(f) = &a.urls_file {
        let text =
            std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        raw.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    if raw.is_empty() {
        return Err("no URL given".into());
    }
    let urls = raw
        .iter()
        .map(|u| url::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    if a.method.is_empty() || !a.method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("bad method '{}'", a.method));
    }
    let spec = http::RequestSpec {
        method: a.method.clone(),
        headers: a
            .headers
            .iter()
            .map(|h| http::parse_header(h))
            .collect::<Result<_, _>>()?,
        body_size: a.body_size,
        close: a.close,
    };
    // URLs to the same address share connections; each distinct address is a target group.
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut groups: Vec<http::Group> = Vec::new();
    for (u, text) in urls.iter().zip(&raw) {
        let addr = url::resolve(&u.host, u.port).map_err(|e| format!("{e} (in {text})"))?;
        let i = match addrs.iter().position(|a| *a == addr) {
            Some(i) => i,
            None => {
                addrs.push(addr);
                names.push(text.clone());
                groups.push(http::Group {
                    requests: Vec::new(),
                });
                addrs.len() - 1
            }
        };
        groups[i].requests.push(http::render_request(u, &spec));
    }
    let mut plan = load::plan(&a.load, addrs)?;
    plan.close = a.close;
    load::preflight(&plan, &names)?;
    let what = if raw.len() == 1 {
        raw[0].clone()
    } else {
        format!("{} URLs", raw.len())
    };
    println!("{}", load::banner(&what, &plan));
    let proto = http::Http::new(groups, &spec);
    sys::catch_interrupts();
    let outcome = load::execute(&proto, &plan)?;
    let (_, code) = load::finish("http", raw, &plan, &proto, &outcome, &a.load)?;
    Ok(code)
}
