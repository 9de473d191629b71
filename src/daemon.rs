//! The daemon's life: log the limits that shape it, bind every listener, the command socket and
//! the admin listener (failing fast with a clear message), start the shards with the protocols above them
//! ([`Protocols`]: which protocol serves each listener), then wait for SIGTERM/SIGINT or
//! `stop daemon`, let the shards drain within `daemon.stop_timeout`, remove the socket, exit 0.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::file::FileConfig;
use crate::config::Config;
use crate::proxy::http::HttpShard;
use crate::proxy::{mysql, Front, ShardCtx};
use crate::rt::TcpStream;
use crate::shard::{self, ConnFuture, ConnGuard, Listen, Service, Shard, ShardService};
use crate::shared::Shared;

/// The protocols above the shards: on each shard, the HTTP and MySQL state and the dispatch
/// from a listening address to the frontend the running config has there.
struct Protocols {
    shared: Arc<Shared>,
}

/// One shard's protocols.
struct ShardProtocols {
    ctx: Rc<ShardCtx>,
    http: Rc<HttpShard>,
}

impl Service for Protocols {
    fn start(&self, shard: &Rc<Shard>) -> Rc<dyn ShardService> {
        let ctx = ShardCtx::new(shard, self.shared.clone());
        let http = HttpShard::new(ctx.clone());
        mysql::start_shard(&ctx);
        if shard.id == 0 {
            // Counters carried over by an upgrade, before the first connection.
            let seed = self
                .shared
                .upgrade
                .seed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(t) = seed {
                t.apply(&self.shared, &http.sites);
            }
        }
        Rc::new(ShardProtocols { ctx, http })
    }
}

impl ShardService for ShardProtocols {
    fn serve(
        &self,
        listen: SocketAddr,
        stream: TcpStream,
        peer: SocketAddr,
        guard: ConnGuard,
    ) -> Option<ConnFuture> {
        let view = self.ctx.view();
        match view.front_at(listen)? {
            Front::Http(i) => Some(Box::pin(
                self.http.clone().serve(view, i, stream, peer, guard, false),
            )),
            Front::Mysql(i) => Some(Box::pin(mysql::serve_client(
                self.ctx.clone(),
                view,
                i,
                stream,
                peer,
                guard,
            ))),
        }
    }

    fn refresh(&self) {
        self.ctx.refresh();
    }

    fn adopt(
        &self,
        frontend: &str,
        stream: TcpStream,
        peer: SocketAddr,
        guard: ConnGuard,
    ) -> Option<ConnFuture> {
        let view = self.ctx.view();
        let i = view.http.iter().position(|f| f.conf.name == frontend)?;
        Some(Box::pin(
            self.http.clone().serve(view, i, stream, peer, guard, true),
        ))
    }

    fn seed(&self, totals: &crate::upgrade::totals::Totals) {
        totals.apply(&self.ctx.shared, &self.http.sites);
    }
}

