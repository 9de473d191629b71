//! The man page (`shardgate manpage`, hidden): generated from the CLI, it must be valid roff
//! for section 8, render without warnings, and document every visible subcommand and option
//! (so adding one to the CLI cannot leave the page behind).

mod common;

use common::proxy::BIN;
use std::io::Write;
use std::process::{Command, Stdio};

fn roff() -> String {
    let out = Command::new(BIN).arg("manpage").output().unwrap();
    assert!(out.status.success(), "shardgate manpage: {}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The visible subcommands, from `shardgate --help` (not from the page itself).
fn subcommands() -> Vec<String> {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let mut subs = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            let Some(name) = line
                .strip_prefix("  ")
                .and_then(|l| l.split_whitespace().next())
            else {
                break;
            };
            if name != "help" {
                subs.push(name.to_string());
            }
        }
    }
    assert!(subs.len() >= 2, "no subcommands found in --help:\n{help}");
    subs
}

#[test]
fn roff_structure_is_a_section_8_page_with_every_subcommand() {
    let page = roff();
    assert!(
        page.lines().any(|l| l.starts_with(".TH shardgate 8 ")),
        "no .TH for section 8:\n{page}"
    );
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "EXIT STATUS",
        "SIGNALS",
        "FILES",
    ] {
        assert!(
            page.lines().any(|l| l == format!(".SH {section}")),
            "no .SH {section}"
        );
    }
    for sub in subcommands() {
        // roff writes a literal hyphen as `\-`.
        let roff = sub.replace('-', "\\-");
        assert!(
            page.lines()
                .any(|l| l.starts_with(&format!(".SS \"shardgate {roff}"))),
            "subcommand {sub} is not documented:\n{page}"
        );
    }
    // Hidden: the upgrade channel and this very command.
    assert!(!page.contains("upgrade\\-fd"), "--upgrade-fd is internal");
    assert!(
        !page.contains(".SS \"shardgate manpage"),
        "manpage is hidden"
    );
    for opt in [
        "\\-\\-config",
        "\\-\\-check",
        "\\-\\-socket",
        "\\-\\-listen",
        "\\-\\-shards",
    ] {
        assert!(page.contains(opt), "option {opt} is missing");
    }
}

#[test]
fn renders_without_warnings() {
    let groff = Command::new("groff").arg("--version").output();
    if !groff.is_ok_and(|o| o.status.success()) {
        println!("SKIPPED: groff is not installed; only the roff structure was checked");
        return;
    }
    let mut child = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(roff().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && warnings.trim().is_empty(),
        "groff: {}\n{warnings}",
        out.status
    );

    // And the text a reader sees names every subcommand.
    let mut child = Command::new("groff")
        .args(["-man", "-Tutf8"])
        .env("GROFF_NO_SGR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(roff().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // Strip overstrike (bold: c\bc, underline: _\bc) as col -b would.
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut text = String::new();
    for c in raw.chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    for sub in subcommands() {
        assert!(
            text.contains(&format!("shardgate {sub}")),
            "rendered page does not show `shardgate {sub}`:\n{text}"
        );
    }
    assert!(text.contains("EXIT STATUS"), "{text}");
}
