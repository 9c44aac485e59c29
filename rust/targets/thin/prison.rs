// SPDX-License-Identifier: GPL-2.0

//! The bio prison and the deferred sets of the thin IO path: how IO to a block is held while
//! the block changes, and how a change waits for the IO already in flight.
//!
//! - [`Prison`]: cells keyed by a range of virtual blocks of one thin device, or by a range of
//!   data blocks. A held cell stops new IO to its blocks: `map` sends a bio that meets one to
//!   the worker, which parks it in the cell until the cell is released. Held cells never
//!   overlap, so a lookup by any key inside a cell finds it. It lives under the pool's
//!   metadata lock, where `map` does its lookups.
//! - [`DeferredSet`]: in-flight IO counted by epoch, as dm-thin's `dm_deferred_set`. Every bio
//!   remapped to a data block takes an entry in the pool's `all_io` set (and a read of a
//!   block shared with a snapshot one in `shared_read` too), and gives it back when it
//!   completes. A change that must not overlap the IO already in flight (unmapping blocks,
//!   dropping a reference to a shared block) holds its cells first, so no new IO reaches the
//!   blocks, and then waits in the set until every earlier entry has drained. Nothing
//!   sleeps: the waiting bio is parked in the set and handed back to the worker by the
//!   completion that drains it.
//!
//! So a data block is given up (its reference dropped, and so perhaps freed and reused after
//! the next commit) only once no IO issued before is still in flight to it.

use super::ThinBio;
use crate::dm::{BioList, OwnedBio};
use core::cmp::Ordering;
use kernel::{alloc::flags::GFP_KERNEL, prelude::*, rbtree::RBTree};

/// A range of blocks a cell holds: virtual blocks `begin..end` of thin device `dev`, or data
/// blocks `begin..end` of the pool.
///
/// Keys are ordered by kind and device, then by range, and two overlapping ranges compare
/// equal: the prison never holds overlapping cells, so this is a total order on what it
/// holds, and a lookup finds the cell that overlaps the key looked up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key {
    data: bool,
    dev: u64,
    begin: u64,
    end: u64,
}

impl Key {
    /// Virtual block `block` of thin device `dev`.
    pub(crate) fn virt(dev: u64, block: u64) -> Self {
        Self::virt_range(dev, block, block.saturating_add(1))
    }

    /// Virtual blocks `begin..end` of thin device `dev`.
    pub(crate) fn virt_range(dev: u64, begin: u64, end: u64) -> Self {
        Self {
            data: false,
            dev,
            begin,
            end,
        }
    }

    /// Data block `block` of the pool.
    pub(crate) fn data(block: u64) -> Self {
        Self {
            data: true,
            dev: 0,
            begin: block,
            end: block.saturating_add(1),
        }
    }
}

impl Ord for Key {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.data, self.dev)
            .cmp(&(o.data, o.dev))
            .then(if self.end <= o.begin {
                Ordering::Less
            } else if self.begin >= o.end {
                Ordering::Greater
            } else {
                Ordering::Equal
            })
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Key {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Key {}

/// The cells held, each with the bios parked in it. Under the pool's metadata lock, so its
/// allocations (a node per cell) are NOIO.
pub(crate) struct Prison {
    cells: RBTree<Key, BioList<ThinBio>>,
}

impl Prison {
    pub(crate) fn new() -> Self {
        Self {
            cells: RBTree::new(),
        }
    }

    /// Whether no cell is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.cells.iter().next().is_none()
    }

    /// Whether a held cell overlaps `k`.
    pub(crate) fn is_held(&self, k: &Key) -> bool {
        self.cells.get(k).is_some()
    }

    /// Parks `bio` in the held cell overlapping `k`, if there is one; otherwise gives the bio
    /// back.
    pub(crate) fn park(
        &mut self,
        k: &Key,
        bio: OwnedBio<ThinBio>,
    ) -> Result<(), OwnedBio<ThinBio>> {
        match self.cells.get_mut(k) {
            Some(waiters) => {
                waiters.push(bio);
                Ok(())
            }
            None => Err(bio),
        }
    }

    /// Holds the cell `k`, which must overlap no held cell ([`Prison::is_held`]).
    pub(crate) fn hold(&mut self, k: Key) -> Result {
        self.cells
            .try_create_and_insert(k, BioList::new(), GFP_KERNEL)?;
        Ok(())
    }

    /// Releases the cell `k` (as held), giving back the bios parked in it.
    pub(crate) fn release(&mut self, k: &Key) -> BioList<ThinBio> {
        self.cells.remove(k).unwrap_or_default()
    }
}

/// Entries of a deferred set: epochs of in-flight IO, used as a ring.
const DS_SIZE: usize = 64;

/// In-flight IO counted by epoch, with bios waiting for epochs to drain (see the module
/// documentation). Behind an irq-safe spinlock: entries are given back in bio completion.
pub(crate) struct DeferredSet {
    current: usize,
    sweeper: usize,
    count: [u32; DS_SIZE],
    waiting: [BioList<ThinBio>; DS_SIZE],
}

/// An entry a bio holds in a [`DeferredSet`] while it is in flight.
#[derive(Clone, Copy)]
pub(crate) struct DsEntry(u8);

fn ds_next(i: usize) -> usize {
    (i + 1) % DS_SIZE
}

impl DeferredSet {
    pub(crate) fn new() -> Self {
        Self {
            current: 0,
            sweeper: 0,
            count: [0; DS_SIZE],
            waiting: core::array::from_fn(|_| BioList::new()),
        }
    }

    /// Counts one more bio in flight, in the current epoch.
    pub(crate) fn inc(&mut self) -> DsEntry {
        self.count[self.current] += 1;
        DsEntry(self.current as u8)
    }

    /// A bio in flight completed; bios whose wait is over are added to `ready`.
    pub(crate) fn dec(&mut self, e: DsEntry, ready: &mut BioList<ThinBio>) {
        let i = usize::from(e.0) % DS_SIZE;
        self.count[i] = self.count[i].saturating_sub(1);
        self.sweep(ready);
    }

    fn sweep(&mut self, ready: &mut BioList<ThinBio>) {
        while self.sweeper != self.current && self.count[self.sweeper] == 0 {
            ready.append(self.waiting[self.sweeper].take_all());
            self.sweeper = ds_next(self.sweeper);
        }
        if self.sweeper == self.current && self.count[self.sweeper] == 0 {
            ready.append(self.waiting[self.sweeper].take_all());
        }
    }

    /// Has `bio` wait until every bio in flight now has completed: `Err(bio)` if none is (go
    /// on at once), `Ok(())` if it was parked (the completion that drains the set hands it
    /// back).
    pub(crate) fn wait_for_in_flight(
        &mut self,
        bio: OwnedBio<ThinBio>,
    ) -> Result<(), OwnedBio<ThinBio>> {
        if self.sweeper == self.current && self.count[self.current] == 0 {
            return Err(bio);
        }
        self.waiting[self.current].push(bio);
        let next = ds_next(self.current);
        if self.count[next] == 0 {
            self.current = next;
        }
        Ok(())
    }
}
