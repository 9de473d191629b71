//! What one worker thread counts, and how the threads' counts are merged at the end. Each
//! thread owns its histograms and counters outright (no sharing on the request path); the only
//! shared state is `Live`, a few relaxed atomics the thread overwrites once per event batch
//! so the main thread can print a progress line.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Highest latency the histograms track: one hour, in microseconds.
pub(crate) const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Why a request or connection failed. The order is the order of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    ConnectRefused,
    ConnectTimeout,
    ConnectOther,
    ReadTimeout,
    Reset,
    Closed,
    BadResponse,
    Io,
}

impl ErrorClass {
    pub(crate) const ALL: [ErrorClass; 8] = [
        ErrorClass::ConnectRefused,
        ErrorClass::ConnectTimeout,
        ErrorClass::ConnectOther,
        ErrorClass::ReadTimeout,
        ErrorClass::Reset,
        ErrorClass::Closed,
        ErrorClass::BadResponse,
        ErrorClass::Io,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            ErrorClass::ConnectRefused => "connect_refused",
            ErrorClass::ConnectTimeout => "connect_timeout",
            ErrorClass::ConnectOther => "connect_error",
            ErrorClass::ReadTimeout => "read_timeout",
            ErrorClass::Reset => "reset",
            ErrorClass::Closed => "closed",
            ErrorClass::BadResponse => "bad_response",
            ErrorClass::Io => "io",
        }
    }

    pub(crate) fn is_connect(self) -> bool {
        matches!(
            self,
            ErrorClass::ConnectRefused | ErrorClass::ConnectTimeout | ErrorClass::ConnectOther
        )
    }

    /// Classifies an I/O error on an established connection or a connect attempt.
    pub(crate) fn of_io(e: &std::io::Error, connecting: bool) -> ErrorClass {
        use std::io::ErrorKind as K;
        match (e.kind(), connecting) {
            (K::ConnectionRefused, _) => ErrorClass::ConnectRefused,
            (K::TimedOut, true) => ErrorClass::ConnectTimeout,
            (_, true) => ErrorClass::ConnectOther,
            (K::ConnectionReset | K::BrokenPipe | K::ConnectionAborted, false) => ErrorClass::Reset,
            _ => ErrorClass::Io,
        }
    }
}

/// Status codes below this are counted in a flat array; anything higher (MySQL error numbers)
/// goes to a map. HTTP never leaves the array.
const FLAT_CODES: usize = 600;

pub(crate) struct ThreadStats {
    /// Latency as the report shows it: from the scheduled send time in rate mode (corrected
    /// for coordinated omission), from the actual send otherwise. Microseconds.
    pub(crate) latency: Histogram<u64>,
    /// Rate mode only: from the actual send, to show what the correction changed.
    pub(crate) uncorrected: Option<Histogram<u64>>,
    pub(crate) responses: u64,
    /// Responses that did not count as success (HTTP >= 400, MySQL ERR).
    pub(crate) bad_status: u64,
    flat_codes: Vec<u64>,
    pub(crate) other_codes: BTreeMap<u16, u64>,
    pub(crate) errors: [u64; ErrorClass::ALL.len()],
    /// First message seen per error class, so the report can say what actually happened.
    pub(crate) error_samples: [Option<String>; ErrorClass::ALL.len()],
    /// Requests that were sent and then failed (subset of the errors).
    pub(crate) failed_requests: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) connects_started: u64,
    pub(crate) connects_ok: u64,
    pub(crate) open_at_load_start: u64,
    pub(crate) open_at_end: u64,
    pub(crate) max_open: u64,
    /// Rate mode: requests whose send time came but which never got a connection.
    pub(crate) unsent: u64,
    /// Requests still waiting for their response when the run was cut off.
    pub(crate) unfinished: u64,
    /// Set when the thread gave up (e.g. every connect refused); the run is then an error.
    pub(crate) aborted: Option<String>,
}

impl ThreadStats {
    pub(crate) fn new(rate_mode: bool) -> Self {
        ThreadStats {
            latency: new_histogram(),
            uncorrected: rate_mode.then(new_histogram),
            responses: 0,
            bad_status: 0,
            flat_codes: vec![0; FLAT_CODES],
            other_codes: BTreeMap::new(),
            errors: [0; ErrorClass::ALL.len()],
            error_samples: Default::default(),
            failed_requests: 0,
            bytes_in: 0,
            bytes_out: 0,
            connects_started: 0,
            connects_ok: 0,
            open_at_load_start: 0,
            open_at_end: 0,
            max_open: 0,
            unsent: 0,
            unfinished: 0,
            aborted: None,
        }
    }

