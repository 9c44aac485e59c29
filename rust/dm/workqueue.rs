// SPDX-License-Identifier: GPL-2.0

//! A workqueue of a target's own, usable in the IO path under memory pressure
//! (`WQ_MEM_RECLAIM`), and delayed work items on it.
//!
//! Plain work items use the kernel crate's [`kernel::workqueue::Work`] and are queued through
//! [`Workqueue::queue`]; this module adds what 6.12's kernel crate lacks.

use super::bindings;
use core::{marker::PhantomData, ops::Deref, ptr::NonNull};
use kernel::{c_str, prelude::*, str::CStr, sync::Arc, types::Opaque, workqueue::Queue};

/// A dedicated workqueue with a rescuer thread (`WQ_MEM_RECLAIM`), so work queued from the IO
/// path makes progress even when no memory can be had for new workers. Dropping it drains
/// and destroys it (process context only).
///
/// # Invariants
///
/// `wq` is a live workqueue from `alloc_workqueue`, destroyed only in `drop`.
pub struct Workqueue {
    wq: NonNull<bindings::workqueue_struct>,
}

// SAFETY: workqueues may be used and destroyed from any thread.
unsafe impl Send for Workqueue {}
// SAFETY: queueing on a workqueue is thread safe.
unsafe impl Sync for Workqueue {}

impl Workqueue {
    /// Allocates a `WQ_MEM_RECLAIM` workqueue called `name`.
    pub fn new(name: &CStr) -> Result<Self> {
        // SAFETY: the format string takes one `%s`, matched by the NUL-terminated `name`.
        let wq = unsafe {
            bindings::alloc_workqueue(
                c_str!("%s").as_char_ptr(),
                bindings::RTHIN_WQ_MEM_RECLAIM,
                0,
                name.as_char_ptr(),
            )
        };
        // INVARIANT: checked non-null, so a live workqueue.
        Ok(Self {
            wq: NonNull::new(wq).ok_or(ENOMEM)?,
        })
    }

    /// Waits until every work item queued so far has run.
    pub fn flush(&self) {
        // SAFETY: `wq` is live (type invariant).
        unsafe { bindings::__flush_workqueue(self.wq.as_ptr()) }
    }

    /// Queues `item` to run after `delay` jiffies. Returns `false` (and drops `item`) if that
    /// delayed work was already pending.
    pub fn enqueue_delayed<T: DelayedWorkItem>(&self, item: Arc<T>, delay: u64) -> bool {
        let ptr = Arc::into_raw(item);
        // SAFETY: `ptr` points to a live `T`; its `DelayedWork` is initialised (it is built
        // with `DelayedWork::new`). On success the workqueue owns the reference we leaked with
        // `into_raw`, and `run_callback` takes it back.
        let queued = unsafe {
            bindings::queue_delayed_work_on(
                bindings::wq_misc_consts_WORK_CPU_UNBOUND as _,
                self.wq.as_ptr(),
                T::delayed_work(ptr),
                delay as _,
            )
        };
        if !queued {
            // SAFETY: not queued, so the reference is still ours to drop.
            drop(unsafe { Arc::from_raw(ptr) });
        }
        queued
    }
}

impl Deref for Workqueue {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        // SAFETY: `wq` is live for as long as `self` (type invariant).
        unsafe { Queue::from_raw(self.wq.as_ptr()) }
    }
}

impl Drop for Workqueue {
    fn drop(&mut self) {
        // SAFETY: `wq` is live and this is its only destruction; `destroy_workqueue` drains it.
        unsafe { bindings::destroy_workqueue(self.wq.as_ptr()) }
    }
}

/// A `struct delayed_work` embedded in a `T`.
///
/// # Invariants
///
/// Once pinned-initialised, `dwork` is a `delayed_work` whose function is
/// `run_callback::<T>`.
#[repr(transparent)]
pub struct DelayedWork<T> {
    dwork: Opaque<bindings::delayed_work>,
    _p: PhantomData<T>,
}