/// Each shard's listening sockets: those inherited from the process this one replaces (same
/// sockets, so nothing in their backlogs is lost), spread over the shards, and new ones bound
/// for addresses (or shards) that have none. Inherited sockets for addresses the config no
/// longer has are closed.
fn assign_listeners(
    shards: usize,
    listen: &[Listen],
    mut inherited: Vec<(SocketAddr, std::net::TcpListener)>,
) -> Result<Vec<Vec<std::net::TcpListener>>, String> {
    let mut per_shard: Vec<Vec<std::net::TcpListener>> = (0..shards).map(|_| Vec::new()).collect();
    for l in listen {
        let mut mine = Vec::new();
        let mut i = 0;
        while i < inherited.len() {
            if inherited[i].0 == l.addr {
                mine.push(inherited.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        let have = mine.len();
        for (k, sock) in mine.into_iter().enumerate() {
            per_shard[k % shards].push(sock);
        }
        if have < shards {
            let more = shard::bind_all(shards - have, std::slice::from_ref(l))?;
            for (k, mut ls) in more.into_iter().enumerate() {
                per_shard[have + k].append(&mut ls);
            }
        }
    }
    Ok(per_shard)
}

/// Every address of `config`, with its frontend's name for messages.
pub(crate) fn listen_of(config: &Config) -> Vec<Listen> {
    let http = config.http.iter().map(|f| (&f.name, &f.listen));
    let my = config.mysql.iter().map(|f| (&f.name, &f.listen));
    http.chain(my)
        .flat_map(|(name, addrs)| {
            addrs.iter().map(|&addr| Listen {
                addr,
                name: name.clone(),
            })
        })
        .collect()
}

/// Start the daemon with a validated config; returns the process exit code.
pub fn run(config: Config, file: FileConfig) -> u8 {
    run_with(config, file, None)
}

/// Start as the new process of a binary upgrade: `fd` is the channel to the old one (see
/// [`crate::upgrade`]). A config that does not validate is reported to the old process, which
/// serves on.
pub fn run_upgraded(config: Result<(Config, FileConfig), String>, fd: RawFd) -> u8 {
    match config {
        // SAFETY: `fd` is the descriptor the old process passed with --upgrade-fd.
        Ok((config, file)) => run_with(config, file, Some(fd)),
        Err(e) => {
            // SAFETY: as above.
            unsafe { crate::upgrade::refuse(fd, &e) };
            eprintln!("shardgate: {e}");
            2
        }
    }
}

fn run_with(mut config: Config, file: FileConfig, upgrade_fd: Option<RawFd>) -> u8 {
    init_logging();
    let nofile = raise_nofile_limit();
    let mut daemon_conf = config.daemon.clone();
    let budget = FdBudget::of(&config, nofile);
    budget.log(daemon_conf.max_connections, nofile);
    daemon_conf.max_connections = daemon_conf.max_connections.min(budget.clients);
    if let Some(limit) = daemon_conf.memory_limit {
        crate::mem::set_limit(limit);
        tracing::info!(
            event = "memory_limit_set",
            limit_mib = limit >> 20,
            held_mib = crate::mem::held() >> 20,
            "memory ceiling"
        );
    }
    let listen = listen_of(&config);
    let dns = crate::dns::refresh::initial(&mut config);
    let mut seed = None;
    let inherited = match upgrade_fd {
        // SAFETY: the descriptor the old process passed with --upgrade-fd.
        Some(fd) => match unsafe { crate::upgrade::inherit(fd, &mut seed) } {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(event = "upgrade_inherit_failed", "{e}");
                eprintln!("shardgate: {e}");
                return 1;
            }
        },
        None => None,
    };
    let shared = Shared::new(config, file);
    shared
        .life
        .max_connections
        .store(daemon_conf.max_connections, Ordering::Relaxed);
    *shared
        .upgrade
        .binary
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = std::env::current_exe().ok();
    *shared.dns.lock().unwrap_or_else(|e| e.into_inner()) = dns;
    let protocols = Protocols {
        shared: shared.clone(),
    };
    let (channel, inherited_listeners, inherited_control) = match inherited {
        Some((inh, upgrades, pid)) => {
            shared.upgrade.upgrades.store(upgrades, Ordering::Relaxed);
            shared.upgrade.previous_pid.store(pid, Ordering::Relaxed);
            *shared
                .upgrade
                .seed
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = seed;
            let control = inh.control.map(|l| (l, inh.control_path));
            (Some(inh.channel), inh.listeners, control)
        }
        None => (None, Vec::new(), None),
    };
    // A log file that cannot be opened stops the start, before anything listens.
    if let Err(e) = crate::log::check_paths(&shared.current().config) {
        tracing::error!(event = "log_open_failed", "{e}");
        eprintln!("shardgate: {e}");
        if let Some(ch) = &channel {
            crate::upgrade::refuse_on(ch, &e);
        }
        return 1;
    }
    let listeners = match assign_listeners(daemon_conf.shards, &listen, inherited_listeners) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(event = "listen_failed", "{e}");
            eprintln!("shardgate: {e}");
            return 1;
        }
    };
    for ls in &listeners {
        for l in ls {
            if let Ok(addr) = l.local_addr() {
                shared.upgrade.register_listener(addr, l.as_raw_fd());
            }
        }
    }
    // An inherited command socket stays where it is (a changed control_socket needs a restart).
    let socket_path = match &inherited_control {
        Some((_, Some(p))) => p.clone(),
        _ => daemon_conf.control_socket.clone(),
    };
    let bound = match inherited_control {
        Some((l, _)) => crate::control::adopt(&socket_path).map(|f| (l, f)),
        None => crate::control::bind(&socket_path),
    };
    let (control, socket_file) = match bound {
        Ok(l) => l,
        Err(e) => {
            let msg = format!(
                "cannot create control socket {}: {e}",
                socket_path.display()
            );
            tracing::error!(event = "control_socket_failed", "{msg}");
            eprintln!("shardgate: {msg}");
            return 1;
        }
    };
    shared
        .upgrade
        .register_control(control.as_raw_fd(), &socket_path);
    let admin = match crate::admin::bind(&shared.current().config) {
        Ok(a) => a,
        Err(e) => {
            let msg = format!(
                "{}: admin.listen: cannot listen: {e}",
                shared.current().config.source.display()
            );
            tracing::error!(event = "admin_listen_failed", "{msg}");
            eprintln!("shardgate: {msg}");
            match &channel {
                // The old process keeps the command socket and serves on.
                Some(ch) => crate::upgrade::refuse_on(ch, &msg),
                None => socket_file.remove(),
            }
            return 1;
        }
    };
    let shards = daemon_conf.shards;
    let source = shared.current().config.source.display().to_string();
    // Render the canned error responses now, not on a shard's first error.
    crate::proto::http::answers::init();
    let handles = match shard::spawn(&daemon_conf, &shared, listeners, Arc::new(protocols)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("shardgate: cannot start shard threads: {e}");
            if let Some(ch) = &channel {
                // The old process keeps the command socket and serves on.
                crate::upgrade::refuse_on(ch, &format!("cannot start shard threads: {e}"));
            } else {
                socket_file.remove();
            }
            return 1;
        }
    };
    if let Err(e) = crate::log::start(&shared) {
        tracing::error!(event = "log_start_failed", error = %e, "cannot start the log threads; no access or traffic log");
    }
    let health = match crate::health::start(&shared) {
        Ok(h) => h,
        Err(e) => {
            // The shards run; without checks servers are judged by their connects only.
            tracing::error!(event = "health_start_failed", error = %e, "cannot start the health checker thread");
            None
        }
    };
    {
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || crate::control::serve(control, shared, || {}));
    }
    if let Some(listener) = admin {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        match crate::admin::start(listener, shared.clone()) {
            Ok(()) => {
                tracing::info!(event = "admin_started", listen = %addr, "admin listener started")
            }
            Err(e) => {
                tracing::error!(event = "admin_start_failed", error = %e, "cannot start the admin listener")
            }
        }
    }
    if let Err(e) = crate::dns::refresh::start(shared.clone()) {
        tracing::error!(event = "dns_start_failed", error = %e, "cannot start the resolver thread; server names stay as resolved at start");
    }
    {
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || wait_stop_signal(&shared));
    }
    tracing::info!(event = "started", config = %source, shards, socket = %socket_path.display(), "shardgate started");
    // An upgrade's new process: serving once every shard runs; then the old one hands over.
    // If a shard did not start, the old process is told why and serves on (and keeps its
    // command socket: this process must not remove it).
    let mut keep_socket = false;
    let all_up = || {
        shared.life.running.load(Ordering::SeqCst) == shards
            && !shared.life.stopping.load(Ordering::SeqCst)
            && shared.all_applied(1)
    };
    // A fresh start tells systemd it serves once every shard runs (below, in the main loop).
    let mut announced = channel.is_some();
    if let Some(ch) = channel {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_up() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if all_up() {
            // Before the old process hears it: systemd must know the new main PID before
            // the old one can exit.
            crate::notify::took_over();
            crate::upgrade::adopt(shared.clone(), ch);
        } else {
            crate::upgrade::refuse_on(&ch, "not every shard started (see the new process's log)");
            keep_socket = true;
            shared.life.stopping.store(true, Ordering::SeqCst);
        }
    }

    while !shared.life.stopping.load(Ordering::SeqCst) {
        if !announced && all_up() {
            crate::notify::ready();
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(10));
        crate::mem::update();
    }
    // Silent after an upgrade's handover (the new process is the service now).
    crate::notify::stopping();
    let stop_timeout = shared.current().config.daemon.stop_timeout;
    tracing::info!(event = "stopping", deadline = ?stop_timeout, "stopping: no new connections, draining in-flight requests");
    let deadline = Instant::now() + stop_timeout + Duration::from_secs(1);
    while shared.life.running.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if shared.upgrade.replaced.load(Ordering::SeqCst) {
        // The command socket is the new process's now.
        crate::upgrade::finish(&shared);
    } else if !keep_socket {
        socket_file.remove();
    }
    if shared.life.running.load(Ordering::SeqCst) > 0 {
        tracing::warn!(
            event = "stop_deadline_passed",
            "shards did not finish before the stop deadline; exiting anyway"
        );
    } else {
        for h in handles {
            let _ = h.join();
        }
        if let Some(h) = health {
            let _ = h.join();
        }
    }
    // After the shards (their last access log lines are sent): the last lines, the last period.
    crate::log::finish(&shared);
    tracing::info!(event = "stopped", "shardgate stopped");
    0
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SHARDGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// How the open-file limit is shared out: descriptors for listeners, the command socket, spare
/// pipes and health checks first, then one upstream connection per client, but never more
/// upstream connections than the pools allow (`max_connections_per_server` × servers × shards,
/// plus one per MySQL client). Whatever is left is the client cap, so 16,000 clients cannot
/// take the descriptors the proxy needs to reach a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FdBudget {
    /// Descriptors held whatever the load: listeners, pipes kept for splicing, and a margin.
    fixed: u64,
    /// Upstream connections the pools can open at most (HTTP slots plus MySQL backends).
    upstream: u64,
    /// Client connections the rest allows.
    clients: usize,
}

