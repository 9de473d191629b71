//! Shared pieces of the TLS tests: one set of certificates per test process, a proxy with a
//! TLS frontend, an in-process rustls client (keep-alive, pipelining and byte-exact bodies
//! need more than curl), and wrappers around `openssl s_client` and curl.

use crate::common::certs::Certs;
use crate::common::proxy::{run_bounded, temp_dir};
use crate::common::wire::Head;
use crate::common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

static CERTS: OnceLock<Certs> = OnceLock::new();

/// The certificates every test reads (never modified; tests that change files copy them),
/// removed when the test process exits.
pub fn certs() -> &'static Certs {
    CERTS.get_or_init(|| {
        extern "C" fn remove_certs() {
            if let Some(c) = CERTS.get() {
                let _ = std::fs::remove_dir_all(&c.dir);
            }
        }
        // SAFETY: registers a plain function with no captured state to run at exit.
        unsafe {
            libc::atexit(remove_certs);
        }
        Certs::generate(&temp_dir("tlscerts"))
    })
}

/// A temp directory removed when dropped (kept when the test is failing, for a look).
pub struct TempDir(pub PathBuf);

impl std::ops::Deref for TempDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Absolute path of a shared cert file, for configs.
pub fn cp(name: &str) -> String {
    certs().path(name).display().to_string()
}

/// The usual cert list: a.test ECDSA, a.test RSA, b.test ECDSA with OCSP.
pub fn std_certs() -> String {
    format!(
        r#"[ {{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}", ocsp = "{}" }} ]"#,
        cp("a-ec.pem"),
        cp("a-ec.key"),
        cp("a-rsa.pem"),
        cp("a-rsa.key"),
        cp("b.pem"),
        cp("b.key"),
        cp("b.ocsp.der"),
    )
}

/// A daemon with `shards` shards and a TLS frontend `web` (`{port:web}`) in front of `app`;
/// `tls_extra` goes inside the `tls` inline table after `certs`, `front_extra` into the
/// frontend, `after` at the end of the config.
pub fn tls_config(
    shards: u32,
    certs: &str,
    tls_extra: &str,
    front_extra: &str,
    after: &str,
) -> String {
    let sep = if tls_extra.is_empty() { "" } else { ", " };
    format!(
        r#"{daemon}
[[http]]
name = "web"
listen = ["127.0.0.1:{{port:web}}"]
default_pool = "app"
tls = {{ certs = {certs}{sep}{tls_extra} }}
{front_extra}

[pool.app]
servers = [ {{ name = "app", addr = "{{app}}" }} ]
{after}
"#,
        daemon = daemon(shards)
    )
}

pub struct Setup {
    pub proxy: Proxy,
    pub backend: Backend,
}

impl Setup {
    pub fn port(&self) -> u16 {
        self.proxy.port("web")
    }
    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr("web")
    }
}

pub fn start(shards: u32, tls_extra: &str) -> Setup {
    start_full(shards, &std_certs(), tls_extra, "", "")
}

pub fn start_full(
    shards: u32,
    certs: &str,
    tls_extra: &str,
    front_extra: &str,
    after: &str,
) -> Setup {
    let backend = Backend::start("app");
    let cfg = tls_config(shards, certs, tls_extra, front_extra, after);
    let proxy = Proxy::start_with(&cfg, &[("app", backend.addr_string())]);
    Setup { proxy, backend }
}

// ---------------------------------------------------------------------------------------
// show stats

pub fn stats_of(p: &Proxy) -> HashMap<String, String> {
    observe::stats_text(p)
}

