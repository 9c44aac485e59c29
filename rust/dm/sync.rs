// SPDX-License-Identifier: GPL-2.0

//! A spinlock that may be taken from any context, completion (interrupt) context included:
//! it disables local interrupts while held (`spin_lock_irqsave`).
//!
//! Its rank in rthin's lock hierarchy is written in [`crate::locking`]. Allocate before taking
//! it and free after releasing it; never sleep while holding it.

use super::bindings;
use kernel::ffi::{c_char, c_ulong};
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
