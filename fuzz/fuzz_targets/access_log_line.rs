//! Access log lines from hostile requests: whatever the client sent (a head that parses or
//! one that does not, any bytes in the request line, Referer, User-Agent, Host), every format
//! writes exactly one line: one `\n`, at the end, and no other control byte that could forge
//! or split a line; the JSON format writes one valid JSON object whose `request`, `referer`
//! and `user_agent` are the captured bytes (as UTF-8, lossily).
//!
//! Input: byte 0 picks the status and timings, the rest is the request head as sent.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use shardgate::log::access::{format_line, Captured, Clock, Finished, Format, FIELDS};
use shardgate::proto::http::parse::{parse_request, Limits};
use shardgate::proto::http::Status;

fuzz_target!(|data: &[u8]| {
    let Some((&knob, head)) = data.split_first() else {
        return;
    };
    let captured = match parse_request(head, &Limits::default(), Vec::new()) {
        Ok(Status::Complete(h)) => Captured::of_head(head, &h),
        _ => Captured::of_unparsed(head),
    };
    // The site key comes from the Host header; here any bytes of the input.
    let site = &head[..head.len().min(40)];
    let f = Finished {
        client: IpAddr::V4(Ipv4Addr::new(127, 0, 0, knob)),
        frontend: "web",
        site,
        request_time: Duration::from_micros(u64::from(knob) * 977),
        first_byte: (knob & 1 == 1).then(|| Duration::from_micros(u64::from(knob))),
        status: [0, 101, 200, 304, 404, 502, 999][usize::from(knob) % 7],
        bytes_in: u64::from(knob) << 20,
        bytes_out: u64::MAX - u64::from(knob),
        pool: (knob & 2 == 2).then_some("app"),
        server: (knob & 4 == 4).then_some("a\"b"),
        server_addr: Some(SocketAddr::from(([10, 0, 0, 1], 8080))),
        sticky: (knob & 8 == 8).then_some("s"),
        retries: u32::from(knob),
        termination: "ok",
    };
    let all: String = FIELDS.iter().map(|(n, _)| format!("${n} ")).collect();
    let custom = Format::parse(&all).expect("every field name parses");
    let now = UNIX_EPOCH + Duration::from_secs(u64::from(knob) * 86_400 * 97);
    let mut clock = Clock::default();
    for format in [Format::Combined, Format::Json, custom] {
        let mut out = Vec::new();
        format_line(&format, &f, &captured, &mut clock, now, &mut out);
        assert_eq!(out.last(), Some(&b'\n'), "{format:?}: no line end");
        let body = &out[..out.len() - 1];
        assert!(
            !body.iter().any(|&b| b < 0x20 || b == 0x7f),
            "{format:?}: a control byte inside the line: {:?}",
            String::from_utf8_lossy(&out)
        );
        if format == Format::Json {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
                panic!("not JSON ({e}): {}", String::from_utf8_lossy(body))
            });
            assert!(v.is_object());
            assert_eq!(v["status"].as_u64(), Some(u64::from(f.status)));
        }
    }
    let _ = SystemTime::now();
});
