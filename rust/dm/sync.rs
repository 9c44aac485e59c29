// SPDX-License-Identifier: GPL-2.0

//! Locks: a spinlock that may be taken from any context, completion (interrupt) context
//! included ([`IrqSpinLock`]: it disables local interrupts while held); the module's global
//! rw_semaphore ([`GlobalRwLock`]); and a reader-writer semaphore for locks the IO path
//! takes, under which every allocation is NOIO ([`NoioRwSem`]).
//!
//! Their ranks in rthin's lock hierarchy are written in [`crate::locking`]. Allocate before
//! taking a spinlock and free after releasing it; never sleep while holding it.

use super::bindings;
use kernel::ffi::{c_char, c_ulong};
use kernel::prelude::*;
use kernel::sync::lock::{Backend, Lock};

/// A spinlock protecting `T`, safe to take in any context. Create it with
/// [`new_irq_spinlock!`](crate::new_irq_spinlock).
pub type IrqSpinLock<T> = Lock<T, IrqSpinLockBackend>;

/// The [`Backend`] of [`IrqSpinLock`]: `spin_lock_irqsave`/`spin_unlock_irqrestore`.
pub struct IrqSpinLockBackend;

// SAFETY: `spinlock_t` gives mutual exclusion; the interrupt flags saved when locking are the
// guard state and are restored when unlocking, by the same owner.
unsafe impl Backend for IrqSpinLockBackend {
    type State = bindings::spinlock_t;
    type GuardState = c_ulong;

    unsafe fn init(ptr: *mut Self::State, name: *const c_char, key: *mut bindings::lock_class_key) {
        // SAFETY: by the caller's guarantees `ptr` is valid for writes and `name`/`key` live forever.
        unsafe { bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: by the caller's guarantees the lock is initialised.
        unsafe { bindings::rthin_spin_lock_irqsave(ptr) }
    }

    unsafe fn unlock(ptr: *mut Self::State, flags: &Self::GuardState) {
        // SAFETY: the caller owns the lock, and `flags` come from its `lock`.
        unsafe { bindings::rthin_spin_unlock_irqrestore(ptr, *flags) }
    }
}

/// Creates an [`IrqSpinLock`] initialiser with a lock class of its own.
#[macro_export]
macro_rules! new_irq_spinlock {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::dm::sync::IrqSpinLock::new(
            $inner, kernel::optional_name!($($name)?), kernel::static_lock_class!())
    };
}

/// Data behind the module's one global lock, a `rw_semaphore` defined in C (`helpers.c`):
/// shared for lookups ([`GlobalRwLock::read`]), exclusive for changes
/// ([`GlobalRwLock::write`]). Process context only; its rank is in [`crate::locking`].
///
/// Every `GlobalRwLock` is guarded by the same semaphore, so at most one may be held at a
/// time (taking a second one deadlocks, and lockdep says so).
pub struct GlobalRwLock<T> {
    data: core::cell::UnsafeCell<T>,
}

// SAFETY: `data` is only reached through guards: shared ones while the semaphore is held for
// reading (so `T: Sync` is needed), the exclusive one while it is held for writing (`T: Send`,
// since the data may then be moved out by any thread).
unsafe impl<T: Send + Sync> Sync for GlobalRwLock<T> {}

impl<T> GlobalRwLock<T> {
    /// Wraps `data` (for a `static`).
    pub const fn new(data: T) -> Self {
        Self {
            data: core::cell::UnsafeCell::new(data),
        }
    }

    /// Takes the global lock shared (may sleep).
    pub fn read(&self) -> GlobalReadGuard<'_, T> {
        // SAFETY: a plain `down_read` on the static semaphore; released by the guard.
        unsafe { bindings::rthin_global_read_lock() };
        GlobalReadGuard {
            lock: self,
            _not_send: core::marker::PhantomData,
        }
    }

    /// Takes the global lock exclusively (may sleep).
    pub fn write(&self) -> GlobalWriteGuard<'_, T> {
        // SAFETY: a plain `down_write` on the static semaphore; released by the guard.
        unsafe { bindings::rthin_global_write_lock() };
        GlobalWriteGuard {
            lock: self,
            _not_send: core::marker::PhantomData,
        }
    }
}