    #[inline]
    pub(crate) fn record_response(
        &mut self,
        code: u16,
        ok: bool,
        latency_us: u64,
        uncorrected_us: u64,
    ) {
        self.responses += 1;
        if !ok {
            self.bad_status += 1;
        }
        match self.flat_codes.get_mut(code as usize) {
            Some(n) => *n += 1,
            None => *self.other_codes.entry(code).or_insert(0) += 1,
        }
        self.latency.saturating_record(latency_us.max(1));
        if let Some(h) = &mut self.uncorrected {
            h.saturating_record(uncorrected_us.max(1));
        }
    }

    pub(crate) fn record_error(&mut self, class: ErrorClass, msg: impl FnOnce() -> String) {
        let i = class as usize;
        self.errors[i] += 1;
        if self.error_samples[i].is_none() {
            self.error_samples[i] = Some(msg());
        }
    }

    pub(crate) fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Every status code seen, with its count.
    pub(crate) fn codes(&self) -> BTreeMap<u16, u64> {
        let mut m = self.other_codes.clone();
        for (code, &n) in self.flat_codes.iter().enumerate() {
            if n > 0 {
                m.insert(code as u16, n);
            }
        }
        m
    }

    /// Folds `other` into `self` (the end-of-run merge).
    pub(crate) fn merge(&mut self, other: ThreadStats) {
        // Both histograms share the same bounds, so `add` cannot fail.
        let _ = self.latency.add(&other.latency);
        if let (Some(a), Some(b)) = (&mut self.uncorrected, &other.uncorrected) {
            let _ = a.add(b);
        }
        self.responses += other.responses;
        self.bad_status += other.bad_status;
        for (a, b) in self.flat_codes.iter_mut().zip(&other.flat_codes) {
            *a += b;
        }
        for (code, n) in other.other_codes {
            *self.other_codes.entry(code).or_insert(0) += n;
        }
        for (i, n) in other.errors.iter().enumerate() {
            self.errors[i] += n;
        }
        for (a, b) in self.error_samples.iter_mut().zip(other.error_samples) {
            if a.is_none() {
                *a = b;
            }
        }
        self.failed_requests += other.failed_requests;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.connects_started += other.connects_started;
        self.connects_ok += other.connects_ok;
        self.open_at_load_start += other.open_at_load_start;
        self.open_at_end += other.open_at_end;
        self.max_open += other.max_open;
        self.unsent += other.unsent;
        self.unfinished += other.unfinished;
        if self.aborted.is_none() {
            self.aborted = other.aborted;
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that are valid for hdrhistogram, so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Progress counters one worker publishes for the live line; padded so two workers never
/// write the same cache line.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Live {
    pub(crate) responses: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) done: std::sync::atomic::AtomicBool,
}

impl Live {
    pub(crate) fn publish(&self, s: &ThreadStats, open: u64) {
        self.responses.store(s.responses, Ordering::Relaxed);
        self.errors.store(s.error_total(), Ordering::Relaxed);
        self.open.store(open, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = ThreadStats::new(true);
        let mut b = ThreadStats::new(true);
        a.record_response(200, true, 100, 50);
        b.record_response(200, true, 300, 10);
        b.record_response(1064, false, 5, 5);
        b.record_error(ErrorClass::Reset, || "first".into());
        b.record_error(ErrorClass::Reset, || "second".into());
        a.merge(b);
        assert_eq!(a.responses, 3);
        assert_eq!(a.bad_status, 1);
        assert_eq!(a.latency.len(), 3);
        assert_eq!(a.uncorrected.as_ref().map(|h| h.len()), Some(3));
        assert_eq!(a.codes(), BTreeMap::from([(200, 2), (1064, 1)]));
        assert_eq!(a.errors[ErrorClass::Reset as usize], 2);
        assert_eq!(
            a.error_samples[ErrorClass::Reset as usize].as_deref(),
            Some("first")
        );
    }
}
