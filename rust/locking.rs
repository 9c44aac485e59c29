// SPDX-License-Identifier: GPL-2.0

//! The lock hierarchy of rthin, in one place.
//!
//! Every lock the module takes is listed here with its rank. A thread may take a lock only
//! while it holds locks of a *lower* rank; taking locks in the opposite order is a bug, and
//! lockdep (on in every test run) reports it. Within one rank, at most one lock is held.
//!
//! | rank | lock | kind | held in | protects |
//! |------|------|------|---------|----------|
//! | 1 | per-device (thin/rlinear target) state | — | — | none exists yet: a thin device's state is immutable after its constructor, and its in-flight bios hold [`crate::dm::lifetime::Ref`]s |
//! | 2 | pool metadata lock (`PoolCore::md`, a [`kernel::sync::Mutex`] over `MdState`) | mutex | process context: `map` of a thin device, the pool worker, messages, status, constructors, suspend/resume | the pool's metadata, its open thin devices, and the cells of blocks being provisioned |
//! | 3 | the pool registry (`POOLS` in `targets/pool.rs`, a [`crate::dm::sync::GlobalRwLock`]) | rw_semaphore, global | process context: constructors (shared for a thin device's lookup of its pool, exclusive for a pool table's insert/remove) | which pools exist, keyed by their mapped device |
//! | 4 | per-object irq-safe spinlocks ([`crate::dm::sync::IrqSpinLock`]: `PoolCore::deferred`, `PoolCore::prepared`) | spinlock, irqs off | any context, bio completion included | intrusive bio lists and a flag; never held across IO, allocation or a wait |
//!
//! Rules that come with it:
//!
//! - Per-device before global, parent before child: a device's lock (rank 1) before its
//!   pool's metadata lock (rank 2), before the global registry (rank 3), never the other way
//!   round (seeds 000 and 001: AB-BA deadlocks). In practice no path nests ranks 2 and 3:
//!   constructors look the pool up, drop the registry lock, then take the metadata lock.
//! - Lookups take the global lock shared (thin constructors); only adding or removing a pool
//!   takes it exclusively, and then nothing else is locked or waited for under it.
//! - A thread that waits for data IO, for kcopyd, for throttling or for a reference to drain
//!   holds no lock at all (seed 003). The pool worker zeroes and copies blocks with dm-kcopyd
//!   only after dropping the metadata lock. [`crate::dm::lifetime::Owner`]'s drain asserts
//!   that it may sleep.
//! - The one kind of IO waited for under a lock is the metadata lock's own: dm-bufio reads
//!   and writes of the metadata device, and, in a commit, the flush of the data device's
//!   cache that must precede it (as dm-thin does under its metadata lock). Neither
//!   completion takes an rthin lock, and that IO goes to the devices below the pool, never
//!   back through an rthin target.
//! - Object lifetimes are reference counted: a [`crate::dm::lifetime::Ref`] or a pool's
//!   `Arc` may be dropped in any context (bio completion runs in interrupt context);
//!   destruction happens only in process context (a target's destructor), after the
//!   references drain (seed 002).
//! - Nothing is allocated while a rank-4 lock is held: bio lists link through the bios
//!   themselves. Work on the pool's workqueue runs in a NOIO allocation scope, so an
//!   allocation there never recurses into IO on the device waiting for it.
//!
//! Current holders:
//!
//! - `rlinear` takes no lock in its IO path; its state is immutable after the constructor, and
//!   the in-flight reference count is a lifetime [`crate::dm::lifetime::Ref`].
//! - `rthin` takes the metadata mutex in `map` for a lookup in cached metadata only (no IO),
//!   and a rank-4 lock to defer a bio or, in `end_io`, to hand a provisioned bio back.
//! - `rthin-pool` and its worker take the metadata mutex for every metadata operation; the
//!   dm-bufio client, whose creation registers a shrinker, is made before the mutex exists
//!   (seed 004). A failed metadata operation aborts under the mutex, and the abort rolls back
//!   by resetting that client (`dm_bufio_client_reset`, through `BlockManager::reset`), never
//!   by creating a new one.
//! - dm-bufio's per-buffer lock words ([`crate::dm::bufio`]) are not locks one waits on: a
//!   conflicting request fails at once with `EBUSY`.
