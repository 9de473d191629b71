//! The Debian package, built for real with cargo-deb from the dev-profile binary
//! (`config/deb/build.sh`, a few seconds with --fast) and inspected with dpkg-deb, never
//! installed: the file list, the conffile, and the extracted binary accepting the extracted
//! default config (`--check`), which must also start and serve.
//!
//! Skipped with a printed reason when cargo-deb or dpkg-deb is missing
//! (`cargo install cargo-deb --locked`; tests/run.sh installs it).

mod common;

use common::proxy::{temp_dir, BIN};
use common::{free_port, Proxy};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Builds the .deb into `out`; its path. cargo-deb stages in (and empties) the target dir's
/// `debian/`, so it runs on a target dir of its own holding only the binary under test: a
/// .deb the developer built in `target/debian` stays.
fn build(out: &Path) -> PathBuf {
    let target = out.join("target");
    let bin_dir = target.join("debug");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let bin = bin_dir.join("shardgate");
    if std::fs::hard_link(BIN, &bin).is_err() {
        std::fs::copy(BIN, &bin).unwrap();
    }
    let res = Command::new(format!("{ROOT}/config/deb/build.sh"))
        .env("PROFILE", "dev")
        .env("SKIP_BUILD", "1")
        .env("CARGO_TARGET_DIR", &target)
        .arg("--output")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "config/deb/build.sh: {}\n{}{}",
        res.status,
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    // The test build makes no -dbgsym package (build.sh passes --no-dbgsym off release).
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs[0].clone()
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg-deb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn deb_contents_conffile_and_default_config() {
    if !have("cargo-deb", "--version") || !have("dpkg-deb", "--version") {
        println!("SKIPPED: cargo-deb or dpkg-deb is not installed (cargo install cargo-deb --locked); the .deb was not built");
        return;
    }
    // The binary under test is the dev-profile one build.sh packages.
    assert!(Path::new(BIN).exists());
    let dir = temp_dir("deb");
    let deb = build(&dir.join("out"));
    assert!(
        deb.starts_with(dir.join("out")),
        "the .deb is not where --output said"
    );

    // Files: what an installed shardgate needs, where Debian expects it.
    let listing = dpkg_deb(&["-c"], &deb);
    let files: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    for want in [
        "./usr/bin/shardgate",
        "./lib/systemd/system/shardgate.service",
        "./etc/shardgate/shardgate.toml",
        "./usr/share/man/man8/shardgate.8.gz",
        "./usr/share/doc/shardgate/README.md",
        "./usr/share/doc/shardgate/copyright",
        "./usr/share/doc/shardgate/operations.md",
        "./usr/share/doc/shardgate/configuration.md",
        "./usr/share/doc/shardgate/examples/shardgate.toml",
        "./usr/share/doc/shardgate/examples/grafana-dashboard.json",
    ] {
        assert!(
            files.contains(&want),
            "{want} missing from the .deb:\n{listing}"
        );
    }
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("./usr/bin/shardgate")),
        "the binary is not 0755:\n{listing}"
    );

    // The config is a conffile (an upgrade keeps the administrator's edits).
    let ctrl = dir.join("control");
    std::fs::create_dir_all(&ctrl).unwrap();
    let out = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&ctrl)
        .output()
        .unwrap();
    assert!(out.status.success());
    let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/shardgate/shardgate.toml");
    let control = std::fs::read_to_string(ctrl.join("control")).unwrap();
    assert!(control.contains("Package: shardgate"), "{control}");
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        assert!(
            !ctrl.join(script).exists(),
            "unexpected maintainer script {script}"
        );
    }

    // Extracted: the packaged binary accepts the packaged config and prints its man page.
    let root = dir.join("root");
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = root.join("usr/bin/shardgate");
    let config = root.join("etc/shardgate/shardgate.toml");
    let out = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "packaged binary --check on the packaged config: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/shardgate.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/shardgate --config /etc/shardgate/shardgate.toml"));
    let man = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}'",
            root.join("usr/share/man/man8/shardgate.8.gz").display()
        ))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH shardgate 8"));

    // The default config starts and serves on a fresh machine: only its port and command
    // socket are moved so the test cannot collide with anything on this one. Its server
    // (127.0.0.1:8081) is not there, so the answer is the proxy's own 503.
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\"127.0.0.1:8080\"") && text.contains("/run/shardgate/shardgate.sock"));
    let port = free_port();
    let moved = text
        .replace("\"127.0.0.1:8080\"", &format!("\"127.0.0.1:{port}\""))
        .replace("/run/shardgate/shardgate.sock", "{socket}")
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", free_port()));
    let mut p = Proxy::start(&moved);
    let mut c = common::Conn::connect(([127, 0, 0, 1], port).into());
    c.set_read_timeout(Duration::from_secs(10));
    let r = c.get("/", "localhost");
    assert_eq!(r.status, 503, "{}", r.summary());
    let (code, out) = p.ctl("show info");
    assert_eq!(code, 0, "{out}");
    p.signal(libc::SIGTERM);
    assert!(p
        .wait_exit(Duration::from_secs(40))
        .is_some_and(|s| s.success()));
    let _ = std::fs::remove_dir_all(&dir);
}
