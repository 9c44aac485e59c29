// SPDX-License-Identifier: GPL-2.0

//! Objects whose references may be dropped in any context, but which are destroyed only in
//! process context, after every reference has drained.
//!
//! This is the pattern of dm's own `dm_get`/`dm_put`/`dm_destroy` split: a [`Ref`] is cheap to
//! take and to drop from anywhere, bio completion (interrupt context) included, because
//! dropping the last [`Ref`] only signals a completion. The object itself is freed when its
//! [`Owner`] is dropped, which waits for the references to drain and so may only happen where
//! sleeping is allowed; `might_sleep()` checks that on every drop.

use super::bindings;
use core::{
    ops::Deref,
    ptr::{addr_of_mut, NonNull},
    sync::atomic::{fence, AtomicUsize, Ordering},
};
use kernel::{
    alloc::{AllocError, Flags},
    prelude::*,
    types::Opaque,
};

struct Inner<T> {
    /// Live `Ref`s, plus one while the `Owner` exists.
    refs: AtomicUsize,
    /// Completed by the `Ref` that drops the count to zero after the owner let go of its one.
    drained: Opaque<bindings::completion>,
    data: T,
}

/// The unique owner of a drained-on-destroy object.
///
/// # Invariants
///
/// `inner` points to a live `Inner<T>` allocated by `KBox` whose completion is initialised;
/// it is freed only by `Owner::drop`, after `refs` has reached zero.
pub struct Owner<T: Send + Sync> {
    inner: NonNull<Inner<T>>,
}

/// A counted reference to an object owned by an [`Owner`]. It can be cloned and dropped in
/// any context.
///
/// # Invariants
///
/// `inner` is live and this reference is counted in `refs`.
pub struct Ref<T: Send + Sync> {
    inner: NonNull<Inner<T>>,
}

// SAFETY: the object is shared between threads only through `&T`, and `T: Send + Sync`.
unsafe impl<T: Send + Sync> Send for Owner<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Owner<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Send for Ref<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Ref<T> {}

impl<T: Send + Sync> Owner<T> {
    /// Allocates the object; call this in process context with a sleeping allocation, not in
    /// an IO path.
    pub fn new(data: T, flags: Flags) -> Result<Self, AllocError> {
        let inner = KBox::new(
            Inner {
                refs: AtomicUsize::new(1),
                drained: Opaque::uninit(),
                data,
            },
            flags,
        )?;
        let inner = KBox::into_raw(inner);
        // SAFETY: `inner` is a valid, exclusively owned allocation; the completion is
        // initialised in place and never moves (the allocation is freed, never moved).
        unsafe { bindings::rthin_init_completion((*inner).drained.get()) };
        // INVARIANT: allocated by `KBox`, completion initialised, one reference (ours).
        Ok(Self {
            // SAFETY: `KBox::into_raw` never returns null.
            inner: unsafe { NonNull::new_unchecked(inner) },
        })
    }

    /// Allocates the object and initialises it in place with `init`, for objects that must
    /// not move (locks, work items). The object never moves afterwards: it is freed, not
    /// moved, by [`Owner`]'s drop. Process context, as [`Owner::new`].
    pub fn pin_init<E>(init: impl PinInit<T, E>, flags: Flags) -> Result<Self, E>
    where
        E: From<AllocError>,
    {
        let mut slot = KBox::<Inner<T>>::new_uninit(flags)?;
        let inner = slot.as_mut_ptr();
        // SAFETY: `inner` points to an allocation for an `Inner<T>`, ours alone. Each field is
        // initialised in place; `data` is pinned from here on (never moved, see above).
        unsafe {
            addr_of_mut!((*inner).refs).write(AtomicUsize::new(1));
            bindings::rthin_init_completion(Opaque::raw_get(addr_of_mut!((*inner).drained)));
            init.__pinned_init(addr_of_mut!((*inner).data))?;
        }
        // SAFETY: every field was initialised just above.
        let inner = KBox::into_raw(unsafe { slot.assume_init() });
        // INVARIANT: allocated by `KBox`, completion initialised, one reference (ours).
        Ok(Self {
            // SAFETY: `KBox::into_raw` never returns null.
            inner: unsafe { NonNull::new_unchecked(inner) },
        })
    }