// SAFETY: the kernel's delayed work may be queued and cancelled from any thread.
unsafe impl<T> Send for DelayedWork<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for DelayedWork<T> {}

impl<T: DelayedWorkItem> DelayedWork<T> {
    /// An initialiser for the delayed work of a `T`.
    pub fn new() -> impl PinInit<Self> {
        // SAFETY: `DelayedWork` is a transparent `Opaque` wrapper, so initialising the
        // `Opaque` in place initialises `Self`.
        unsafe {
            kernel::init::pin_init_from_closure(move |slot: *mut Self| {
                // INVARIANT: the work function is `run_callback::<T>`.
                bindings::rthin_init_delayed_work(
                    Opaque::raw_get(slot.cast::<Opaque<bindings::delayed_work>>()),
                    Some(run_callback::<T>),
                );
                Ok(())
            })
        }
    }

    /// Cancels the work if pending and waits for a running instance to finish. Process
    /// context only. Returns whether a pending run was cancelled.
    pub fn cancel_sync(this: &Arc<T>) -> bool {
        let ptr: *const T = &**this;
        // SAFETY: `ptr` points to a live `T` whose delayed work is initialised.
        let cancelled = unsafe { bindings::cancel_delayed_work_sync(T::delayed_work(ptr)) };
        if cancelled {
            // SAFETY: a pending run held a reference leaked by `enqueue_delayed`; it will not
            // run now, so that reference is dropped here.
            drop(unsafe { Arc::from_raw(ptr) });
        }
        cancelled
    }
}

/// A type with an embedded [`DelayedWork`] that runs [`DelayedWorkItem::run`].
///
/// # Safety
///
/// `OFFSET` must be the byte offset of a `DelayedWork<Self>` field within `Self`, initialised
/// with [`DelayedWork::new`]. Use [`impl_delayed_work!`](crate::impl_delayed_work).
pub unsafe trait DelayedWorkItem: Send + Sync + Sized + 'static {
    /// Offset of the `DelayedWork<Self>` field.
    const OFFSET: usize;

    /// Runs the work, with the reference that was queued.
    fn run(this: Arc<Self>);

    /// The raw delayed work inside `*ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a live `Self`.
    #[doc(hidden)]
    unsafe fn delayed_work(ptr: *const Self) -> *mut bindings::delayed_work {
        // SAFETY: by the trait's safety requirement there is a `DelayedWork<Self>` at `OFFSET`.
        let field = unsafe { ptr.cast::<u8>().add(Self::OFFSET) };
        Opaque::raw_get(field.cast::<Opaque<bindings::delayed_work>>())
    }
}

/// Implements [`DelayedWorkItem`] for a type with a [`DelayedWork`] field:
/// `impl_delayed_work!(Pool, waker, |this| this.do_periodic_work());`
#[macro_export]
macro_rules! impl_delayed_work {
    ($type:ty, $field:ident, |$this:ident| $body:expr) => {
        // SAFETY: `OFFSET` is the offset of the named `DelayedWork<Self>` field.
        unsafe impl $crate::dm::workqueue::DelayedWorkItem for $type {
            const OFFSET: usize = core::mem::offset_of!($type, $field);

            fn run($this: kernel::sync::Arc<Self>) {
                $body
            }
        }
    };
}

/// Runs a delayed work item.
///
/// # Safety
///
/// Only the workqueue calls it, for a `DelayedWork<T>` queued by [`Workqueue::enqueue_delayed`].
unsafe extern "C" fn run_callback<T: DelayedWorkItem>(work: *mut bindings::work_struct) {
    // SAFETY: `work` belongs to the `delayed_work` at `T::OFFSET` in a `T` (type invariant of
    // `DelayedWork`), queued by `enqueue_delayed`, which leaked one `Arc` reference for it.
    let this = unsafe {
        let dwork = bindings::rthin_to_delayed_work(work);
        Arc::from_raw(dwork.cast::<u8>().sub(T::OFFSET).cast::<T>())
    };
    T::run(this);
}
