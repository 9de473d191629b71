//! Commands that change the running config without touching the file: `add server`,
//! `del server`, `set server ... addr`, and `show config`, which prints the running config as
//! TOML so that an operator can save it.
//!
//! A change edits the running generation's copy of the file ([`FileConfig`]), validates the
//! result with the same builder as the file (so the same key/problem messages), and applies it
//! as the next generation on every shard at once ([`crate::reload::apply`]). Changes last
//! until the next `reload`, which re-reads the file and so drops them: `show config` first,
//! to keep them.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::Action;
use crate::balance::Admin;
use crate::config::file::{FileConfig, ServerFile};
use crate::shared::Shared;

type Answer = Result<(String, Action), String>;

/// `show config`.
pub fn show_config(s: &Shared, _: &[&str]) -> Answer {
    let gen = s.current();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# shardgate running configuration, generation {} ({}), loaded {}",
        gen.number,
        gen.cause,
        super::utc(
            gen.loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        )
    );
    let _ = writeln!(out, "# read from {}", gen.config.source.display());
    out.push_str(&crate::config::show::to_toml(&gen.file));
    Ok((out, Action::None))
}

/// Validate an edited file and apply it as the next generation.
fn apply_edit(s: &Shared, file: FileConfig, cause: String) -> Result<u64, String> {
    let source = s.current().config.source.clone();
    let mut config =
        crate::config::from_file(file.clone(), "running config").map_err(|e| e.to_string())?;
    config.source = source;
    let applied = crate::reload::apply(s, config, file, cause)?;
    Ok(applied.generation)
}

fn split_target(target: &str) -> Result<(&str, &str), String> {
    target
        .split_once('/')
        .filter(|(p, n)| !p.is_empty() && !n.is_empty())
        .ok_or_else(|| format!("'{target}': expected POOL/SERVER"))
}

/// `add server POOL/NAME ADDR [weight N] [backup]`.
pub fn add_server(s: &Shared, args: &[&str]) -> Answer {
    const USAGE: &str = "expected POOL/NAME ADDR [weight N] [backup]";
    let (target, addr, rest) = match args {
        [t, a, rest @ ..] => (*t, *a, rest),
        _ => return Err(USAGE.into()),
    };
    let (pool, name) = split_target(target)?;
    let mut server = ServerFile::new(name, addr);
    let mut words = rest.iter();
    while let Some(w) = words.next() {
        match *w {
            "weight" => {
                let v = words.next().ok_or("weight: expected a number")?;
                server.weight = Some(
                    v.parse()
                        .map_err(|_| format!("weight '{v}': expected an integer"))?,
                );
            }
            "backup" => server.backup = Some(true),
            other => return Err(format!("unexpected '{other}'; {USAGE}")),
        }
    }
    let _one = s.runtime.lock().unwrap_or_else(|e| e.into_inner());
    let mut file = s.current().file.clone();
    file.add_server(pool, server)?;
    let n = apply_edit(s, file, format!("add server {target}"))?;
    tracing::info!(
        event = "server_added",
        pool,
        server = name,
        addr,
        generation = n,
        "server added by command"
    );
    Ok((
        format!("added {target} {addr}; generation {n}\n"),
        Action::None,
    ))
}

/// `set server POOL/NAME addr ADDR`.
pub fn set_addr(s: &Shared, target: &str, addr: &str) -> Answer {
    let (pool, name) = split_target(target)?;
    let _one = s.runtime.lock().unwrap_or_else(|e| e.into_inner());
    let mut file = s.current().file.clone();
    let old = file.set_server_addr(pool, name, addr)?;
    let n = apply_edit(s, file, format!("set server {target} addr"))?;
    tracing::info!(event = "server_addr_changed", pool, server = name, old = %old, addr, generation = n, "server address changed by command");
    Ok((
        format!("{target} addr {addr} (was {old}); generation {n}\n"),
        Action::None,
    ))
}

/// `del server POOL/NAME`: no new requests go to the server (maint), the requests it has in
/// flight finish (up to `daemon.stop_timeout`), then it leaves the config on every shard.
pub fn del_server(s: &Shared, args: &[&str]) -> Answer {
    let [target] = args else {
        return Err("expected POOL/NAME".into());
    };
    let (pool, name) = split_target(target)?;
    let _one = s.runtime.lock().unwrap_or_else(|e| e.into_inner());
    let gen = s.current();
    let p = gen
        .pool(pool)
        .ok_or_else(|| format!("no pool named '{pool}'"))?;
    let sv = p
        .servers
        .iter()
        .find(|x| x.name == name)
        .ok_or_else(|| format!("pool '{pool}' has no server named '{name}'"))?
        .clone();
    // Refused before draining if the rest would not validate (e.g. the pool's last server).
    let mut file = gen.file.clone();
    file.del_server(pool, name)?;
    crate::config::from_file(file.clone(), "running config").map_err(|e| e.to_string())?;
    let was = sv.admin();
    sv.set_admin_by_operator(Admin::Maint);
    let started = Instant::now();
    let deadline = started + gen.config.daemon.stop_timeout;
    while sv.inflight() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let left = sv.inflight();
    drop(gen);
    match apply_edit(s, file, format!("del server {target}")) {
        Ok(n) => {
            tracing::info!(
                event = "server_removed",
                pool,
                server = name,
                drained_ms = started.elapsed().as_millis() as u64,
                left,
                generation = n,
                "server removed by command"
            );
            Ok((
                format!(
                    "removed {target} after {} ms ({left} requests still in flight); generation {n}\n",
                    started.elapsed().as_millis()
                ),
                Action::None,
            ))
        }
        Err(e) => {
            sv.set_admin_by_operator(was);
            Err(e)
        }
    }
}
