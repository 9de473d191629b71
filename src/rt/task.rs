//! Tasks that cannot take their shard down. monoio does not catch a panic in a task (it unwinds
//! through the runtime and ends the shard's thread), so every connection task is run under
//! [`catch_panic`]: a panic ends that task only, its future is dropped (closing its sockets,
//! releasing its counters), and the caller counts it.

use std::any::Any;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::task::Poll;

/// Run `fut` to completion; `Err` with the panic's message if polling it panicked.
pub async fn catch_panic<F: Future<Output = ()>>(fut: F) -> Result<(), String> {
    let mut fut = pin!(fut);
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(message(payload))),
        },
    )
    .await
}

fn message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "panic with a non-string payload".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    #[test]
    fn a_panicking_task_ends_alone_and_drops_what_it_held() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            struct Held(Rc<Cell<bool>>);
            impl Drop for Held {
                fn drop(&mut self) {
                    self.0.set(true);
                }
            }
            let dropped = Rc::new(Cell::new(false));
            let held = Held(dropped.clone());
            let bad = monoio::spawn(catch_panic(async move {
                let _held = held;
                monoio::time::sleep(Duration::from_millis(5)).await;
                panic!("boom on input");
            }));
            let good = monoio::spawn(catch_panic(async {
                monoio::time::sleep(Duration::from_millis(20)).await;
            }));
            assert_eq!(bad.await, Err("boom on input".to_string()));
            assert!(dropped.get(), "the panicked task's state was dropped");
            assert_eq!(good.await, Ok(()), "the other task ran on");
        });
    }
}
