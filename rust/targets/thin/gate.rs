// SPDX-License-Identifier: GPL-2.0

//! A gate: reasons for process-context threads to wait, and the wait until none is left.
//!
//! The pool has two: its idle gate (a suspending pool waits while any cell is held) and its
//! throttle (a thin's `map` waits while the worker lags or has too many provisions in
//! flight). Each is an atomic set of reasons, read without a lock on the fast path, with a
//! leaf mutex and a condition variable for the wait. The mutex is taken only to change the
//! reasons and to sleep, so a wakeup cannot fall between a waiter's look and its sleep.
//! Every gate gets lock classes of its own ([`new_gate!`]), so lockdep tells the pool's
//! gates apart, and `rust/locking.rs` ranks each.

use core::sync::atomic::{AtomicU8, Ordering};
use kernel::{
    prelude::*,
    str::CStr,
    sync::{CondVar, LockClassKey, Mutex},
};

/// A set of reasons to wait (bits of a `u8`) and the wait until none is set.
///
/// # Invariants
///
/// `reasons` changes only with `lock` held, and `cleared` is notified, under `lock`, every
/// time the set becomes empty.
#[pin_data]
pub(crate) struct Gate {
    reasons: AtomicU8,
    #[pin]
    lock: Mutex<()>,
    #[pin]
    cleared: CondVar,
}

/// `new_gate!("name")`: a [`Gate`] with no reason set, whose mutex and condition variable
/// have lock classes of their own, named after `name`.
macro_rules! new_gate {
    ($name:literal) => {
        $crate::targets::thin::gate::Gate::new(
            kernel::c_str!(concat!($name, "_lock")),
            kernel::static_lock_class!(),
            kernel::c_str!($name),
            kernel::static_lock_class!(),
        )
    };
}
pub(crate) use new_gate;

impl Gate {
    /// A gate with no reason set; use [`new_gate!`], which gives each gate its lock classes.
    pub(crate) fn new(
        lock_name: &'static CStr,
        lock_key: &'static LockClassKey,
        cv_name: &'static CStr,
        cv_key: &'static LockClassKey,
    ) -> impl PinInit<Self> {
        pin_init!(Self {
            reasons: AtomicU8::new(0),
            lock <- Mutex::new((), lock_name, lock_key),
            cleared <- CondVar::new(cv_name, cv_key),
        })
    }

    /// Whether any reason is set (no lock taken).
    pub(crate) fn is_set(&self) -> bool {
        self.reasons.load(Ordering::Acquire) != 0
    }

    /// Sets (`on`) or clears the reasons `why`; waiters go on once none is left. Takes the
    /// gate's lock only if `why` changes.
    pub(crate) fn set(&self, why: u8, on: bool) {
        let was = self.reasons.load(Ordering::Acquire);
        if (was & why == why && on) || (was & why == 0 && !on) {
            return;
        }
        let _g = self.lock.lock();
        let now = if on {
            self.reasons.fetch_or(why, Ordering::AcqRel) | why
        } else {
            self.reasons.fetch_and(!why, Ordering::AcqRel) & !why
        };
        if now == 0 {
            self.cleared.notify_all();
        }
    }

    /// Waits until no reason is set (process context; the caller holds no lock that a
    /// thread clearing a reason may need: the wait holds only the gate's own).
    pub(crate) fn wait_clear(&self) {
        if !self.is_set() {
            return;
        }
        let mut g = self.lock.lock();
        while self.is_set() {
            self.cleared.wait(&mut g);
        }
    }
}
