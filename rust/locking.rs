// SPDX-License-Identifier: GPL-2.0

//! The lock hierarchy of rthin, in one place.
//!
//! Every lock the module takes is listed here with its rank. A thread may take a lock only
//! while it holds locks of a *lower* rank; taking locks in the opposite order is a bug, and
//! lockdep (on in every test run) reports it. Within one rank, at most one lock is held.
//!
//! | rank | lock | kind | held in | protects |
//! |------|------|------|---------|----------|
//! | 1 | per-device (thin/rlinear target) state | — | — | none exists yet: a thin device's state is immutable after its constructor but for one atomic flag (`requeue`, set under the pool's `held` lock during a noflush suspend) and the size of its external origin (`origin_size`, an atomic its preresume sets, while no IO is mapped), and its in-flight bios hold [`crate::dm::lifetime::Ref`]s |
//! | 2 | pool metadata lock (`PoolCore::md`, a [`crate::dm::sync::NoioRwSem`] over `MdState`) | rw_semaphore; a NOIO allocation scope while held | process context: shared by `map` of a thin device and status lookups; exclusive for the pool worker, kcopyd's completion work of the pool's client (mapping a block it prepared), messages, commits, constructors, suspend/resume, a pool's shutdown | the pool's metadata, its open thin devices (with their changed/aborted flags), and the bio prison (cells of blocks being provisioned, unmapped or having their sharing broken) |
//! | 2b | a pool's idle gate (`PoolCore::idle`, a `Gate` of `targets/thin/gate.rs`: its leaf `Mutex<()>`) | mutex, a leaf | process context: a suspending pool waiting for the cells to close; the worker (under rank 2) opening or closing it | nothing but the condvar's wait: the gate's reasons are an atomic |
//! | 2c | a pool's pending-stamp list (`BufioBm::pending` in `targets/metadata.rs`, a kernel `Mutex`) | mutex, a leaf | process context: a metadata block's write unlock, a flush or abort (all under rank 2, or in a pool's constructor before rank 2 exists) | the metadata blocks changed in this transaction and not yet stamped with their checksum |
//! | 2d | a pool's bound table (`PoolCore::table` in `targets/thin/pool.rs`, a kernel `Mutex`) | mutex | process context, no other rthin lock held: a pool table's preresume (binding it) and destructor (unbinding it), raising the pool's pending event (the worker after its pass, a message or status after the metadata lock is dropped) | which table gets the pool's events; dm's event mutex (`_event_lock`, in `dm_table_event`) is taken under it, and nothing of rthin's |
//! | 2e | a pool's throttle gate (`PoolCore::throttle`, a `Gate` of `targets/thin/gate.rs`: its leaf `Mutex<()>`) | mutex, a leaf | process context: a thin's `map` waiting for the worker to stop throttling (no other rthin lock held), the worker starting or stopping it (none held), a provision's end clearing the cap (under rank 2) | nothing but the condvar's wait: the gate's reasons are an atomic |
//! | 3 | the pool registry (`POOLS` in `targets/pool.rs`, a [`crate::dm::sync::GlobalRwLock`]) | rw_semaphore, global | process context: pool and thin constructors, the release of a pool's user (a table's or thin's destructor) | which pools exist, keyed by their mapped device, and how many users (tables, open thins) each has |
//! | 4 | per-object irq-safe spinlocks ([`crate::dm::sync::IrqSpinLock`]: `PoolCore::deferred`, `PoolCore::prepared`, `PoolCore::held`, `PoolCore::all_io`, `PoolCore::shared_read`) | spinlock, irqs off | any context, bio completion included | intrusive bio lists, a flag, in-flight counts by epoch; never held across IO, allocation or a wait |
//!
//! Rules that come with it:
//!
//! - Per-device before global, parent before child: a device's lock (rank 1) before its
//!   pool's metadata lock (rank 2), before the global registry (rank 3), never the other way
//!   round (seeds 000 and 001: AB-BA deadlocks). In practice no path nests ranks 2 and 3:
//!   constructors get their pool from the registry, drop the registry lock, then take the
//!   metadata lock; the release of a pool's last user counts it down under the registry
//!   lock, drops it, stops the waker and commits under the metadata lock alone, then takes
//!   the registry lock again to remove the pool.
//! - The registry lock is taken for writing only: lookups count a new user. A pool
//!   constructor holds it across the creation of a new pool (metadata IO, the dm-bufio
//!   client and its shrinker, the kcopyd client and workqueue), as dm-thin's pool table
//!   mutex, so that two tables cannot both open one metadata device. It is never taken in
//!   the IO path or in memory reclaim, and no other rthin lock is taken under it.
//! - A thread that waits for data IO, for kcopyd, for throttling or for a reference to drain
//!   holds no lock at all (seed 003). The pool worker zeroes and copies blocks with dm-kcopyd
//!   only after dropping the metadata lock (the job's completion, on kcopyd's own workqueue,
//!   takes it to map the block; nothing waits for that workqueue under the lock: the kcopyd
//!   client is destroyed with the pool, no lock held); a change that must wait for IO in flight (a
//!   discard, a sharing break) is parked in a deferred set, no thread waiting. A suspending
//!   pool waits for the provisions in flight on a condvar under the idle lock (2b) alone.
//!   Zeroing and copying are asynchronous kcopyd jobs that carry their bio
//!   ([`crate::dm::kcopyd::JobDone`]): no thread waits for them at all. [`crate::dm::lifetime::Owner`]'s drain asserts that it may sleep.
//! - The one kind of IO waited for under a lock is the metadata lock's own: dm-bufio reads
//!   and writes of the metadata device, and, in a commit, the flush of the data device's
//!   cache that must precede it (as dm-thin does under its metadata lock). Neither
//!   completion takes an rthin lock, and that IO goes to the devices below the pool, never
//!   back through an rthin target.
//! - The metadata lock is taken in `map`, so in memory reclaim too (writeback through a thin
//!   device). While it is held, allocations are NOIO ([`crate::dm::sync::NoioRwSem`]), and
//!   each pool tells lockdep that the lock is taken in reclaim
//!   ([`crate::dm::sync::NoioRwSem::taken_in_reclaim`]), so an allocation under it that could
//!   recurse into reclaim is a lockdep report in every test run, not a rare deadlock.
//! - Object lifetimes are reference counted. A [`crate::dm::lifetime::Ref`] may be dropped in
//!   any context (bio completion runs in interrupt context): dropping the last one only
//!   signals its owner. Destruction happens only where the
//!   [`crate::dm::lifetime::Owner`] is dropped, in process context (a target's destructor),
//!   after the references drain (seed 002). Thin devices and pools both live in owners: a
//!   pool's work items hold `Ref`s, so a pool is never destroyed inside its own work item.
//!   A kernel `Arc` is dropped only where its last drop may destroy the object: the metadata
//!   device's `Arc<BlockDevice>`, shared by a pool and its dm-bufio client, goes with the
//!   pool.
//! - A pool's events (`dm_table_event`: a mode change, a low water mark crossed) are decided
//!   under the metadata lock but raised after it is dropped, under the bound-table lock
//!   (2d) alone: dm's event callback takes dm's own locks, and an rthin lock under them
//!   would tie rthin's hierarchy to dm's.
//! - Nothing is allocated while a rank-4 lock is held: bio lists link through the bios
//!   themselves. Work on the pool's workqueue runs in a NOIO allocation scope, so an
//!   allocation there never recurses into IO on the device waiting for it.
//!
//! Current holders:
//!
//! - `rlinear` takes no lock in its IO path; its state is immutable after the constructor, and
//!   the in-flight reference count is a lifetime [`crate::dm::lifetime::Ref`].
//! - `rthin` takes the metadata lock *shared* in `map`, for a lookup in cached metadata only
//!   (no IO) and a look at the bio prison, so lookups run concurrently with each other; and,
//!   under it, a rank-4 lock to count the bio in flight. Cells are held only under the lock
//!   held exclusively, so a bio counted in flight under the shared lock is always seen by
//!   the holder of a later cell that waits for the IO in flight;
//!   a rank-4 lock to defer a bio; and in `end_io`, rank-4 locks to count it out of flight
//!   or to hand a provisioned bio back.
//! - A discard passed down to the data device is submitted by the worker with no lock held
//!   (the references that keep its blocks allocated are taken and dropped under the
//!   metadata lock); its completion, in any context, only takes the rank-4 `prepared` lock
//!   to hand the thin's discard back to the worker.
//! - Writes held while the pool is out of data space (`PoolCore::held`, rank 4) go in only
//!   under the metadata lock held for writing, and every path that takes them all out for
//!   good (leaving out-of-space mode in a commit or a table bind, the no-space timeout) takes
//!   them under it too, so none is left behind; they are handed to `deferred` (one rank-4
//!   lock at a time) or ended (with no lock held) only after the `held` lock is dropped. A
//!   thin's noflush presuspend takes its own held and deferred bios out under the rank-4
//!   locks alone, and ends them with `DM_REQUEUE` after.
//! - A thin's `map` that waits for the pool's throttle (a worker run longer than a second,
//!   or provisions capped) holds no lock while it waits, and nothing the worker or a
//!   provision's completion needs waits for `map`: seed 003's deadlock (waiting for a
//!   throttle with a lock held that the throttle's release needs) has no lock to hold.
//! - `rthin-pool` and its worker take the metadata lock exclusively for every metadata change
//!   (and shared for status); the dm-bufio client, whose creation registers a shrinker, is
//!   made before the lock exists
//!   (seed 004), under the registry lock only. A failed metadata operation aborts under the
//!   lock, and the abort rolls back by resetting that client (`dm_bufio_client_reset`,
//!   through `BlockManager::reset`), never by creating a new one.
//! - dm-bufio's per-buffer lock words ([`crate::dm::bufio`]) are not locks one waits on: a
//!   conflicting request fails at once with `EBUSY`.