/// Shared access to a [`GlobalRwLock`]'s data; the semaphore is held for reading until drop.
pub struct GlobalReadGuard<'a, T> {
    lock: &'a GlobalRwLock<T>,
    /// Released by the task that took it: not `Send`.
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl<T> core::ops::Deref for GlobalReadGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the semaphore is held for reading, so no exclusive guard exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> Drop for GlobalReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard took the semaphore for reading.
        unsafe { bindings::rthin_global_read_unlock() };
    }
}

/// Exclusive access to a [`GlobalRwLock`]'s data; the semaphore is held for writing until
/// drop.
pub struct GlobalWriteGuard<'a, T> {
    lock: &'a GlobalRwLock<T>,
    /// Released by the task that took it: not `Send`.
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl<T> core::ops::Deref for GlobalWriteGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the semaphore is held for writing: this guard is the only access.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> core::ops::DerefMut for GlobalWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for GlobalWriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard took the semaphore for writing.
        unsafe { bindings::rthin_global_write_unlock() };
    }
}

/// Sleeps for `ms` milliseconds (process context, no lock held).
pub fn msleep(ms: u32) {
    // SAFETY: no precondition beyond process context.
    unsafe { bindings::rthin_msleep(ms) }
}

/// The periodic commit interval in milliseconds (the `commit_period_ms` module parameter,
/// 1000 as dm-thin's; 0 turns periodic commits off, for tests).
pub fn commit_period_ms() -> u32 {
    // SAFETY: reads a module parameter.
    unsafe { bindings::rthin_commit_period_ms() }
}

/// How long a pool out of data space holds writes that need a new block, in seconds (the
/// `no_space_timeout` module parameter, dm-thin's, 60 by default; 0 holds them until the
/// pool grows).
pub fn no_space_timeout_secs() -> u32 {
    // SAFETY: reads a module parameter.
    unsafe { bindings::rthin_no_space_timeout() }
}

/// A reader-writer semaphore (`struct rw_semaphore`) for locks the IO path takes: lookups
/// share it ([`NoioRwSem::read`]), changes hold it alone ([`NoioRwSem::write`]). While it is
/// held either way, the holder is in a NOIO allocation scope, so an allocation
/// under it never recurses into IO: reclaim writing back through a device whose `map` waits
/// for this very lock would deadlock.
/// Process context only (it sleeps); create it with
/// [`new_noio_rwsem!`](crate::new_noio_rwsem).
///
/// # Invariants
///
/// `sem` is initialised (by [`NoioRwSem::new`]); `data` is reached only through guards:
/// shared ones while `sem` is held for reading, the exclusive one while it is held for
/// writing.
#[pin_data]
pub struct NoioRwSem<T> {
    #[pin]
    sem: kernel::types::Opaque<bindings::rw_semaphore>,
    data: core::cell::UnsafeCell<T>,
}

// SAFETY: the data moves with the lock.
unsafe impl<T: Send> Send for NoioRwSem<T> {}
// SAFETY: shared guards of several threads reach `&T` at once (so `T: Sync`); the exclusive
// guard may move the data out on any thread (`T: Send`).
unsafe impl<T: Send + Sync> Sync for NoioRwSem<T> {}

impl<T> NoioRwSem<T> {
    /// An initialiser for a semaphore protecting `t`, in lock class `key`.
    pub fn new(
        t: T,
        name: &'static kernel::str::CStr,
        key: &'static kernel::sync::LockClassKey,
    ) -> impl PinInit<Self> {
        // `LockClassKey` is a transparent wrapper of `lock_class_key` (its accessor is private
        // to the kernel crate); lockdep writes to it, and it lives in an `Opaque`.
        let key = core::ptr::from_ref(key)
            .cast_mut()
            .cast::<bindings::lock_class_key>();
        pin_init!(Self {
            // SAFETY: `p` is valid for writes; `name` and `key` live forever.
            sem <- kernel::types::Opaque::ffi_init(|p| unsafe {
                bindings::__init_rwsem(p, name.as_char_ptr(), key)
            }),
            data: core::cell::UnsafeCell::new(t),
        })
    }

