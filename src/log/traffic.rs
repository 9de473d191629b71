//! The traffic log: per-site HTTP and per-user MySQL traffic, one period at a time, appended to
//! `daemon.traffic_log` every `daemon.log_statistics_period` (hosting panels bill from it).
//!
//! **Periods as differences.** The counters the shards keep only grow (a reload keeps them by
//! frontend and site name, by user name), so a period is the difference between the totals
//! at its end and the totals at the previous period's end, taken by this thread alone. Nothing
//! is reset, so nothing is lost or counted twice however a reload, a `show traffic` or a slow
//! disk falls between two periods.
//!
//! **Sites.** After the `http` and `mysql` lines, a period has one `site` line per `[[site]]`
//! with traffic in it: the sum of that period's rows of its hosts and users
//! ([`crate::site`]), mapped through the config running when the period is written. The
//! trailer counts them with the other lines; recovery treats them like any period line.
//!
//! **One write per period.** A period (its lines, then its trailer) is formatted whole and
//! appended with one `write(2)` on an `O_APPEND` descriptor, then `fsync`ed. The trailer is
//! the last line of that write, so a period without its trailer is one a crash (or a full disk)
//! interrupted. If a write fails, the file is cut back to where it was and the period stays
//! open: its traffic goes into the next period written, which then spans both.
//!
//! **Numbering across restarts.** At start (and when the path changes) the end of the file is
//! read: numbering continues after the last complete period. Lines after it (an interrupted
//! period) are cut off the file, with a warning that says how many: they were never complete,
//! their numbers will be used again, and a reader never sees a half period. A file whose tail
//! is not traffic-log lines is not touched: the traffic log stays off (logged) until the path
//! changes, rather than truncating something else.
//!
//! **What a crash loses.** The counters live in memory: a clean stop writes the last, partial
//! period, but a crash (kill -9, power loss) loses the traffic since the last period written.
//! Short periods bound that loss.
//!
//! **Binary upgrade.** The new process starts with the old one's totals carried into its
//! counters, and the old one writes its last period when it exits. So the new process opens
//! the traffic log only once the old one is gone (then the carried totals are in its base):
//! nothing is counted twice; what the new process served while both ran (the handover, a few
//! seconds) is not in any period.
//!
//! Periods end on multiples of the period in unix time (`5m` ends at :00, :05, ...), so
//! several proxies' files line up; the first period after a start, a reload that turns the log
//! on, or a path change is shorter. Boundaries are taken on this thread's 100 ms tick.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::shared::Shared;

/// How often the thread looks at the clock, the config and the stop switch.
const TICK: Duration = Duration::from_millis(100);
/// After the process this one replaced exits, how long before the base is taken.
const SEED_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Http,
    Mysql,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Mysql => "mysql",
        }
    }
}

/// Requests (MySQL: commands), bytes in and out, total response time; for MySQL also
/// logins and errors (only the `site` lines print those two; HTTP leaves them 0).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub time_us: u64,
    pub connections: u64,
    pub errors: u64,
}

impl Traffic {
    fn add(&mut self, o: &Traffic) {
        self.requests += o.requests;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.time_us += o.time_us;
        self.connections += o.connections;
        self.errors += o.errors;
    }