impl FdBudget {
    /// Margin for the command socket, log files, health checks and the runtime's own fds.
    const MARGIN: u64 = 64;

    fn of(config: &Config, nofile: u64) -> FdBudget {
        let shards = config.daemon.shards as u64;
        let listeners: u64 = config
            .http
            .iter()
            .map(|f| f.listen.len() as u64)
            .sum::<u64>()
            + config
                .mysql
                .iter()
                .map(|f| f.listen.len() as u64)
                .sum::<u64>();
        let fixed = Self::MARGIN + shards * (listeners + 2 * crate::rt::PIPE_POOL as u64);
        let http_slots: u64 = config
            .pools
            .iter()
            .map(|p| p.servers.len() as u64 * p.max_connections_per_server as u64)
            .sum::<u64>()
            * shards;
        let mysql: u64 = config.mysql.iter().map(|m| m.max_connections as u64).sum();
        let upstream = http_slots.saturating_add(mysql);
        let left = nofile.saturating_sub(fixed);
        // Either every client may hold one upstream connection (two descriptors each), or the
        // pools' bound is reached first and every further client costs one descriptor.
        let paired = (left / 2).min(upstream);
        let bounded = left.saturating_sub(upstream);
        let clients = paired.max(bounded).max(1);
        FdBudget {
            fixed,
            upstream,
            clients: usize::try_from(clients).unwrap_or(usize::MAX),
        }
    }

