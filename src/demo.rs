//! The demo backends behind `shardgate demo`: minimal HTTP/1.1 keep-alive servers on loopback,
//! one thread per connection, that answer every request with their own name. They exist so the
//! README's first command shows real proxied traffic with nothing else installed.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

/// Start a backend named `name` on an ephemeral loopback port; returns its address.
pub fn start_backend(name: &'static str) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name(format!("{name}-accept"))
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || serve(conn, name));
            }
        })?;
    Ok(addr)
}

fn serve(mut conn: TcpStream, name: &str) {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        // Heads only (the demo ignores bodies of requests with Content-Length 0 or none).
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 64 * 1024 {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let close = head.contains("\r\nconnection: close");
        buf.drain(..end);
        let body = format!("Hello from {name}\n");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if conn.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
    }
}
