// SPDX-License-Identifier: GPL-2.0

//! Block devices a target keeps open for itself, independently of any table.
//!
//! A [`super::DmDev`] belongs to one `dm_target` and is released with it. State that outlives
//! a table (a pool carried over a table reload) holds its devices through [`BlockDevice`]
//! instead: its own open reference, released when the value is dropped.
//!
//! [`BlockDevice::discards`] issues discards to such a device, carrying a bio that goes on
//! when they are all done ([`DiscardDone`]): nothing waits for them.
//!
//! C header: [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h)

use super::{bindings, bio::OwnedBio};
use core::ptr::{self, NonNull};
use kernel::{error::Error, prelude::*};

/// A block device opened for reading and writing (not exclusively: the table that named it
/// holds the exclusive claim). Dropping it closes it.
///
/// # Invariants
///
/// `file` is a block device file from `bdev_file_open_by_dev`, put once, in `drop`.
pub struct BlockDevice {
    file: NonNull<bindings::file>,
}

// SAFETY: an open block device file may be used and closed from any thread.
unsafe impl Send for BlockDevice {}
// SAFETY: the shared methods only read the device or submit IO to it, which is thread safe.
unsafe impl Sync for BlockDevice {}

impl BlockDevice {
    /// Opens the device numbered `devt` (process context).
    pub fn open(devt: u32) -> Result<Self> {
        let mut err = 0;
        // SAFETY: `err` is a valid place for the error code.
        let file = unsafe { bindings::rthin_bdev_file_open(devt, &mut err) };
        // INVARIANT: a non-null result is an open block device file.
        match NonNull::new(file) {
            Some(file) => Ok(Self { file }),
            None => Err(Error::from_errno(err)),
        }
    }

    pub(crate) fn bdev(&self) -> *mut bindings::block_device {
        // SAFETY: the file is open (type invariant), so it has a block device.
        unsafe { bindings::file_bdev(self.file.as_ptr()) }
    }

    /// The device number.
    pub fn devt(&self) -> u32 {
        // SAFETY: the block device stays valid while the file is open.
        unsafe { (*self.bdev()).bd_dev }
    }

    /// Size of the device in 512-byte sectors.
    pub fn nr_sectors(&self) -> u64 {
        // SAFETY: the block device stays valid while the file is open.
        unsafe { bindings::rthin_bdev_nr_sectors(self.bdev()) }
    }

    /// Starts a set of discards of the device: [`Discards::add`] issues them,
    /// [`Discards::then`] names the bio that goes on once they are all done.
    pub fn discards(&self) -> Discards<'_> {
        // INVARIANT: no chain yet.
        Discards {
            dev: self,
            chain: ptr::null_mut(),
        }
    }

    /// Flushes the device's volatile write cache and waits for it (process context).
    pub fn flush(&self) -> Result {
        // SAFETY: the block device stays valid while the file is open.
        let r = unsafe { bindings::blkdev_issue_flush(self.bdev()) };
        if r != 0 {
            return Err(Error::from_errno(r));
        }
        Ok(())
    }
}

impl Drop for BlockDevice {
    fn drop(&mut self) {
        // SAFETY: the file is open and this is its only release (type invariant).
        unsafe { bindings::fput(self.file.as_ptr()) };
    }
}

/// What a bio carried by discards ([`Discards::then`]) goes on to: implemented by the per-bio
/// data type of the target that issued them.
pub trait DiscardDone: Sized {
    /// Every discard is done, whether it succeeded or not (a discard only tells the device
    /// that the data is no longer needed); `bio` is the target's again. Called from the
    /// completion of the last discard: any context, interrupt context included.
    fn discards_done(bio: OwnedBio<Self>);
}

/// Discards of a [`BlockDevice`] being issued, as `__blkdev_issue_discard` chains them: each
/// bio but the last is submitted as the next one is made; [`Discards::then`] submits the
/// last, with a bio to carry until all are done. Dropping it instead submits the last without
/// telling anyone.
///
/// # Invariants
///
/// `chain` is null or the last bio of a chain of discards built by `__blkdev_issue_discard`,
/// not yet submitted and owned by this value (the earlier bios of the chain are submitted and
/// complete into it).
pub struct Discards<'a> {
    dev: &'a BlockDevice,
    chain: *mut bindings::bio,
}