    fn log(&self, configured: usize, nofile: u64) {
        if self.clients < configured {
            tracing::warn!(event = "fd_budget_low",
                open_files = nofile,
                max_connections = configured,
                client_cap = self.clients,
                reserved_upstream = self.upstream,
                reserved_fixed = self.fixed,
                "the open-file limit is too low for daemon.max_connections: clients capped so upstream connections keep their descriptors (raise LimitNOFILE / ulimit -n)"
            );
        } else {
            tracing::info!(
                event = "fd_budget",
                open_files = nofile,
                max_connections = configured,
                reserved_upstream = self.upstream,
                reserved_fixed = self.fixed,
                "descriptor budget"
            );
        }
    }
}

/// The client connection cap for `config` under the open-file limit in force now.
pub(crate) fn client_cap(config: &Config) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a properly sized rlimit struct.
    let nofile = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        u64::MAX
    };
    let budget = FdBudget::of(config, nofile);
    config.daemon.max_connections.min(budget.clients)
}

/// Raise the soft open-file limit to the hard one and log both limits that shape capacity.
/// Returns the open-file limit in force.
fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read a properly sized rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    let mut mem = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    unsafe {
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut mem);
    }
    tracing::info!(
        event = "limits",
        open_files = lim.rlim_cur,
        memlock_bytes = mem.rlim_cur,
        "limits"
    );
    lim.rlim_cur
}

fn stop_signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        set
    }
}

