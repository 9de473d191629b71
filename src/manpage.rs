//! `shardgate manpage` (hidden): the man page, `shardgate(8)`, generated from the CLI itself so
//! it cannot drift from `--help`. clap_mangen renders the name, synopsis, description and
//! options; each visible subcommand gets its own subsection with its arguments (one page for
//! the whole tool, as `man shardgate` is what an operator types), and what clap does not know
//! (exit codes, signals, files, environment) is written here. The .deb ships it gzipped as
//! `/usr/share/man/man8/shardgate.8.gz` (`config/deb/build.sh`).

use std::io::Write;

/// Write the page (roff) to `out`.
pub fn render(cmd: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    commands(&cmd, out)?;
    out.write_all(EXTRA.as_bytes())?;
    man.render_version_section(out)?;
    Ok(())
}

/// `COMMANDS`: one subsection per visible subcommand, with its arguments.
fn commands(cmd: &clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut usage = format!("{} {}", cmd.get_name(), sub.get_name());
        for a in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            if a.is_positional() {
                usage.push_str(&format!(" {}", value_names(a)));
            }
        }
        writeln!(out, ".SS \"{}\"", escape(&usage))?;
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            writeln!(out, "{}", escape(&about.to_string()))?;
        }
        for a in sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set())
        {
            let mut head = Vec::new();
            if let Some(l) = a.get_long() {
                head.push(format!("\\fB\\-\\-{}\\fR", escape(l)));
            }
            if let Some(s) = a.get_short() {
                head.push(format!("\\fB\\-{}\\fR", escape(&s.to_string())));
            }
            let mut line = head.join(", ");
            if a.get_action().takes_values() {
                line.push(' ');
                line.push_str(&format!("\\fI{}\\fR", escape(&value_names(a))));
            }
            writeln!(out, ".TP\n{}", line.trim_start())?;
            let mut help = a
                .get_long_help()
                .or(a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let defaults: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            if !defaults.is_empty() {
                help.push_str(&format!(" [default: {}]", defaults.join(", ")));
            }
            writeln!(out, "{}", escape(&help))?;
        }
    }
    Ok(())
}

fn value_names(a: &clap::Arg) -> String {
    match a.get_value_names() {
        Some(names) => names
            .iter()
            .map(|n| n.as_str().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        None => a.get_id().as_str().to_uppercase(),
    }
}

/// Text for a roff line: backslashes and dashes escaped, no line starting a request.
fn escape(text: &str) -> String {
    let body = text.replace('\\', "\\e").replace('-', "\\-");
    if body.starts_with('.') || body.starts_with('\'') {
        format!("\\&{body}")
    } else {
        body
    }
}

/// What the CLI definition does not say.
const EXTRA: &str = r#".SH EXIT STATUS
.TP
\fB0\fR
Stopped cleanly, or \fB\-\-check\fR passed.
.TP
\fB1\fR
Runtime error at start (an address in use, the command socket cannot be created, a shard
runtime failed), or \fBctl\fR got an \fBerror:\fR answer.
.TP
\fB2\fR
Bad configuration or command line; the message names the file, the key path and the problem.
\fBctl\fR exits 2 when it cannot reach the command socket.
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Graceful stop: listeners close, in\-flight requests finish within \fBdaemon.stop_timeout\fR.
.TP
\fBSIGHUP\fR
Reload the configuration file (as \fBshardgate ctl reload\fR); a bad file is logged and the
running configuration stays.
.SH COMMAND SOCKET
\fBshardgate ctl help\fR lists the commands: \fBshow stats\fR, \fBshow servers\fR,
\fBshow info\fR, \fBreload\fR, \fBupgrade\fR, \fBenable server\fR, \fBdisable server\fR,
\fBstop daemon\fR and more. \fBupgrade\fR starts the new binary with the listening sockets of
the running one and hands its idle connections over: nothing is refused or reset.
.SH FILES
.TP
\fI/etc/shardgate/shardgate.toml\fR
The configuration (\fB\-\-config\fR).
.TP
\fI/run/shardgate/shardgate.sock\fR
The command socket (\fBdaemon.control_socket\fR), mode 0600, for root and the daemon's user.
.TP
\fI/lib/systemd/system/shardgate.service\fR
The systemd unit (\fBType=notify\fR; follows binary upgrades through \fBMAINPID=\fR).
.SH ENVIRONMENT
.TP
\fBSHARDGATE_LOG\fR
A tracing filter for the log on standard error (default \fBinfo\fR).
.TP
\fBNOTIFY_SOCKET\fR
Set by systemd: readiness, reload, upgrade and stop are reported there (sd_notify protocol).
.TP
\fBMONOIO_FORCE_LEGACY_DRIVER\fR
Set to 1 to use epoll instead of io_uring.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBsystemd.service\fR(5).
The documentation in \fI/usr/share/doc/shardgate/\fR: \fBoperations.md\fR (reload, upgrade,
limits, log events), \fBconfiguration.md\fR (every key), \fBcontrol.md\fR (the command socket).
"#;
