// SPDX-License-Identifier: GPL-2.0

//! A workqueue of a target's own, usable in the IO path under memory pressure
//! (`WQ_MEM_RECLAIM`), and delayed work items on it.
//!
//! Plain work items use the kernel crate's [`kernel::workqueue::Work`] and are queued through
//! [`Workqueue::queue`]; this module adds what 6.12's kernel crate lacks.

use super::bindings;
use core::{
    marker::PhantomData,
    ops::Deref,
    ptr::NonNull,
    sync::atomic::{AtomicUsize, Ordering},
};
use kernel::{c_str, prelude::*, str::CStr, sync::Arc, types::Opaque, workqueue::Queue};

use super::lifetime::Ref;

/// A counted reference to a work item that can be handed to the workqueue while the work is
/// queued: [`Arc<T>`], or a [`Ref<T>`] of an object whose [`super::lifetime::Owner`] destroys
/// it in process context once every reference (queued work included) has drained.
pub trait WorkRef<T>: Deref<Target = T> + Sized {
    /// Gives up the reference as a pointer to `T`, still counted.
    fn into_raw(self) -> *const T;

    /// Takes back a reference given up with [`WorkRef::into_raw`].
    ///
    /// # Safety
    ///
    /// `ptr` must come from `into_raw` of the same type, and be taken back once.
    unsafe fn from_raw(ptr: *const T) -> Self;
}

impl<T> WorkRef<T> for Arc<T> {
    fn into_raw(self) -> *const T {
        Arc::into_raw(self)
    }

    unsafe fn from_raw(ptr: *const T) -> Self {
        // SAFETY: by the safety requirements.
        unsafe { Arc::from_raw(ptr) }
    }
}

impl<T: Send + Sync> WorkRef<T> for Ref<T> {
    fn into_raw(self) -> *const T {
        Ref::into_raw(self)
    }

    unsafe fn from_raw(ptr: *const T) -> Self {
        // SAFETY: by the safety requirements.
        unsafe { Ref::from_raw(ptr) }
    }
}

/// `ms` milliseconds in jiffies, the unit of delays.
pub fn msecs_to_jiffies(ms: u32) -> u64 {
    // SAFETY: a pure conversion.
    u64::from(unsafe { bindings::rthin_msecs_to_jiffies(ms) } as u32)
}

