//! Running the real `loadgen` binary from a test: bounded in time, its JSON result read back.

use super::proxy::BIN;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

/// The number after `"key":` in loadgen's JSON (its top-level fields are unique names).
pub fn json_num(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {pat} in loadgen's JSON:\n{json}"));
    let rest = json[at + pat.len()..].trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{pat} is not a count in loadgen's JSON: {rest:.40}"))
}

pub fn loadgen_bin() -> PathBuf {
    let bin = Path::new(BIN)
        .parent()
        .expect("shardgate binary's directory")
        .join("loadgen");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p loadgen` (tests/run.sh builds the workspace first)",
        bin.display()
    );
    bin
}

/// Runs loadgen with `args` + `--json FILE URL` on a thread; the handle gives back the JSON.
pub fn spawn_loadgen(args: &[&str], json: PathBuf, url: String) -> thread::JoinHandle<String> {
    let bin = loadgen_bin();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    thread::spawn(move || {
        let child = Command::new(&bin)
            .args(&args)
            .arg("--json")
            .arg(&json)
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let out = super::proxy::run_bounded(child, Duration::from_secs(60), "loadgen");
        assert!(
            out.status.success() || json.exists(),
            "loadgen {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&json)
            .unwrap_or_else(|e| panic!("loadgen's JSON {}: {e}", json.display()))
    })
}
