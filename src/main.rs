//! `shardgate`: the daemon, its `ctl` client and a self-contained `demo`.
//! The work lives in [`shardgate::run`]; this file maps the CLI onto it and results onto
//! exit codes (0 ok, 1 runtime error, 2 bad configuration or usage).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod manpage;

/// Counts the heap the daemon holds, for `daemon.memory_limit` and `show stats`.
#[global_allocator]
static ALLOC: shardgate::CountingAlloc = shardgate::CountingAlloc;

#[derive(Parser)]
#[command(
    name = "shardgate",
    version,
    about = "Sharded thread-per-core load balancer for HTTP/1.1 and MySQL",
    long_about = "Sharded thread-per-core load balancer for HTTP/1.1 and MySQL.\n\nWithout a command, runs the daemon in the foreground with the configuration file (--config), logging to standard error, until SIGTERM or SIGINT; SIGHUP reloads the file. `shardgate ctl` talks to a running daemon."
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short = 'c',
        default_value = "/etc/shardgate/shardgate.toml",
        global = true
    )]
    config: PathBuf,
    /// Validate the configuration, print a one-line summary and exit (0 valid, 2 invalid).
    #[arg(long)]
    check: bool,
    /// Internal: started by `shardgate ctl upgrade`; the channel to the running daemon.
    #[arg(long, hide = true)]
    upgrade_fd: Option<i32>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send one command to a running daemon's command socket and print the answer.
    Ctl {
        /// Command socket (default: daemon.control_socket of --config, else /run/shardgate/shardgate.sock).
        #[arg(long, short = 's')]
        socket: Option<PathBuf>,
        /// Print the answer as one JSON document (show stats, show traffic http|mysql, show servers).
        #[arg(long)]
        json: bool,
        /// The command, e.g. 'show stats' (try 'help').
        #[arg(required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Read a password (one line) from standard input and print its argon2id hash, for
    /// `[admin] users = [{ name = "...", password_hash = "...", role = "admin" }]`.
    HashPassword,
    /// Run the proxy in front of two built-in demo backends that answer with their own name.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Shards (0 = one per CPU).
        #[arg(long, default_value_t = 0)]
        shards: usize,
    },
    /// Print the man page (roff) on standard output.
    #[command(hide = true)]
    Manpage,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.cmd,
        Some(Cmd::Ctl { .. } | Cmd::HashPassword | Cmd::Manpage)
    ) {
        shardgate::block_stop_signals();
    }
    let code = match cli.cmd {
        Some(Cmd::Ctl {
            socket,
            json,
            command,
        }) => {
            let line = command.join(" ");
            let line = if json {
                format!("{} {line}", shardgate::CTL_JSON_PREFIX)
            } else {
                line
            };
            ctl(socket, &cli.config, &line)
        }
        Some(Cmd::HashPassword) => hash_password(),
        Some(Cmd::Demo { listen, shards }) => shardgate::demo(&listen, shards),
        Some(Cmd::Manpage) => {
            match manpage::render(Cli::command(), &mut std::io::stdout().lock()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("shardgate manpage: {e}");
                    1
                }
            }
        }
        None if cli.check => check(&cli.config),
        None if cli.upgrade_fd.is_some() => shardgate::run_upgraded(
            shardgate::config::load_with_file(&cli.config).map_err(|e| e.to_string()),
            cli.upgrade_fd.unwrap_or(-1),
        ),
        None => match shardgate::config::load_with_file(&cli.config) {
            Ok((config, file)) => shardgate::run(config, file),
            Err(e) => {
                eprintln!("shardgate: {e}");
                2
            }
        },
    };
    ExitCode::from(code)
}

fn check(path: &std::path::Path) -> u8 {
    match shardgate::config::load(path) {
        Ok(c) => {
            let servers: usize = c.pools.iter().map(|p| p.servers.len()).sum();
            println!(
                "{}: ok: {} http frontend(s), {} mysql frontend(s), {} pool(s), {} server(s), {} shard(s)",
                path.display(),
                c.http.len(),
                c.mysql.len(),
                c.pools.len(),
                servers,
                c.daemon.shards
            );
            0
        }
        Err(e) => {
            eprintln!("shardgate: {e}");
            2
        }
    }
}

fn hash_password() -> u8 {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("shardgate hash-password: cannot read standard input: {e}");
        return 1;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    match shardgate::hash_password(password) {
        Ok(h) => {
            println!("{h}");
            0
        }
        Err(e) => {
            eprintln!("shardgate hash-password: {e}");
            2
        }
    }
}

fn ctl(socket: Option<PathBuf>, config: &std::path::Path, command: &str) -> u8 {
    let socket = socket.unwrap_or_else(|| match shardgate::config::load(config) {
        Ok(c) => c.daemon.control_socket,
        Err(_) => shardgate::default_socket(),
    });
    match shardgate::ctl_client(&socket, command) {
        Ok(answer) => {
            print!("{answer}");
            if answer.starts_with("error:") {
                1
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("shardgate ctl: cannot talk to {}: {e}", socket.display());
            2
        }
    }
}