/// The current time in jiffies (64 bits, never wraps in practice).
pub fn jiffies() -> u64 {
    // SAFETY: reads the jiffies counter.
    unsafe { bindings::rthin_jiffies64() }
}

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
    /// delayed work was already pending. Fails with `EINVAL` if `item`'s
    /// [`DelayedWorkItem::delayed_work`] is not inside `item`.
    pub fn enqueue_delayed<T: DelayedWorkItem>(&self, item: T::Ref, delay: u64) -> Result<bool> {
        // SAFETY: `queue_with` passes this live workqueue and the item's initialised delayed
        // work; `queue_delayed_work_on` returns true when it queued the work, false when it
        // was already pending.
        self.queue_with::<T>(item, |wq, dwork| unsafe {
            bindings::queue_delayed_work_on(
                bindings::wq_misc_consts_WORK_CPU_UNBOUND as _,
                wq,
                dwork,
                delay as _,
            )
        })
    }

    /// Has `item`'s delayed work run as soon as possible: queues it now, or pulls a pending
    /// delayed run forward (`mod_delayed_work`). Safe in any context, interrupts included.
    /// Fails with `EINVAL` as [`Workqueue::enqueue_delayed`].
    pub fn kick<T: DelayedWorkItem>(&self, item: T::Ref) -> Result {
        // SAFETY: as in `enqueue_delayed`; `mod_delayed_work_on` returns false when it queued
        // an idle work, true when it only moved the timer of a pending one.
        self.queue_with::<T>(item, |wq, dwork| !unsafe {
            bindings::mod_delayed_work_on(
                bindings::wq_misc_consts_WORK_CPU_UNBOUND as _,
                wq,
                dwork,
                0,
            )
        })
        .map(|_| ())
    }

    /// Records where `item`'s delayed work sits in it, hands one reference to `queue`, and
    /// takes it back if `queue` says it queued nothing (the work was already pending, and
    /// already owns a reference). Returns what `queue` returned.
    fn queue_with<T: DelayedWorkItem>(
        &self,
        item: T::Ref,
        queue: impl FnOnce(*mut bindings::workqueue_struct, *mut bindings::delayed_work) -> bool,
    ) -> Result<bool> {
        let off = offset_in(&*item).ok_or(EINVAL)?;
        let dw = item.delayed_work();
        dw.offset.store(off, Ordering::Release);
        let dwork = dw.dwork.get();
        let ptr = item.into_raw();
        // `dwork` is an initialised delayed work (built with `DelayedWork::new`) inside the `T`
        // at `ptr`, at the offset just recorded. When queued, the workqueue owns the reference
        // given up with `into_raw`, and `run_callback` takes it back.
        let queued = queue(self.wq.as_ptr(), dwork);
        if !queued {
            // SAFETY: nothing was queued with this reference, so it is still ours to drop.
            drop(unsafe { T::Ref::from_raw(ptr) });
        }
        Ok(queued)
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

/// A `struct delayed_work` embedded in a `T`: a field of `T` that [`DelayedWorkItem`] names.
///
/// # Invariants
///
/// Once pinned-initialised, `dwork` is a `delayed_work` whose function is
/// `run_callback::<T>`. Whenever it is queued, `offset` is the byte offset of `self` inside
/// the `T` that contains it (checked by [`Workqueue::enqueue_delayed`]).
#[repr(C)]
pub struct DelayedWork<T> {
    dwork: Opaque<bindings::delayed_work>,
    offset: AtomicUsize,
    _p: PhantomData<T>,
}

// SAFETY: the kernel's delayed work may be queued and cancelled from any thread.
unsafe impl<T> Send for DelayedWork<T> {}
// SAFETY: as above; `offset` is atomic.
unsafe impl<T> Sync for DelayedWork<T> {}

impl<T: DelayedWorkItem> DelayedWork<T> {
    /// An initialiser for the delayed work of a `T`.
    pub fn new() -> impl PinInit<Self> {
        // SAFETY: the closure initialises every field of `*slot`: the C `delayed_work` through
        // its initialiser, and `offset`.
        unsafe {
            kernel::init::pin_init_from_closure(move |slot: *mut Self| {
                // INVARIANT: the work function is `run_callback::<T>`.
                bindings::rthin_init_delayed_work(
                    Opaque::raw_get(core::ptr::addr_of!((*slot).dwork)),
                    Some(run_callback::<T>),
                );
                core::ptr::addr_of_mut!((*slot).offset).write(AtomicUsize::new(0));
                core::ptr::addr_of_mut!((*slot)._p).write(PhantomData);
                Ok(())
            })
        }
    }

    /// Cancels the work if pending and waits for a running instance to finish; a run that
    /// queued itself again meanwhile runs now, and is waited for too. Process context only.
    /// Returns whether a pending run was cancelled. The caller sees to it that the work
    /// does not queue itself again (a flag its run looks at).
    ///
    /// Unlike `cancel_delayed_work_sync`, this never disables the work: in 6.12 that one
    /// disables it while it cancels and flushes, and a `mod_delayed_work_on` in that window
    /// ([`Workqueue::kick`]) queues nothing yet returns "queued", so the reference handed
    /// with it would never be dropped (a pool that could never be destroyed).
    pub fn stop(this: &T) -> bool {
        let dw = this.delayed_work();
        // SAFETY: `dw` is initialised (built with `DelayedWork::new`) and lives in `*this`.
        let cancelled = unsafe { bindings::cancel_delayed_work(dw.dwork.get()) };
        if cancelled {
            // SAFETY: a pending run held a reference to `*this` given up by `queue_with`; it will
            // not run now, so that reference is dropped here.
            drop(unsafe { T::Ref::from_raw(core::ptr::from_ref::<T>(this)) });
        }
        // SAFETY: as above. A timer queued again meanwhile is run now, with the reference it
        // holds; the flush waits for it and for a running instance.
        unsafe { bindings::flush_delayed_work(dw.dwork.get()) };
        cancelled
    }
}

/// A type that can run as delayed work: it embeds a [`DelayedWork<Self>`] and says which.
pub trait DelayedWorkItem: Send + Sync + Sized + 'static {
    /// The kind of reference a queued run holds.
    type Ref: WorkRef<Self>;

    /// The embedded delayed work (a field of `self`).
    fn delayed_work(&self) -> &DelayedWork<Self>;

    /// Runs the work, with the reference that was queued.
    fn run(this: Self::Ref);
}

/// Offset of `item.delayed_work()` within `item`, if it lies inside `item`.
fn offset_in<T: DelayedWorkItem>(item: &T) -> Option<usize> {
    let base = core::ptr::from_ref(item) as usize;
    let field = core::ptr::from_ref(item.delayed_work()) as usize;
    let off = field.checked_sub(base)?;
    (off + core::mem::size_of::<DelayedWork<T>>() <= core::mem::size_of::<T>()).then_some(off)
}

/// Runs a delayed work item, with allocations in it implicitly `GFP_NOIO`.
///
/// # Safety
///
/// Only the workqueue calls it, for a `DelayedWork<T>` queued by [`Workqueue::enqueue_delayed`].
unsafe extern "C" fn run_callback<T: DelayedWorkItem>(work: *mut bindings::work_struct) {
    // SAFETY: `work` is inside the `delayed_work` that starts the `#[repr(C)]` `DelayedWork<T>`
    // queued by `queue_with`, which recorded its offset inside its `T` and gave up one
    // `T::Ref` to that `T` for this run.
    let this = unsafe {
        let dw = bindings::rthin_to_delayed_work(work).cast::<DelayedWork<T>>();
        let off = (*dw).offset.load(Ordering::Acquire);
        T::Ref::from_raw(dw.cast::<u8>().sub(off).cast::<T>())
    };
    // Work on these queues serves the IO path: an allocation in it must not recurse into IO
    // (reclaim writing back through the very device waiting for this work).
    // SAFETY: the saved flags are restored below, on the same task.
    let noio = unsafe { bindings::rthin_memalloc_noio_save() };
    T::run(this);
    // SAFETY: `noio` came from the save above.
    unsafe { bindings::rthin_memalloc_noio_restore(noio) };
}