    fn since(&self, base: &Traffic) -> Traffic {
        Traffic {
            requests: self.requests.saturating_sub(base.requests),
            bytes_in: self.bytes_in.saturating_sub(base.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(base.bytes_out),
            time_us: self.time_us.saturating_sub(base.time_us),
            connections: self.connections.saturating_sub(base.connections),
            errors: self.errors.saturating_sub(base.errors),
        }
    }

    fn is_zero(&self) -> bool {
        *self == Traffic::default()
    }
}

/// (kind, frontend — `-` for MySQL, whose users span frontends — and site or user name).
pub type Key = (Kind, Arc<str>, Vec<u8>);

/// Cumulative totals since the process started, summed over shards.
#[derive(Debug, Default, Clone)]
pub struct Totals(pub BTreeMap<Key, Traffic>);

impl Totals {
    /// Read every shard's counters now.
    pub fn of(shared: &Shared) -> Totals {
        let mut t = BTreeMap::new();
        for s in &shared.stats {
            let lists = s.0.sites.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for (fe, list) in lists.iter() {
                for (site, c) in list {
                    let add = Traffic {
                        requests: c.requests.get(),
                        bytes_in: c.bytes_in.get(),
                        bytes_out: c.bytes_out.get(),
                        time_us: c.time_total_us.get(),
                        ..Traffic::default()
                    };
                    let e: &mut Traffic = t
                        .entry((Kind::Http, fe.clone(), site.to_vec()))
                        .or_default();
                    e.add(&add);
                }
            }
        }
        let none: Arc<str> = Arc::from("-");
        for s in &shared.mysql_stats {
            for (user, [requests, bytes_in, bytes_out, time_us, connections, errors]) in
                s.user_totals()
            {
                let add = Traffic {
                    requests,
                    bytes_in,
                    bytes_out,
                    time_us,
                    connections,
                    errors,
                };
                t.entry((Kind::Mysql, none.clone(), user))
                    .or_default()
                    .add(&add);
            }
        }
        Totals(t)
    }

    /// What grew since `base`: the rows of a period.
    pub fn since(&self, base: &Totals) -> Vec<(Key, Traffic)> {
        self.0
            .iter()
            .filter_map(|(k, v)| {
                let d = match base.0.get(k) {
                    Some(b) => v.since(b),
                    None => *v,
                };
                (!d.is_zero()).then(|| (k.clone(), d))
            })
            .collect()
    }
}

/// One period as written.
#[derive(Debug, Clone)]
pub struct Period {
    pub number: u64,
    /// Unix seconds, start inclusive, end exclusive.
    pub start: u64,
    pub end: u64,
    pub rows: Vec<(Key, Traffic)>,
    /// `[[site]]` bills of this period's rows, sites with traffic only, in config order.
    pub sites: Vec<(String, crate::site::Bill)>,
}

impl Period {
    /// A period of `rows` with the bills of `sites` (those with traffic).
    pub fn new(
        number: u64,
        start: u64,
        end: u64,
        rows: Vec<(Key, Traffic)>,
        sites: &crate::site::Sites,
    ) -> Period {
        let bills = sites.bills(rows.iter().map(|(k, t)| (k, t)));
        let sites = sites
            .list
            .iter()
            .zip(bills)
            .filter(|(_, b)| !b.is_zero())
            .map(|(s, b)| (s.name.clone(), b))
            .collect();
        Period {
            number,
            start,
            end,
            rows,
            sites,
        }
    }

    /// The period's lines and its trailer:
    /// `N START END KIND FRONTEND KEY REQUESTS BYTES_IN BYTES_OUT TIME_US` (`http`, `mysql`),
    /// then `N START END site - SITE` and the ten columns of `show traffic site`, then
    /// `N START END end LINES` (LINES counts every line before it).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for ((kind, fe, key), t) in &self.rows {
            let _ = writeln!(
                out,
                "{} {} {} {} {} {} {} {} {} {}",
                self.number,
                self.start,
                self.end,
                kind.name(),
                fe,
                encode_key(key),
                t.requests,
                t.bytes_in,
                t.bytes_out,
                t.time_us
            );
        }
        for (name, b) in &self.sites {
            let _ = writeln!(
                out,
                "{} {} {} site - {}",
                self.number,
                self.start,
                self.end,
                crate::site::line(name, b)
            );
        }
        let _ = writeln!(
            out,
            "{} {} {} end {}",
            self.number,
            self.start,
            self.end,
            self.rows.len() + self.sites.len()
        );
        out
    }

    /// The `show traffic site` section for this period: its site lines, as `show traffic
    /// site` prints them, after `last_period`.
    pub fn show_sites(&self) -> String {
        let mut out = format!(
            "last_period number={} start={} end={} lines={}\n",
            self.number,
            self.start,
            self.end,
            self.sites.len()
        );
        for (name, b) in &self.sites {
            let _ = writeln!(out, "last_period {}", crate::site::line(name, b));
        }
        out
    }

    /// The `show traffic http|mysql` section for this period (see `docs/logs.md`).
    pub fn show(&self, kind: Kind) -> String {
        let rows: Vec<_> = self
            .rows
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .collect();
        let mut out = format!(
            "last_period number={} start={} end={} lines={}\n",
            self.number,
            self.start,
            self.end,
            rows.len()
        );
        for ((_, fe, key), t) in rows {
            let mean = if t.requests == 0 {
                0.0
            } else {
                t.time_us as f64 / t.requests as f64 / 1000.0
            };
            let _ = write!(out, "last_period ");
            if kind == Kind::Http {
                let _ = write!(out, "{fe} ");
            }
            let _ = writeln!(
                out,
                "{} {} {} {} {:.3} {:.3}",
                encode_key(key),
                t.requests,
                t.bytes_in,
                t.bytes_out,
                t.time_us as f64 / 1000.0,
                mean
            );
        }
        out
    }
}