/// A numeric `show stats` line, 0 when missing (so a missing counter shows as a wrong value
/// in the assertion, with the whole text).
pub fn counter(p: &Proxy, key: &str) -> i64 {
    stats_of(p)
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

/// Polls until `key` reaches at least `want` (counters may lag a connection's end).
#[track_caller]
pub fn wait_counter(p: &Proxy, key: &str, want: i64, limit: Duration) -> i64 {
    let deadline = Instant::now() + limit;
    loop {
        let v = counter(p, key);
        if v >= want {
            return v;
        }
        if Instant::now() > deadline {
            let (_, all) = p.ctl("show stats");
            let tls: Vec<&str> = all
                .lines()
                .filter(|l| l.starts_with("tls.") || l.contains("panic"))
                .collect();
            panic!("`{key}` is {v}, wanted >= {want} within {limit:?}; tls lines: {tls:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The proxy is still running and no connection task panicked.
#[track_caller]
pub fn assert_healthy(p: &mut Proxy) {
    assert!(
        p.wait_exit(Duration::from_millis(1)).is_none(),
        "shardgate exited; log:\n{}",
        p.log()
    );
    let s = stats_of(p);
    assert_eq!(
        s.get("connections.panicked").map(String::as_str),
        Some("0"),
        "connections.panicked; log:\n{}",
        p.log()
    );
}

// ---------------------------------------------------------------------------------------
// in-process TLS client

pub fn roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut r = RootCertStore::empty();
            r.add(CertificateDer::from_pem_file(certs().ca()).unwrap())
                .unwrap();
            Arc::new(r)
        })
        .clone()
}

/// A client config trusting the test CA, offering `alpn`, with the given versions (empty:
/// rustls' defaults, 1.2 and 1.3). Keep the Arc to resume sessions.
pub fn client_config(alpn: &[&str], versions: &[&str]) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let vs: Vec<&'static rustls::SupportedProtocolVersion> = if versions.is_empty() {
        vec![&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        versions
            .iter()
            .map(|v| match *v {
                "1.2" => &rustls::version::TLS12,
                "1.3" => &rustls::version::TLS13,
                _ => panic!("version {v}"),
            })
            .collect()
    };
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&vs)
        .unwrap()
        .with_root_certificates(roots())
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

pub fn default_client() -> Arc<ClientConfig> {
    static CFG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CFG.get_or_init(|| client_config(&["http/1.1"], &[]))
        .clone()
}

pub struct TlsConn {
    pub tls: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

impl TlsConn {
    /// Connects and completes a full handshake with SNI `sni` (a fresh client config each
    /// time: no session to resume, so the peer certificate is the one sent now).
    #[track_caller]
    pub fn connect(addr: SocketAddr, sni: &str) -> TlsConn {
        TlsConn::try_connect_with(addr, sni, client_config(&["http/1.1"], &[]))
            .unwrap_or_else(|e| panic!("TLS handshake with {addr} (SNI {sni}): {e}"))
    }

    pub fn try_connect_with(
        addr: SocketAddr,
        sni: &str,
        cfg: Arc<ClientConfig>,
    ) -> Result<TlsConn, String> {
        let sock =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        sock.set_nodelay(true).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        TlsConn::handshake_on(sock, sni, cfg)
    }

    pub fn handshake_on(
        mut sock: TcpStream,
        sni: &str,
        cfg: Arc<ClientConfig>,
    ) -> Result<TlsConn, String> {
        let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
        let mut conn = ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
        }
        Ok(TlsConn {
            tls: StreamOwned::new(conn, sock),
            buf: Vec::new(),
        })
    }

    /// Continues a handshake whose ClientHello the caller already sent by hand.
    pub fn resume_handshake(conn: ClientConnection, sock: TcpStream) -> Result<TlsConn, String> {
        let mut t = TlsConn {
            tls: StreamOwned::new(conn, sock),
            buf: Vec::new(),
        };
        while t.tls.conn.is_handshaking() {
            t.tls
                .conn
                .complete_io(&mut t.tls.sock)
                .map_err(|e| e.to_string())?;
        }
        Ok(t)
    }

    pub fn resumed(&self) -> bool {
        self.tls.conn.handshake_kind() == Some(HandshakeKind::Resumed)
    }

    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls.conn.protocol_version()
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.tls.conn.alpn_protocol().map(|a| a.to_vec())
    }

    /// The server's leaf certificate (DER).
    pub fn peer_leaf(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().expect("peer certs")[0].to_vec()
    }

    pub fn peer_chain_len(&self) -> usize {
        self.tls
            .conn
            .peer_certificates()
            .map(|c| c.len())
            .unwrap_or(0)
    }

    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        self.tls
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("TLS send: {e}"));
        self.tls.flush().unwrap();
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.tls.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn read_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            if let Some(i) = wire::find(&self.buf, b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..i + 4).collect();
                return Head::parse(&raw).map(Some);
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(wire::bad("EOF inside a head"));
            }
        }
    }

    fn read_exact_buf(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "EOF inside a body",
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = wire::find(&self.buf, b"\r\n") {
                let l: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(l[..i].to_vec());
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "EOF inside a chunk line",
                ));
            }
        }
    }

    /// Reads to EOF (close_notify or TCP FIN).
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.fill() {
                Ok(0) => return Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// One response; `head_req` for a HEAD request.
    pub fn try_read(&mut self, head_req: bool) -> Result<Response, String> {
        loop {
            let head = self
                .read_head()
                .map_err(|e| format!("reading a head: {e}"))?
                .ok_or("connection closed before a response")?;
            let status: u16 = head
                .start_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line {:?}", head.start_line))?;
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let mut body = Vec::new();
            let framing;
            if head_req || status < 200 || status == 204 || status == 304 {
                framing = client::Framing::None;
            } else if head.is_chunked() {
                framing = client::Framing::Chunked;
                loop {
                    let line = self.read_line().map_err(|e| e.to_string())?;
                    let text = String::from_utf8_lossy(&line);
                    let size = usize::from_str_radix(text.split(';').next().unwrap().trim(), 16)
                        .map_err(|_| format!("bad chunk size line {text:?}"))?;
                    if size == 0 {
                        // trailers until an empty line
                        while !self.read_line().map_err(|e| e.to_string())?.is_empty() {}
                        break;
                    }
                    body.extend(self.read_exact_buf(size).map_err(|e| e.to_string())?);
                    self.read_exact_buf(2).map_err(|e| e.to_string())?;
                }
            } else if let Some(n) = head.content_length().map_err(|e| e.to_string())? {
                framing = client::Framing::Length;
                body = self.read_exact_buf(n as usize).map_err(|e| e.to_string())?;
            } else {
                framing = client::Framing::Close;
                body = self.read_to_end().map_err(|e| e.to_string())?;
            }
            return Ok(Response {
                status,
                head,
                body,
                framing,
            });
        }
    }

    #[track_caller]
    pub fn read_response(&mut self) -> Response {
        self.try_read(false)
            .unwrap_or_else(|e| panic!("TLS response: {e}"))
    }

    #[track_caller]
    pub fn get(&mut self, path: &str, host: &str) -> Response {
        self.send(&req("GET", path, host, &[], b""));
        self.read_response()
    }

    /// The start line of the next message, 1xx included (or the error).
    pub fn try_read_message_raw(&mut self) -> String {
        match self.read_head() {
            Ok(Some(h)) => h.start_line,
            Ok(None) => "EOF".into(),
            Err(e) => format!("error: {e}"),
        }
    }

    pub fn try_read_after_get(&mut self, host: &str) -> Result<Response, String> {
        self.try_send(&req("GET", "/", host, &[], b""))
            .map_err(|e| e.to_string())?;
        self.try_read(false)
    }

    /// Bytes left over after the last response (buffered).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub fn set_read_timeout(&self, d: Duration) {
        self.tls.sock.set_read_timeout(Some(d)).unwrap();
    }
}

