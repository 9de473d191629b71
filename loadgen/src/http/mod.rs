//! HTTP/1.1 as an engine `Protocol`: requests are rendered once per URL at start (the engine
//! writes the same bytes again and again), replies go through the incremental parser in
//! `response`. Several URLs to the same address are used in turn on each connection, so one
//! run can mix routes.

pub(crate) mod response;

use crate::engine::{ErrorClass, Protocol, Step};
use crate::url::Url;
use response::{ParseError, Progress, ResponseParser};

/// Requests for one destination address: its URLs, rendered.
pub(crate) struct Group {
    pub(crate) requests: Vec<Vec<u8>>,
}

pub(crate) struct Http {
    pub(crate) groups: Vec<Group>,
    head: bool,
}

pub(crate) struct HttpConn {
    group: usize,
    next: usize,
    parser: ResponseParser,
}

/// How each request is rendered.
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestSpec {
    pub(crate) method: String,
    /// `Name: value` pairs as given with `-H`.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body_size: usize,
    /// Ask the server to close after each reply (`--close`).
    pub(crate) close: bool,
}

impl Http {
    pub(crate) fn new(groups: Vec<Group>, spec: &RequestSpec) -> Self {
        Http {
            groups,
            head: spec.method.eq_ignore_ascii_case("HEAD"),
        }
    }
}

/// Parses a `-H 'Name: value'` argument.
pub(crate) fn parse_header(h: &str) -> Result<(String, String), String> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| format!("bad header '{h}': expected 'Name: value'"))?;
    let name = name.trim();
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if !valid || value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(format!("bad header '{h}': invalid name or value"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// Renders the bytes of one request for `url`.
pub(crate) fn render_request(url: &Url, spec: &RequestSpec) -> Vec<u8> {
    let has = |n: &str| spec.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let method = if spec.method.is_empty() {
        "GET"
    } else {
        &spec.method
    };
    let mut r = format!("{method} {} HTTP/1.1\r\n", url.path);
    if !has("host") {
        r.push_str(&format!("Host: {}\r\n", url.authority));
    }
    if !has("user-agent") {
        r.push_str("User-Agent: loadgen\r\n");
    }
    for (k, v) in &spec.headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if spec.close && !has("connection") {
        r.push_str("Connection: close\r\n");
    }
    let wants_length = spec.body_size > 0 || matches!(method, "POST" | "PUT" | "PATCH");
    if wants_length && !has("content-length") {
        r.push_str(&format!("Content-Length: {}\r\n", spec.body_size));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.resize(bytes.len() + spec.body_size, b'x');
    bytes
}

impl Protocol for Http {
    type Conn = HttpConn;

    fn new_conn(&self, group: usize, index: usize) -> HttpConn {
        // Start each connection at a different URL so a mix is spread from the first request.
        let n = self.groups[group].requests.len().max(1);
        HttpConn {
            group,
            next: index % n,
            parser: ResponseParser::new(self.head),
        }
    }

    fn on_connect(&self, _c: &mut HttpConn) -> bool {
        true
    }

    fn request<'a>(&'a self, c: &mut HttpConn) -> &'a [u8] {
        let reqs = &self.groups[c.group].requests;
        let r = &reqs[c.next];
        c.next = if c.next + 1 == reqs.len() {
            0
        } else {
            c.next + 1
        };
        c.parser.reset();
        r
    }

    fn on_data(&self, c: &mut HttpConn, data: &[u8], _out: &mut Vec<u8>) -> Step {
        match c.parser.feed(data) {
            Ok(Progress::Partial) => Step::More,
            Ok(Progress::Complete { extra, .. }) if extra > 0 => Step::Fail(
                ErrorClass::BadResponse,
                format!("{extra} unexpected bytes after a complete response"),
            ),
            Ok(Progress::Complete {
                status, keep_alive, ..
            }) => Step::Done {
                code: status,
                ok: (200..400).contains(&status),
                keep_alive,
            },
            Err(e) => Step::Fail(ErrorClass::BadResponse, e.to_string()),
        }
    }

    fn on_eof(&self, c: &mut HttpConn) -> Step {
        match c.parser.eof() {
            Ok(Some(Progress::Complete { status, .. })) => Step::Done {
                code: status,
                ok: (200..400).contains(&status),
                keep_alive: false,
            },
            Ok(_) => Step::Fail(
                ErrorClass::Closed,
                "server closed the connection before replying".into(),
            ),
            Err(ParseError::Truncated) => Step::Fail(
                ErrorClass::Closed,
                "server closed the connection mid-response".into(),
            ),
            Err(e) => Step::Fail(ErrorClass::BadResponse, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests() {
        let url = crate::url::parse("http://127.0.0.1:8080/a?x=1").unwrap();
        let spec = RequestSpec {
            method: "POST".into(),
            headers: vec![("X-A".into(), "b".into())],
            body_size: 3,
            close: true,
        };
        assert_eq!(
            String::from_utf8(render_request(&url, &spec)).unwrap(),
            "POST /a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: loadgen\r\nX-A: b\r\nConnection: close\r\nContent-Length: 3\r\n\r\nxxx"
        );
        let get = RequestSpec {
            method: "GET".into(),
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(render_request(&url, &get)).unwrap(),
            "GET /a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: loadgen\r\n\r\n"
        );
    }

    #[test]
    fn header_arguments() {
        assert_eq!(parse_header("A: b c").unwrap(), ("A".into(), "b c".into()));
        assert!(parse_header("nocolon")
            .unwrap_err()
            .contains("expected 'Name: value'"));
        assert!(parse_header(": v").is_err());
        assert!(parse_header("A: b\r\nC: d").is_err());
    }
}
