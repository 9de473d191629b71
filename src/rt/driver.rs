//! Building a shard's runtime: io_uring with the single-issuer flags, falling back to epoll when
//! io_uring is blocked or missing (and saying why).

use std::future::Future;
use std::io;

/// Which I/O driver a shard ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Uring,
    Epoll,
}

/// Is io_uring usable by this process (not blocked by seccomp, supported by the kernel)?
fn uring_available() -> bool {
    monoio::utils::detect_uring()
}

/// Build a runtime for the current thread and run `main` on it to completion.
pub fn run_shard<F, Fut>(want: crate::config::IoDriver, entries: u32, main: F) -> io::Result<Driver>
where
    F: FnOnce(Driver) -> Fut,
    Fut: Future<Output = ()>,
{
    use crate::config::IoDriver;
    use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
    let forced_legacy = std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some();
    let try_uring = match want {
        IoDriver::Epoll => false,
        IoDriver::Uring => true,
        IoDriver::Auto if forced_legacy => {
            tracing::info!(
                event = "io_driver_forced_epoll",
                "MONOIO_FORCE_LEGACY_DRIVER is set; using epoll"
            );
            false
        }
        IoDriver::Auto => {
            let ok = uring_available();
            if !ok {
                tracing::warn!(event = "io_uring_unavailable", "io_uring is unavailable (blocked by seccomp or not supported); falling back to epoll");
            }
            ok
        }
    };
    if try_uring {
        // A ring used by one thread only can skip the kernel's cross-thread machinery:
        // completions run as deferred task work when this thread waits (DEFER_TASKRUN, which
        // needs SINGLE_ISSUER), never by interrupting it (COOP_TASKRUN). Kernels before 6.1
        // refuse these flags; the plain ring is tried next.
        let mut tuned = io_uring::IoUring::builder();
        tuned
            .setup_coop_taskrun()
            .setup_single_issuer()
            .setup_defer_taskrun();
        let built = RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(entries)
            .uring_builder(tuned)
            .enable_timer()
            .build()
            .or_else(|e| {
                tracing::info!(event = "io_uring_flags_refused", error = %e, "io_uring setup flags refused; using a plain ring");
                RuntimeBuilder::<IoUringDriver>::new()
                    .with_entries(entries)
                    .enable_timer()
                    .build()
            });
        match built {
            Ok(mut rt) => {
                super::timer::new_runtime();
                rt.block_on(main(Driver::Uring));
                return Ok(Driver::Uring);
            }
            Err(e) if want == IoDriver::Auto => {
                tracing::warn!(event = "io_uring_unavailable", error = %e, "io_uring ring could not be built; falling back to epoll");
            }
            Err(e) => return Err(e),
        }
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()?;
    super::timer::new_runtime();
    rt.block_on(main(Driver::Epoll));
    Ok(Driver::Epoll)
}
