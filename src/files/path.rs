//! From a request path to a path under a static root, refusing everything that could name a
//! file outside it or mean two things to two parsers: `..` segments (also percent-encoded in
//! any case), encoded `/` and `\` (`%2f`, `%5c`), a raw `\`, NUL and other control bytes, and
//! overlong or invalid UTF-8 (`%c0%ae` is not a dot here, it is refused). `.` and empty
//! segments are dropped. What is left is a relative path of plain segments; the open itself
//! (`openat2` with `RESOLVE_BENEATH`, see [`super`]) then keeps symlinks from leading out.

/// A request path made safe to look up.
#[derive(Debug, PartialEq, Eq)]
pub struct Clean {
    /// Segments joined by `/`, no leading `/`; empty for the root itself.
    pub rel: Vec<u8>,
    /// The request path ended with `/` (a directory was asked for).
    pub dir: bool,
}

/// Why a path is refused (the client gets 400).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub &'static str);

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Clean the path part of a request target (no query).
pub fn clean(path: &[u8]) -> Result<Clean, Refused> {
    if path.first() != Some(&b'/') {
        return Err(Refused("path does not start with /"));
    }
    let mut rel = Vec::with_capacity(path.len());
    let mut seg: Vec<u8> = Vec::with_capacity(64);
    let mut i = 1;
    let dir;
    loop {
        let end = i >= path.len();
        let b = if end { b'/' } else { path[i] };
        if b == b'/' {
            let dirlike = seg.is_empty() || seg == b".";
            match seg.as_slice() {
                b"" | b"." => {}
                b".." => return Err(Refused("`..` segment")),
                s => {
                    if std::str::from_utf8(s).is_err() {
                        return Err(Refused("path is not UTF-8"));
                    }
                    if !rel.is_empty() {
                        rel.push(b'/');
                    }
                    rel.extend_from_slice(s);
                }
            }
            seg.clear();
            if end {
                // "/a/" ends with an empty segment (and "/a/." with "."): a directory.
                dir = dirlike;
                break;
            }
            i += 1;
            continue;
        }
        let byte = if b == b'%' {
            let (h, l) = (
                path.get(i + 1).copied().and_then(hex),
                path.get(i + 2).copied().and_then(hex),
            );
            let (Some(h), Some(l)) = (h, l) else {
                return Err(Refused("bad percent-encoding"));
            };
            i += 3;
            let d = h << 4 | l;
            if d == b'/' || d == b'\\' {
                return Err(Refused("encoded slash"));
            }
            d
        } else {
            i += 1;
            b
        };
        if byte == b'\\' {
            return Err(Refused("backslash"));
        }
        if byte < 0x20 || byte == 0x7f {
            return Err(Refused("control byte"));
        }
        seg.push(byte);
    }
    Ok(Clean { rel, dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> (String, bool) {
        let c = clean(p.as_bytes()).unwrap_or_else(|e| panic!("{p}: {e:?}"));
        (String::from_utf8(c.rel).unwrap(), c.dir)
    }

    #[test]
    fn clean_paths() {
        assert_eq!(ok("/"), ("".into(), true));
        assert_eq!(ok("/a/b.css"), ("a/b.css".into(), false));
        assert_eq!(ok("/a//b/./c/"), ("a/b/c".into(), true));
        assert_eq!(ok("/a/."), ("a".into(), true));
        assert_eq!(ok("/%61%2Ecss"), ("a.css".into(), false));
        assert_eq!(ok("/%252e%252e"), ("%2e%2e".into(), false));
        assert_eq!(ok("/caf%C3%A9"), ("café".into(), false));
        assert_eq!(ok("/a..b/...."), ("a..b/....".into(), false));
        for bad in [
            "/..",
            "/../x",
            "/a/../../x",
            "/%2e%2e/x",
            "/%2E%2e/x",
            "/.%2e/x",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a\\b",
            "/a%00",
            "/a%0a",
            "/%c0%ae%c0%ae/x",
            "/%ff",
            "/a%2",
            "/a%zz",
            "x",
            "",
            "/a/..",
        ] {
            assert!(clean(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
