//! The daemon's life: log the limits that shape it, bind every listener and the command socket
//! (failing fast with a clear message), start the shards with the protocols above them
//! ([`Protocols`]: which protocol serves each listener), then wait for SIGTERM/SIGINT or
//! `stop daemon`, let the shards drain within `daemon.stop_timeout`, remove the socket, exit 0.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::proxy::http::HttpShard;
use crate::proxy::{mysql, ShardCtx};
use crate::shard::{self, Handler, Listen, Service, Shard};
use crate::shared::Shared;

/// What a listener serves.
#[derive(Clone, Copy, Debug)]
enum Front {
    Http(usize),
    Mysql(usize),
}

/// The dispatch from listeners to protocols, and each protocol's start on a shard.
struct Protocols {
    shared: Arc<Shared>,
    /// Indexed by listener tag.
    fronts: Vec<Front>,
}

impl Protocols {
    fn new(shared: Arc<Shared>) -> (Protocols, Vec<Listen>) {
        let config = &shared.config;
        let mut fronts = Vec::new();
        let mut listen = Vec::new();
        let http = config
            .http
            .iter()
            .enumerate()
            .map(|(i, f)| (Front::Http(i), &f.name, &f.listen));
        let my = config
            .mysql
            .iter()
            .enumerate()
            .map(|(i, f)| (Front::Mysql(i), &f.name, &f.listen));
        for (front, name, addrs) in http.chain(my) {
            let tag = fronts.len();
            fronts.push(front);
            listen.extend(addrs.iter().map(|&addr| Listen {
                tag,
                addr,
                name: name.clone(),
            }));
        }
        (Protocols { shared, fronts }, listen)
    }
}

impl Service for Protocols {
    fn start(&self, shard: &Rc<Shard>) -> Vec<Handler> {
        let ctx = ShardCtx::new(shard, self.shared.clone());
        let http = HttpShard::new(ctx.clone());
        mysql::start_shard(&ctx);
        self.fronts
            .iter()
            .map(|&front| -> Handler {
                match front {
                    Front::Http(i) => {
                        let http = http.clone();
                        Rc::new(move |stream, peer, guard| {
                            Box::pin(http.clone().serve(i, stream, peer, guard))
                        })
                    }
                    Front::Mysql(i) => {
                        let ctx = ctx.clone();
                        Rc::new(move |stream, peer, guard| {
                            Box::pin(mysql::serve_client(ctx.clone(), i, stream, peer, guard))
                        })
                    }
                }
            })
            .collect()
    }
}

/// Start the daemon with a validated config; returns the process exit code.
pub fn run(config: Config) -> u8 {
    init_logging();
    raise_nofile_limit();
    let daemon_conf = config.daemon.clone();
    let shared = Shared::new(config);
    let (protocols, listen) = Protocols::new(shared.clone());
    let listeners = match shard::bind_all(daemon_conf.shards, &listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("shardgate: {e}");
            return 1;
        }
    };
    let socket_path = daemon_conf.control_socket.clone();
    let (control, socket_file) = match crate::control::bind(&socket_path) {
        Ok(l) => l,
        Err(e) => {
            let msg = format!(
                "cannot create control socket {}: {e}",
                socket_path.display()
            );
            tracing::error!("{msg}");
            eprintln!("shardgate: {msg}");
            return 1;
        }
    };
    let shards = daemon_conf.shards;
    let stop_timeout = daemon_conf.stop_timeout;
    let source = shared.config.source.display().to_string();
    // Render the canned error responses now, not on a shard's first error.
    crate::proto::http::answers::init();
    let handles = match shard::spawn(
        &daemon_conf,
        shared.life.clone(),
        &shared.stats,
        listeners,
        Arc::new(protocols),
    ) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("shardgate: cannot start shard threads: {e}");
            socket_file.remove();
            return 1;
        }
    };
    {
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || crate::control::serve(control, shared, || {}));
    }
    {
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || wait_stop_signal(&shared));
    }
    tracing::info!(config = %source, shards, socket = %socket_path.display(), "shardgate started");

    while !shared.life.stopping.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!(deadline = ?stop_timeout, "stopping: no new connections, draining in-flight requests");
    let deadline = Instant::now() + stop_timeout + Duration::from_secs(1);
    while shared.life.running.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    socket_file.remove();
    if shared.life.running.load(Ordering::SeqCst) > 0 {
        tracing::warn!("shards did not finish before the stop deadline; exiting anyway");
    } else {
        for h in handles {
            let _ = h.join();
        }
    }
    tracing::info!("shardgate stopped");
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

/// Raise the soft open-file limit to the hard one and log both limits that shape capacity.
fn raise_nofile_limit() {
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
        open_files = lim.rlim_cur,
        memlock_bytes = mem.rlim_cur,
        "limits"
    );
}

fn stop_signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Block SIGTERM/SIGINT in this thread before any other starts, so that every thread inherits
/// the mask and only the signal thread receives them (through sigwait). `main` calls it first.
pub fn block_stop_signals() {
    let set = stop_signal_set();
    // SAFETY: a valid sigset_t; the old mask is not needed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn wait_stop_signal(shared: &Arc<Shared>) {
    let set = stop_signal_set();
    let mut sig: libc::c_int = 0;
    // SAFETY: sigwait with a valid set and out-pointer.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc == 0 {
        tracing::info!(signal = sig, "stop signal received");
        shared.life.stopping.store(true, Ordering::SeqCst);
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
    let config = match crate::config::from_str(&toml, "<demo>") {
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
    run(config)
}
