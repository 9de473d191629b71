//! Futures placed in memory blocks the thread reuses: what lets a connection's future stay
//! small while it waits, without an allocation per request.
//!
//! A connection's task holds its whole future's state for as long as it lives, and a future is
//! as large as its largest await point: an idle keep-alive connection would hold the several
//! KiB of a running exchange (request forwarding, body relay, response) while it waits for
//! the next request. With [`Pooled`], the exchange's state lives in a block taken from this
//! thread's free list when the request starts and given back when it ends; the connection's
//! future holds one pointer. Blocks are kept per layout, up to [`KEEP`] of each, so in steady
//! state no request allocates.

use std::alloc::Layout;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Free blocks kept per layout; beyond it a finished future's block is freed.
pub const KEEP: usize = 4096;

thread_local! {
    static FREE: RefCell<Vec<(Layout, Vec<NonNull<u8>>)>> = const { RefCell::new(Vec::new()) };
}

fn take(layout: Layout) -> NonNull<u8> {
    let reused = FREE
        .try_with(|f| {
            let mut f = f.borrow_mut();
            f.iter_mut()
                .find(|(l, _)| *l == layout)
                .and_then(|(_, v)| v.pop())
        })
        .ok()
        .flatten();
    if let Some(p) = reused {
        return p;
    }
    // SAFETY: the layout is a future's, never zero-sized here (see `Pooled::new`).
    let p = unsafe { std::alloc::alloc(layout) };
    NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
}

fn give(p: NonNull<u8>, layout: Layout) {
    let kept = FREE
        .try_with(|f| {
            let mut f = f.borrow_mut();
            let i = match f.iter().position(|(l, _)| *l == layout) {
                Some(i) => i,
                None => {
                    f.push((layout, Vec::new()));
                    f.len() - 1
                }
            };
            let v = &mut f[i].1;
            if v.len() < KEEP {
                v.push(p);
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: `p` came from `alloc` with this layout (in `take`), and is unused now.
        unsafe { std::alloc::dealloc(p.as_ptr(), layout) };
    }
}

/// Give every kept block back to the allocator (a shard going idle for good, or memory
/// pressure).
pub fn release_kept() {
    let _ = FREE.try_with(|f| {
        for (layout, v) in f.borrow_mut().drain(..) {
            for p in v {
                // SAFETY: as in `give`.
                unsafe { std::alloc::dealloc(p.as_ptr(), layout) };
            }
        }
    });
}

/// A future in a reused block (see the module head). `!Send`: it must end on the thread that
/// made it, as every future on a shard does.
pub struct Pooled<F: Future> {
    ptr: NonNull<F>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl<F: Future> Pooled<F> {
    pub fn new(f: F) -> Pooled<F> {
        let layout = Layout::new::<F>();
        if layout.size() == 0 {
            // Nothing to place: a dangling, aligned pointer is a valid place for a ZST.
            let ptr = NonNull::<F>::dangling();
            // SAFETY: writing a zero-sized value through an aligned dangling pointer.
            unsafe { ptr.as_ptr().write(f) };
            return Pooled {
                ptr,
                _not_send: std::marker::PhantomData,
            };
        }
        let ptr = take(layout).cast::<F>();
        // SAFETY: the block is of F's layout and uninitialised; it is ours until `drop`.
        unsafe { ptr.as_ptr().write(f) };
        Pooled {
            ptr,
            _not_send: std::marker::PhantomData,
        }
    }
}

impl<F: Future> Future for Pooled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future never moves out of its block before it is dropped in place
        // (`Pooled` moving moves only the pointer), so pinning it there is sound.
        let f = unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) };
        f.poll(cx)
    }
}

impl<F: Future> Drop for Pooled<F> {
    fn drop(&mut self) {
        let layout = Layout::new::<F>();
        // SAFETY: the block holds an initialised F, dropped once, here.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        if layout.size() != 0 {
            give(self.ptr.cast::<u8>(), layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn blocks_are_reused_and_futures_dropped_in_place() {
        struct Tracked(Rc<std::cell::Cell<u32>>, [u8; 512]);
        impl Drop for Tracked {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let drops = Rc::new(std::cell::Cell::new(0));
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        let mut seen = std::collections::HashSet::new();
        rt.block_on(async {
            for i in 0..1000u32 {
                let t = Tracked(drops.clone(), [i as u8; 512]);
                let f = Pooled::new(async move {
                    let mut yielded = false;
                    std::future::poll_fn(|cx| {
                        if yielded {
                            return Poll::Ready(());
                        }
                        yielded = true;
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    })
                    .await;
                    t.1[0] as u32
                });
                seen.insert(f.ptr.as_ptr() as usize);
                assert_eq!(f.await, i as u8 as u32);
            }
            // A future dropped before it ends drops what it holds too.
            let t = Tracked(drops.clone(), [0; 512]);
            let f = Pooled::new(async move {
                std::future::pending::<()>().await;
                drop(t);
            });
            drop(f);
        });
        assert_eq!(drops.get(), 1001);
        assert_eq!(seen.len(), 1, "one block serves every sequential future");
        release_kept();
    }

    #[test]
    fn zero_sized_futures_need_no_block() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(Pooled::new(std::future::ready(5))), 5);
    }
}