/// A site or user name as one column: printable ASCII as is except `%`, every other byte
/// (space, controls, non-ASCII) as `%HH`; the empty (anonymous MySQL) user as `(anonymous)`.
pub fn encode_key(key: &[u8]) -> String {
    if key.is_empty() {
        return "(anonymous)".into();
    }
    let mut out = String::with_capacity(key.len());
    for &b in key {
        if (0x21..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A trailer line's number, start and end.
fn trailer(line: &[u8]) -> Option<(u64, u64, u64)> {
    let s = std::str::from_utf8(line).ok()?;
    let f: Vec<&str> = s.split(' ').collect();
    if f.len() != 5 || f[3] != "end" {
        return None;
    }
    let n = |i: usize| f[i].parse::<u64>().ok();
    n(4)?;
    Some((n(0)?, n(1)?, n(2)?))
}

/// Could this be a line of a traffic log (a period line or a trailer, possibly cut short)?
fn traffic_like(line: &[u8]) -> bool {
    let mut it = line.split(|b| *b == b' ');
    (0..3).all(|_| {
        it.next()
            .is_some_and(|w| !w.is_empty() && w.iter().all(u8::is_ascii_digit))
    }) || line.iter().all(u8::is_ascii_digit)
}

/// What the end of an existing file says.
#[derive(Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The last complete period: number and end.
    pub last: Option<(u64, u64)>,
    /// Bytes cut off after it (an interrupted period).
    pub cut: u64,
}

/// Read the end of `path` (a missing file is empty): the last complete period, and cut off
/// what follows it. Errors when the tail is not traffic-log lines (the file is left alone).
pub fn recover(path: &Path) -> io::Result<Recovered> {
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Recovered { last: None, cut: 0 })
        }
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let from = len.saturating_sub(window);
        f.seek(SeekFrom::Start(from))?;
        let mut buf = Vec::with_capacity((len - from) as usize);
        (&mut f).take(len - from).read_to_end(&mut buf)?;
        // Lines wholly inside the window (the first one may be cut unless the window starts
        // the file), from the end.
        let mut found = None;
        let mut tail_ok = true;
        // Bytes after the last newline: an unfinished line, whatever it holds (a write cut
        // anywhere, or the zeros a power loss can leave in a file's last block); it is cut
        // with the rest of its period. Only when no complete line precedes it must it look like
        // a traffic log line: that is all there is to tell a wrong path by.
        let last_nl = memchr::memrchr(b'\n', &buf);
        let unfinished = &buf[last_nl.map_or(0, |i| i + 1)..];
        if last_nl.is_none() && !unfinished.is_empty() && !traffic_like(unfinished) {
            tail_ok = false;
        }
        if let Some(i) = last_nl {
            let mut end = i;
            loop {
                let start = memchr::memrchr(b'\n', &buf[..end]).map(|j| j + 1);
                let Some(start) = start.or((from == 0).then_some(0)) else {
                    break;
                };
                let line = &buf[start..end];
                if let Some((n, _, e)) = trailer(line) {
                    found = Some((n, e, from + end as u64 + 1));
                    break;
                }
                if !traffic_like(line) {
                    tail_ok = false;
                    break;
                }
                if start == 0 {
                    break;
                }
                end = start - 1;
            }
        }
        if !tail_ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "its last lines are not traffic log lines; not touching it",
            ));
        }
        if found.is_none() && from > 0 {
            window = window.saturating_mul(2);
            continue;
        }
        let (last, keep) = match found {
            Some((n, e, keep)) => (Some((n, e)), keep),
            None => (None, 0),
        };
        if keep < len {
            f.set_len(keep)?;
            f.sync_all()?;
        }
        return Ok(Recovered {
            last,
            cut: len - keep,
        });
    }
}

