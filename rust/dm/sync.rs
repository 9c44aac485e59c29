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