    /// Takes the semaphore shared (may sleep) and enters a NOIO allocation scope until the
    /// guard is dropped.
    pub fn read(&self) -> NoioReadGuard<'_, T> {
        // SAFETY: no precondition; the flags are restored by the guard, on this task.
        let flags = unsafe { bindings::rthin_memalloc_noio_save() };
        // SAFETY: `sem` is initialised (type invariant); released by the guard.
        unsafe { bindings::down_read(self.sem.get()) };
        NoioReadGuard {
            lock: self,
            flags,
            _not_send: core::marker::PhantomData,
        }
    }

    /// Takes the semaphore exclusively (may sleep) and enters a NOIO allocation scope until
    /// the guard is dropped.
    pub fn write(&self) -> NoioWriteGuard<'_, T> {
        // SAFETY: as in `read`.
        let flags = unsafe { bindings::rthin_memalloc_noio_save() };
        // SAFETY: `sem` is initialised (type invariant); released by the guard.
        unsafe { bindings::down_write(self.sem.get()) };
        NoioWriteGuard {
            lock: self,
            flags,
            _not_send: core::marker::PhantomData,
        }
    }

    /// Takes and releases the semaphore as if inside memory reclaim (lockdep's `fs_reclaim`
    /// annotation, as the kernel's own lockdep priming does), recording that it is taken
    /// there, so that an allocation under it that could recurse into reclaim is reported at
    /// once, not only when the deadlock happens. Process context, no NOIO scope, no lock held.
    pub fn taken_in_reclaim(&self) {
        // SAFETY: the annotation is released below, on the same task, with nothing between
        // but the semaphore's acquisition and release.
        unsafe { bindings::rthin_fs_reclaim_acquire() };
        // SAFETY: `sem` is initialised; taken and released at once.
        unsafe {
            bindings::down_write(self.sem.get());
            bindings::up_write(self.sem.get());
        }
        // SAFETY: acquired above.
        unsafe { bindings::rthin_fs_reclaim_release() };
    }
}

/// Shared access to a [`NoioRwSem`]'s data, in a NOIO allocation scope.
pub struct NoioReadGuard<'a, T> {
    lock: &'a NoioRwSem<T>,
    flags: core::ffi::c_uint,
    /// Released by the task that took it: not `Send`.
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl<T> core::ops::Deref for NoioReadGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the semaphore is held for reading, so no exclusive guard exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> Drop for NoioReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard took the semaphore for reading, on this task.
        unsafe { bindings::up_read(self.lock.sem.get()) };
        // SAFETY: `flags` came from the save in `read`, on this task.
        unsafe { bindings::rthin_memalloc_noio_restore(self.flags) };
    }
}

/// Exclusive access to a [`NoioRwSem`]'s data, in a NOIO allocation scope.
pub struct NoioWriteGuard<'a, T> {
    lock: &'a NoioRwSem<T>,
    flags: core::ffi::c_uint,
    /// Released by the task that took it: not `Send`.
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl<T> core::ops::Deref for NoioWriteGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the semaphore is held for writing: this guard is the only access.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> core::ops::DerefMut for NoioWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for NoioWriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard took the semaphore for writing, on this task.
        unsafe { bindings::up_write(self.lock.sem.get()) };
        // SAFETY: `flags` came from the save in `write`, on this task.
        unsafe { bindings::rthin_memalloc_noio_restore(self.flags) };
    }
}

/// Creates a [`NoioRwSem`] initialiser with a lock class of its own.
#[macro_export]
macro_rules! new_noio_rwsem {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::dm::sync::NoioRwSem::new(
            $inner, kernel::optional_name!($($name)?), kernel::static_lock_class!())
    };
}