/// Append `text` with one write, then fsync; on failure cut the file back to where it was.
pub fn append(path: &Path, text: &str) -> io::Result<()> {
    let mut f: File = super::writer::open_append(path)?;
    let before = f.metadata()?.len();
    let r = f.write(text.as_bytes()).and_then(|n| {
        if n == text.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write ({n} of {} bytes)", text.len()),
            ))
        }
    });
    match r.and_then(|()| f.sync_data()) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = f.set_len(before);
            Err(e)
        }
    }
}

/// The end of the period that contains `now`: the next multiple of `period` after it.
pub fn boundary_after(now: u64, period: u64) -> u64 {
    let p = period.max(1);
    (now / p + 1) * p
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The traffic log while it is on.
struct Open {
    path: PathBuf,
    period: u64,
    /// Number of the last period written (0: none yet).
    number: u64,
    start: u64,
    next_end: u64,
    base: Totals,
}

impl Open {
    /// Start on `path`: numbering from the file, the base from the counters now, or from zero
    /// when the log is on from the process's start (`from_start`): the traffic a shard serves
    /// before this thread's first tick belongs in the first period.
    fn start(
        shared: &Shared,
        path: &Path,
        period: u64,
        now: u64,
        from_start: bool,
    ) -> Option<Open> {
        let rec = match recover(path) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(event = "traffic_log_refused", path = %path.display(), error = %e, "traffic log: cannot use the file; the traffic log is off until its path changes");
                return None;
            }
        };
        if rec.cut > 0 {
            tracing::warn!(event = "traffic_log_period_cut", path = %path.display(), bytes = rec.cut, after = rec.last.map_or(0, |l| l.0), "traffic log: an interrupted period (no trailer) was cut off the end of the file");
        }
        let number = rec.last.map_or(0, |l| l.0);
        tracing::info!(event = "traffic_log_on", path = %path.display(), period_s = period, next = number + 1, "traffic log on");
        Some(Open {
            path: path.to_path_buf(),
            period,
            number,
            start: if from_start {
                shared
                    .started
                    .duration_since(UNIX_EPOCH)
                    .map_or(now, |d| d.as_secs())
                    .min(now)
            } else {
                now
            },
            next_end: boundary_after(now, period),
            base: if from_start {
                Totals(BTreeMap::new())
            } else {
                Totals::of(shared)
            },
        })
    }

    /// Write the period from `start` to `end` with what grew since the base. On success the
    /// totals become the next base; on failure the period stays open.
    fn write(&mut self, shared: &Shared, end: u64) -> bool {
        let now = Totals::of(shared);
        // The sites of the config running when the period is written bill its whole period.
        let p = Period::new(
            self.number + 1,
            self.start,
            end.max(self.start),
            now.since(&self.base),
            &shared.current().config.sites,
        );
        match append(&self.path, &p.render()) {
            Ok(()) => {
                self.number = p.number;
                self.start = p.end;
                self.base = now;
                *shared
                    .logs
                    .last_period
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(p));
                true
            }
            Err(e) => {
                tracing::error!(event = "traffic_log_write_failed", path = %self.path.display(), error = %e, "traffic log: cannot write a period; its traffic goes into the next one");
                false
            }
        }
    }
}

