//! The traffic log's recovery at start, on any file content: it never panics; it either
//! refuses (the tail is not traffic-log lines) and leaves the file byte for byte as it was, or
//! cuts off only what follows the last complete period, so that the file is empty or ends
//! with a period's trailer line, and recovering again finds the same period and cuts nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate::traffic_log_recover as recover;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("shardgate-fuzz-traffic-{}", std::process::id()));
    std::fs::write(&path, data).expect("write the input file");
    match recover(&path) {
        Err(_) => {
            let after = std::fs::read(&path).expect("read back");
            assert_eq!(after, data, "a refused file was changed");
        }
        Ok(r) => {
            let after = std::fs::read(&path).expect("read back");
            assert_eq!(after.len() as u64 + r.cut, data.len() as u64);
            assert_eq!(&data[..after.len()], &after[..], "only a tail may be cut");
            match r.last {
                None => assert!(after.is_empty(), "no period found but {} bytes kept", after.len()),
                Some(_) => assert_eq!(after.last(), Some(&b'\n')),
            }
            let again = recover(&path).expect("a recovered file recovers");
            assert_eq!(again.cut, 0);
            assert_eq!(again.last, r.last);
        }
    }
    let _ = std::fs::remove_file(&path);
});
