// SPDX-License-Identifier: GPL-2.0

//! Block devices a target keeps open for itself, independently of any table.
//!
//! A [`super::DmDev`] belongs to one `dm_target` and is released with it. State that outlives
//! a table (a pool carried over a table reload) holds its devices through [`BlockDevice`]
//! instead: its own open reference, released when the value is dropped.
//!
//! C header: [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h)

use super::bindings;
use core::ptr::NonNull;
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