    fn inner(&self) -> &Inner<T> {
        // SAFETY: live while the owner exists (type invariant).
        unsafe { self.inner.as_ref() }
    }

    /// Whether `r` is a reference to this owner's object.
    pub fn owns(&self, r: &Ref<T>) -> bool {
        self.inner == r.inner
    }

    /// Takes a new reference.
    pub fn get(&self) -> Ref<T> {
        self.inner().refs.fetch_add(1, Ordering::Relaxed);
        // INVARIANT: counted just above.
        Ref { inner: self.inner }
    }
}

impl<T: Send + Sync> Deref for Owner<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner().data
    }
}

impl<T: Send + Sync> Drop for Owner<T> {
    fn drop(&mut self) {
        // Destruction waits: it belongs in process context, never in a completion.
        // SAFETY: `might_sleep` has no preconditions.
        unsafe { bindings::rthin_might_sleep() };
        let inner = self.inner.as_ptr();
        // SAFETY: `inner` is live (type invariant).
        if unsafe { (*inner).refs.fetch_sub(1, Ordering::AcqRel) } != 1 {
            // SAFETY: the completion is initialised; the last `Ref` completes it, and
            // `complete()` does not touch it once the waiter can return.
            unsafe { bindings::wait_for_completion((*inner).drained.get()) };
        }
        fence(Ordering::Acquire);
        // SAFETY: no reference is left and none can be taken (only the owner and live refs can
        // make one), so the allocation is ours to free.
        drop(unsafe { KBox::from_raw(inner) });
    }
}

impl<T: Send + Sync> Ref<T> {
    fn inner(&self) -> &Inner<T> {
        // SAFETY: live while this counted reference exists (type invariant).
        unsafe { self.inner.as_ref() }
    }

    /// Gives up the reference as a pointer to the object, still counted; [`Ref::from_raw`]
    /// takes it back. For handing a reference to C (a queued work item).
    pub fn into_raw(self) -> *const T {
        let inner = self.inner.as_ptr();
        core::mem::forget(self);
        // SAFETY: `inner` is live (the reference is still counted); a projection only.
        unsafe { addr_of_mut!((*inner).data).cast_const() }
    }

    /// Takes back a reference given up with [`Ref::into_raw`].
    ///
    /// # Safety
    ///
    /// `ptr` must come from [`Ref::into_raw`] of a `Ref<T>`, and each such pointer may be
    /// taken back once.
    pub unsafe fn from_raw(ptr: *const T) -> Self {
        let off = core::mem::offset_of!(Inner<T>, data);
        // SAFETY: `ptr` points to the `data` field of a live `Inner<T>` (safety requirements),
        // so stepping back by its offset gives the `Inner<T>`, which is not null.
        let inner = unsafe { NonNull::new_unchecked(ptr.cast::<u8>().sub(off).cast_mut().cast()) };
        // INVARIANT: the reference given up by `into_raw` is still counted.
        Self { inner }
    }
}

impl<T: Send + Sync> Clone for Ref<T> {
    fn clone(&self) -> Self {
        self.inner().refs.fetch_add(1, Ordering::Relaxed);
        // INVARIANT: counted just above.
        Ref { inner: self.inner }
    }
}

impl<T: Send + Sync> Deref for Ref<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner().data
    }
}

impl<T: Send + Sync> Drop for Ref<T> {
    fn drop(&mut self) {
        let inner = self.inner.as_ptr();
        // SAFETY: `inner` is live until this reference is uncounted.
        if unsafe { (*inner).refs.fetch_sub(1, Ordering::Release) } == 1 {
            // The owner has let go and is waiting in `Owner::drop`. `complete()` is safe in
            // any context, interrupts included.
            fence(Ordering::Acquire);
            // SAFETY: the owner frees `inner` only after its wait returns, which happens
            // after `complete()` is done with the completion.
            unsafe { bindings::complete((*inner).drained.get()) };
        }
    }
}