/// The end of the bio that stands for a set of discards: hands the bio they carried on.
///
/// # Safety
///
/// `parent` must be the bio made by [`Discards::then`] for `P`, its `bi_private` a bio given
/// up by `OwnedBio::<P>::into_raw`, and this its only end.
unsafe extern "C" fn discards_end<P: DiscardDone>(parent: *mut bindings::bio) {
    // SAFETY: by the safety requirements, `parent` is valid and ours until put here.
    let ctx = unsafe { (*parent).bi_private };
    // SAFETY: as above; nothing touches `parent` after this.
    unsafe { bindings::bio_put(parent) };
    // SAFETY: by the safety requirements, `ctx` is an owned bio given up for this call.
    let bio = unsafe { OwnedBio::<P>::from_raw(ctx.cast()) };
    P::discards_done(bio);
}

/// The end of a chain of discards nobody waits for: frees its last bio.
///
/// # Safety
///
/// `bio` must be the last bio of a chain owned by a dropped [`Discards`], ending once.
unsafe extern "C" fn discards_put(bio: *mut bindings::bio) {
    // SAFETY: by the safety requirements.
    unsafe { bindings::bio_put(bio) };
}

impl Discards<'_> {
    /// Discards `count` sectors of the device from `sector`, split as its limits ask (nothing
    /// if it takes no discards). May sleep, for bios from the block layer's pool and for the
    /// queue: process context, no spinlock held.
    pub fn add(&mut self, sector: u64, count: u64) {
        if count == 0 {
            return;
        }
        // SAFETY: the device is open while borrowed; `chain` is null or the chain's last
        // bio, ours (type invariant). The helper adds bios to the chain, submitting all but
        // the new last one, which it leaves in `chain`: the invariant holds after it.
        unsafe { bindings::rthin_discard_range(self.dev.bdev(), sector, count, &mut self.chain) };
    }

    /// Submits what is left of the discards; once they are all done (at once, if none was
    /// issued), `bio` goes to [`DiscardDone::discards_done`]. May sleep, as [`Discards::add`].
    pub fn then<P: DiscardDone>(mut self, bio: OwnedBio<P>) {
        let chain = core::mem::take(&mut self.chain);
        // SAFETY: a bio from the block layer's pool, waiting for one (GFP_NOIO): it does not
        // fail, but a null is still handled below.
        let parent = unsafe { bindings::rthin_bio_alloc_noio() };
        if parent.is_null() {
            // Not reached: submit the chain with nobody waiting, and go on at once.
            self.chain = chain;
            drop(self);
            return P::discards_done(bio);
        }
        // SAFETY: `parent` is a new bio, ours; its end (`discards_end::<P>`) gets the carried
        // bio, given up here, and runs once, when `parent` and every bio chained to it are
        // done. `chain`, if any, is the last bio of our chain (type invariant), not submitted:
        // chained to `parent` and submitted, it is the block layer's. `bio_endio` drops
        // `parent`'s own count, so it ends once the chain has.
        unsafe {
            (*parent).bi_end_io = Some(discards_end::<P>);
            (*parent).bi_private = bio.into_raw().cast();
            if !chain.is_null() {
                bindings::bio_chain(chain, parent);
                bindings::submit_bio(chain);
            }
            bindings::bio_endio(parent);
        }
    }
}

impl Drop for Discards<'_> {
    fn drop(&mut self) {
        if self.chain.is_null() {
            return;
        }
        // SAFETY: the chain's last bio, ours and not submitted (type invariant): submitted
        // with an end that frees it, it is the block layer's.
        unsafe {
            (*self.chain).bi_end_io = Some(discards_put);
            bindings::submit_bio(self.chain);
        }
    }
}
