// SPDX-License-Identifier: GPL-2.0

//! The lock hierarchy of rthin, in one place.
//!
//! Every lock the module takes is listed here with its rank. A thread may take a lock only
//! while it holds locks of a *lower* rank; taking locks in the opposite order is a bug, and
//! lockdep (on in every test run) reports it. Within one rank, at most one lock is held.
//!
//! | rank | lock | kind | held in | protects |
//! |------|------|------|---------|----------|
//! | 1 | per-device (thin/rlinear target) state | mutex or rwsem | process context only | the device's own table state |
//! | 2 | pool-wide metadata lock (`Pool::md`, [`kernel::sync::Mutex`]) | mutex | process context only | the pool's metadata; every metadata operation takes it |
//! | 3 | per-object irq-safe spinlocks ([`crate::dm::sync::IrqSpinLock`]) | spinlock, irqs off | any context, completion included | short lists and counters; never held across IO, allocation or a wait |
//!
//! Rules that come with it:
//!
//! - Per-device before global, parent before child: a thin device's lock (rank 1) may be held
//!   while the pool's metadata lock (rank 2) is taken, never the other way round
//!   (seeds 000 and 001: AB-BA deadlocks).
//! - A thread that waits (for throttling, for IO, for a reference to drain) holds no lock
//!   at all (seed 003). [`crate::dm::lifetime::Owner`]'s drain asserts that it may sleep.
//! - Object lifetimes are reference counted with [`crate::dm::lifetime`]: a reference may be
//!   dropped in any context (bio completion runs in interrupt context); destruction happens
//!   only in process context, after the references drain (seed 002).
//! - Nothing is allocated with a sleeping allocation while a rank-3 lock is held: allocate
//!   first, then lock; free after unlocking.
//!
//! Current holders:
//!
//! - `rlinear` takes no lock in its IO path; its state is immutable after the constructor, and
//!   the in-flight reference count is a lifetime [`crate::dm::lifetime::Ref`].
//! - `rthin-pool` takes its metadata mutex (rank 2) in messages, status, suspend/resume and
//!   its destructor, and nothing while holding it. Its dm-bufio client, whose creation
//!   registers a shrinker, is made in the constructor before the mutex exists (seed 004). A
//!   failed metadata operation aborts under the mutex, and the abort rolls back by resetting
//!   that client (`dm_bufio_client_reset`, through `BlockManager::reset`), never by creating
//!   a new one.
//! - dm-bufio's per-buffer lock words ([`crate::dm::bufio`]) are not locks one waits on: a
//!   conflicting request fails at once with `EBUSY`.