/// The DER of the first certificate in a PEM file.
pub fn der_of(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .to_vec()
}

/// Which of the shared leaf certs (`a-ec`, `a-rsa`, `b`, ...) a DER is, or "unknown".
pub fn which_cert(der: &[u8]) -> String {
    for n in ["a-ec", "a-rsa", "b", "c", "nosan", "expired", "other"] {
        if der_of(&certs().path(&format!("{n}.pem"))) == der {
            return n.to_string();
        }
    }
    "unknown".into()
}

// ---------------------------------------------------------------------------------------
// openssl s_client and curl

#[allow(dead_code)]
pub struct SClient {
    pub code: i32,
    pub out: String,
    pub err: String,
}

impl SClient {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.out, self.err)
    }
    /// Whether a handshake completed (a cipher was negotiated).
    pub fn connected(&self) -> bool {
        let a = self.all();
        (a.contains("Cipher is ") && !a.contains("Cipher is (NONE)"))
            || a.contains("New, TLSv1.3")
            || a.contains("Reused, TLSv1")
    }
    pub fn reused(&self) -> bool {
        self.all().contains("Reused, TLSv1")
    }
    /// The subject line of the server's certificate.
    pub fn subject(&self) -> String {
        self.all()
            .lines()
            .find(|l| l.starts_with("subject="))
            .unwrap_or("")
            .to_string()
    }
    pub fn peer_sig_type(&self) -> String {
        self.all()
            .lines()
            .find(|l| l.starts_with("Peer signature type:"))
            .unwrap_or("")
            .to_string()
    }
}