/// Block SIGTERM/SIGINT/SIGHUP/SIGUSR1 in this thread before any other starts, so that every thread inherits
/// the mask and only the signal thread receives them (through sigwait). `main` calls it first.
pub fn block_stop_signals() {
    let set = stop_signal_set();
    // SAFETY: a valid sigset_t; the old mask is not needed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// The signal thread: SIGTERM/SIGINT stop the daemon; SIGHUP reloads the config (as `ctl
/// reload`: a bad file is logged and the running config stays); SIGUSR1 reopens the logs.
fn wait_stop_signal(shared: &Arc<Shared>) {
    let set = stop_signal_set();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait with a valid set and out-pointer.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc != 0 {
            return;
        }
        if sig == libc::SIGHUP {
            tracing::info!(
                event = "reload_signal",
                signal = sig,
                "SIGHUP: reloading the config"
            );
            match crate::reload::reload(shared) {
                Ok(a) => {
                    for w in &a.warnings {
                        tracing::warn!(event = "reload_warning", "reload: {w}");
                    }
                }
                Err(e) => {
                    tracing::error!(event = "reload_refused", error = %e, "reload refused; the running config stays")
                }
            }
            continue;
        }
        if sig == libc::SIGUSR1 {
            tracing::info!(
                event = "reopen_signal",
                signal = sig,
                "SIGUSR1: reopening the logs"
            );
            if let Err(e) = crate::log::reopen(shared) {
                tracing::warn!(event = "reopen_failed", "reopen: {e}");
            }
            continue;
        }
        tracing::info!(event = "stop_signal", signal = sig, "stop signal received");
        shared.life.stopping.store(true, Ordering::SeqCst);
        return;
    }
}

/// `shardgate demo`: two in-process backends answering with their own name, and the proxy in
/// front of them, round-robin. Needs nothing but the binary.
pub fn demo(listen: &str, shards: usize) -> u8 {
    let mut addrs = Vec::new();
    for name in ["demo-a", "demo-b"] {
        match crate::demo::start_backend(name) {
            Ok(a) => addrs.push(a),
            Err(e) => {
                eprintln!("shardgate demo: cannot start backend {name}: {e}");
                return 1;
            }
        }
    }
    let socket = std::env::temp_dir().join("shardgate-demo.sock");
    let toml = format!(
        "[daemon]\nshards = {shards}\ncontrol_socket = \"{}\"\n\n[[http]]\nname = \"demo\"\nlisten = [\"{listen}\"]\ndefault_pool = \"demo\"\n\n[pool.demo]\nbalance = \"round_robin\"\nservers = [\n  {{ name = \"demo-a\", addr = \"{}\" }},\n  {{ name = \"demo-b\", addr = \"{}\" }},\n]\n",
        socket.display(),
        addrs[0],
        addrs[1]
    );
    let parsed = crate::config::parse(&toml, "<demo>")
        .and_then(|f| Ok((crate::config::from_file(f.clone(), "<demo>")?, f)));
    let (config, file) = match parsed {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardgate demo: {e}");
            return 2;
        }
    };
    eprintln!(
        "shardgate demo: proxy on http://{listen}/ in front of demo-a ({}) and demo-b ({}).\n  try: curl -s http://{listen}/   |   shardgate ctl --socket {} 'show stats'   |   Ctrl-C stops",
        addrs[0],
        addrs[1],
        socket.display()
    );
    run(config, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(servers: usize, per_server: usize, shards: usize) -> Config {
        let servers: Vec<String> = (0..servers)
            .map(|i| format!("{{ name = \"s{i}\", addr = \"127.0.0.1:{}\" }}", 1000 + i))
            .collect();
        let toml = format!(
            "[daemon]\nshards = {shards}\n[[http]]\nname = \"w\"\nlisten = [\"127.0.0.1:1\"]\ndefault_pool = \"p\"\n[pool.p]\nmax_connections_per_server = {per_server}\nmax_idle_per_server = 1\nservers = [{}]\n",
            servers.join(", ")
        );
        crate::config::from_str(&toml, "<test>").unwrap()
    }

    #[test]
    fn clients_leave_descriptors_for_upstream_connections() {
        // 2 shards × (1 listener + 128 pipe fds) + 64 = 322 fixed; 2 × 2 × 512 = 2048 upstream.
        let b = FdBudget::of(&config(2, 512, 2), 20_000);
        assert_eq!((b.fixed, b.upstream), (322, 2048));
        assert_eq!(b.clients, 20_000 - 322 - 2048);
        // A low limit: every client may need its own upstream connection.
        let b = FdBudget::of(&config(2, 512, 2), 1024);
        assert_eq!(b.clients, (1024 - 322) / 2);
        // Pools so large that the limit binds first: still half for clients.
        let b = FdBudget::of(&config(50, 512, 8), 20_000);
        assert_eq!(b.clients as u64, (20_000 - b.fixed) / 2);
        // Below the fixed reserve: one client, never zero.
        assert_eq!(FdBudget::of(&config(1, 1, 1), 10).clients, 1);
    }
}