/// Is the process this one replaced by `upgrade` still running? Its counters are carried
/// into this one's (added to shard 0's when it starts, and once more when it exits) and it
/// writes its own last period when it exits, so this process takes its base only after that:
/// otherwise the carried totals would be counted a second time. (A zombie counts as gone.)
fn replacing(shared: &Shared) -> bool {
    let pid = shared.upgrade.previous_pid.load(Ordering::Relaxed);
    if pid == 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return false;
    }
    // `/proc/PID/stat`: "pid (comm) S ..."; the state follows the last ')'.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next()),
            Some('Z') | Some('X')
        ),
        Err(_) => false,
    }
}

/// Has the replaced process been gone for [`SEED_GRACE`] (time for its last counters, sent
/// as it exits, to reach shard 0)? True at once in a process that replaced none.
fn old_gone(shared: &Shared, since: &mut Option<std::time::Instant>) -> bool {
    if shared.upgrade.previous_pid.load(Ordering::Relaxed) == 0 {
        return true;
    }
    if replacing(shared) {
        return false;
    }
    since.get_or_insert_with(std::time::Instant::now).elapsed() >= SEED_GRACE
}

/// The traffic log thread (see the module head): follows the running config, writes each
/// period, and the last partial one when the daemon stops.
pub fn run(shared: Arc<Shared>) {
    let mut open: Option<Open> = None;
    // A path that could not be used: not tried again until the config names another.
    let mut refused: Option<PathBuf> = None;
    let mut gone = None;
    let mut opened_once = false;
    loop {
        let stopping = shared.logs.stop_traffic.load(Ordering::SeqCst);
        let now = unix_now();
        let conf = shared.current().config.daemon.traffic_log.clone();
        match (&mut open, conf) {
            (Some(o), Some(c)) if o.path == c.path => {
                let period = c.period.as_secs().max(1);
                if period != o.period {
                    o.period = period;
                    o.next_end = boundary_after(o.start.max(now.saturating_sub(1)), period);
                }
                if stopping {
                    o.write(&shared, now);
                } else if now >= o.next_end {
                    let end = o.next_end;
                    o.next_end = boundary_after(now, period);
                    o.write(&shared, end);
                }
            }
            (Some(o), _) => {
                // Turned off, or moved: the period so far goes to the old file.
                o.write(&shared, now);
                open = None;
                continue;
            }
            // Also when the stop came before this thread's first tick: the traffic served
            // until then still gets its period.
            (None, Some(c))
                if refused.as_deref() != Some(&c.path) && old_gone(&shared, &mut gone) =>
            {
                // On from the start: the first config, in a process that replaced none (an
                // upgraded process's counters start from its predecessor's totals, which that
                // one's own periods already hold).
                let from_start = !opened_once
                    && shared.current().number == 1
                    && shared.upgrade.previous_pid.load(Ordering::Relaxed) == 0;
                opened_once = true;
                open = Open::start(&shared, &c.path, c.period.as_secs().max(1), now, from_start);
                refused = open.is_none().then(|| c.path.clone());
                if stopping && open.is_some() {
                    // Round again at once: the stop writes the period.
                    continue;
                }
            }
            (None, _) => {}
        }
        if stopping {
            break;
        }
        std::thread::sleep(TICK);
    }
    shared.logs.traffic_done.store(true, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: Kind, fe: &str, k: &str) -> Key {
        (kind, Arc::from(fe), k.as_bytes().to_vec())
    }

    fn t(r: u64, i: u64, o: u64, us: u64) -> Traffic {
        Traffic {
            requests: r,
            bytes_in: i,
            bytes_out: o,
            time_us: us,
            ..Traffic::default()
        }
    }

    #[test]
    fn periods_are_differences_of_totals() {
        let mut a = Totals::default();
        a.0.insert(key(Kind::Http, "web", "a.example"), t(10, 100, 1000, 50));
        a.0.insert(key(Kind::Mysql, "-", "app"), t(3, 30, 300, 9));
        let mut b = a.clone();
        b.0.insert(key(Kind::Http, "web", "a.example"), t(12, 130, 1500, 70));
        b.0.insert(key(Kind::Http, "web", "b.example"), t(1, 5, 6, 7));
        // Unchanged: no line.
        let rows = b.since(&a);
        assert_eq!(
            rows,
            vec![
                (key(Kind::Http, "web", "a.example"), t(2, 30, 500, 20)),
                (key(Kind::Http, "web", "b.example"), t(1, 5, 6, 7)),
            ]
        );
        // Two consecutive periods sum to the difference over both.
        let mut c = b.clone();
        c.0.insert(key(Kind::Mysql, "-", "app"), t(4, 31, 301, 10));
        let sum: u64 = b
            .since(&a)
            .iter()
            .chain(c.since(&b).iter())
            .map(|(_, t)| t.requests)
            .sum();
        assert_eq!(sum, 2 + 1 + 1);
        let p = Period {
            number: 7,
            start: 100,
            end: 160,
            rows: c.since(&a),
            sites: Vec::new(),
        };
        assert_eq!(
            p.render(),
            "7 100 160 http web a.example 2 30 500 20\n7 100 160 http web b.example 1 5 6 7\n7 100 160 mysql - app 1 1 1 1\n7 100 160 end 3\n"
        );
        assert!(p
            .show(Kind::Mysql)
            .ends_with("last_period app 1 1 1 0.001 0.001\n"));
        assert_eq!(encode_key(b"a b%\xff"), "a%20b%25%FF");
        assert_eq!(encode_key(b""), "(anonymous)");
    }

    #[test]
    fn totals_read_every_shards_sites_and_users() {
        use crate::proxy::mysql::stats::ConnAccount;
        let text = "[daemon]\nshards = 2\n[[http]]\nname = \"web\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"p\"\n[pool.p]\nservers = [{ name = \"a\", addr = \"127.0.0.1:2\" }]\n\
                    [[site]]\nname = \"shop.example\"\nhosts = [\"A.example\"]\nmysql_users = [\"shop\"]\n";
        let file = crate::config::parse(text, "<t>").unwrap();
        let shared = Shared::new(crate::config::from_file(file.clone(), "<t>").unwrap(), file);
        let tables = [
            crate::stats::SiteTable::default(),
            crate::stats::SiteTable::default(),
        ];
        let site = |shard: usize, key: &[u8]| {
            tables[shard]
                .counters(&shared.stats[shard].0, "web", key)
                .unwrap()
        };
        site(0, b"a.example").add(10, 20, 30);
        site(1, b"a.example").add(1, 2, 3);
        let mut conn = ConnAccount::default();
        conn.login(b"shop");
        conn.authenticated();
        conn.command(crate::proto::mysql::com::QUERY);
        conn.bytes_in(7);
        conn.bytes_out(70);
        conn.reply(&shared.mysql_stats[1], true, 500);
        let base = Totals::of(&shared);
        site(1, b"b example").add(5, 6, 7);
        conn.command(crate::proto::mysql::com::QUERY);
        conn.bytes_in(8);
        conn.reply(&shared.mysql_stats[1], true, 100);
        let sites = &shared.current().config.sites;
        let p = Period::new(1, 10, 20, Totals::of(&shared).since(&base), sites);
        // The site line sums the period's lines of its hosts and users; LINES counts it.
        assert_eq!(
            p.render(),
            "1 10 20 http web b%20example 1 5 6 7\n1 10 20 mysql - shop 1 8 0 100\n\
             1 10 20 site - shop.example 0 0 0 0 1 0 8 0 8 0\n1 10 20 end 3\n"
        );
        assert_eq!(
            p.show_sites(),
            "last_period number=1 start=10 end=20 lines=1\n\
             last_period shop.example 0 0 0 0 1 0 8 0 8 0\n"
        );
        let all = Totals::of(&shared).since(&Totals::default());
        assert_eq!(all[0].1, t(2, 11, 22, 33), "summed over shards");
        // Since start: both shards' a.example, the user's login and both commands.
        let bills = sites.bills(all.iter().map(|(k, t)| (k, t)));
        assert_eq!(
            crate::site::line("shop.example", &bills[0]),
            "shop.example 2 11 22 1 2 0 15 70 26 92"
        );
    }

    #[test]
    fn boundaries_are_multiples_of_the_period() {
        assert_eq!(boundary_after(1000, 300), 1200);
        assert_eq!(boundary_after(1200, 300), 1500);
        assert_eq!(boundary_after(5, 1), 6);
    }

    #[test]
    fn recovery_continues_after_the_last_complete_period() {
        let dir = std::env::temp_dir().join(format!("sg-traffic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.log");
        let _ = std::fs::remove_file(&path);
        assert_eq!(recover(&path).unwrap(), Recovered { last: None, cut: 0 });
        let complete = "1 10 20 http web a 1 2 3 4\n1 10 20 end 1\n2 20 30 end 0\n";
        std::fs::write(&path, complete).unwrap();
        assert_eq!(
            recover(&path).unwrap(),
            Recovered {
                last: Some((2, 30)),
                cut: 0
            }
        );
        // An interrupted period: its lines, the last one unfinished.
        let partial = "3 30 40 http web a 1 2 3 4\n3 30 40 http web b 1 2";
        std::fs::write(&path, format!("{complete}{partial}")).unwrap();
        assert_eq!(
            recover(&path).unwrap(),
            Recovered {
                last: Some((2, 30)),
                cut: partial.len() as u64
            }
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), complete);
        // A write cut anywhere, or zeros left by a power loss, after a complete line.
        for tail in ["3 30", "3 3", "\0\0\0\0", "3 30 40 http w\u{e9}b"] {
            std::fs::write(&path, format!("{complete}{tail}")).unwrap();
            assert_eq!(recover(&path).unwrap().last, Some((2, 30)), "{tail:?}");
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                complete,
                "{tail:?}"
            );
        }
        // Only a partial period: cut to nothing, numbering from 1.
        std::fs::write(&path, "1 10 20 http web a 1 2 3 4\n").unwrap();
        assert_eq!(recover(&path).unwrap().last, None);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        // Not a traffic log: left alone.
        std::fs::write(&path, "hello world\n").unwrap();
        assert!(recover(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello world\n");
        std::fs::write(&path, "no newline at all").unwrap();
        assert!(recover(&path).is_err());
        // Site lines are period lines like the others: kept when their trailer is there, cut
        // with their period when it is not.
        let with_sites = "1 10 20 http web a 1 2 3 4\n1 10 20 site - shop.example 1 2 3 0 0 0 0 0 2 3\n1 10 20 end 2\n";
        let cut = "2 20 30 mysql - shop 1 2 3 4\n2 20 30 site - shop.example 0 0 0 1 1 0 2 3 2";
        std::fs::write(&path, format!("{with_sites}{cut}")).unwrap();
        assert_eq!(
            recover(&path).unwrap(),
            Recovered {
                last: Some((1, 20)),
                cut: cut.len() as u64
            }
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), with_sites);
        // A large file: the trailer is found beyond the first window.
        let mut big = String::from(complete);
        let line = "3 30 40 http web a 1 2 3 4\n";
        for _ in 0..(200 * 1024 / line.len()) {
            big.push_str(line);
        }
        std::fs::write(&path, &big).unwrap();
        assert_eq!(recover(&path).unwrap().last, Some((2, 30)));
        append(&path, "3 30 40 end 0\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{complete}3 30 40 end 0\n")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