/// `openssl s_client -connect 127.0.0.1:PORT -CAfile ca.pem ARGS`, feeding `stdin` then EOF
/// (after `linger`, so the server's post-handshake messages are read).
pub fn s_client(port: u16, args: &[&str], stdin: &[u8], linger: Duration) -> SClient {
    s_client_limit(port, args, stdin, linger, Duration::from_secs(20))
}

/// [`s_client`] with a bound on its whole run (panics when it outlives it).
pub fn s_client_limit(
    port: u16,
    args: &[&str],
    stdin: &[u8],
    linger: Duration,
    limit: Duration,
) -> SClient {
    s_client_steps(port, args, &[stdin], linger, limit)
}

/// [`s_client_limit`] writing each of `steps` separately, `linger` apart (s_client reads a
/// command letter such as `K` or `R` only at the start of a read).
pub fn s_client_steps(
    port: u16,
    args: &[&str],
    steps: &[&[u8]],
    linger: Duration,
    limit: Duration,
) -> SClient {
    let ca = certs().ca().display().to_string();
    let connect = format!("127.0.0.1:{port}");
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-CAfile", &ca])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl s_client");
    let mut input = child.stdin.take().unwrap();
    let steps: Vec<Vec<u8>> = steps.iter().map(|s| s.to_vec()).collect();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        for step in steps {
            let _ = input.write_all(&step);
            let _ = input.flush();
            std::thread::sleep(linger);
        }
        drop(input);
    });
    let out = run_bounded(child, limit, &format!("openssl s_client {args:?}"));
    SClient {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// curl to `https://HOST:PORT/PATH` resolved to 127.0.0.1 and trusting the test CA, with
/// extra args; (exit code, stdout, stderr). `-i` is always given, so stdout holds the head.
pub fn curl_tls(port: u16, host: &str, path: &str, extra: &[&str]) -> (i32, Vec<u8>, String) {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}{path}");
    let ca = certs().ca().display().to_string();
    let mut args = vec!["-i", "--cacert", &ca, "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

/// The head lines of curl `-i` output (last response), lowercased names.
pub fn curl_header(out: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(out);
    let last_head = text
        .split("\r\n\r\n")
        .filter(|h| h.starts_with("HTTP/"))
        .last()?
        .to_string();
    last_head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
}

pub fn curl_status(out: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(out);
    text.split("\r\n\r\n")
        .filter(|h| h.starts_with("HTTP/"))
        .last()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Runs `shardgate --check -c FILE`: (exit code, stdout + stderr).
pub fn check(config: &Path) -> (i32, String) {
    let child = Command::new(proxy::BIN)
        .arg("--check")
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = run_bounded(child, Duration::from_secs(20), "shardgate --check");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A directory with a copy of the shared certs (for tests that change or break files).
pub fn private_certs() -> TempDir {
    let dir = TempDir(temp_dir("tlsown"));
    for e in std::fs::read_dir(&certs().dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

/// The sum of every `tls.failed.*` counter.
pub fn failures(p: &Proxy) -> i64 {
    stats_of(p)
        .iter()
        .filter(|(k, _)| k.starts_with("tls.failed."))
        .filter_map(|(_, v)| v.parse::<i64>().ok())
        .sum()
}
