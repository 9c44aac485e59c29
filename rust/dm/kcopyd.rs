// SPDX-License-Identifier: GPL-2.0

//! dm-kcopyd: copying and zeroing ranges of sectors with the kernel's copy daemon.
//!
//! [`Kcopyd::copy_then`] and [`Kcopyd::zero_then`] start a job and return: the job carries a
//! bio, and hands it to [`JobDone::job_done`] when it is done. Nothing waits for it, so no
//! thread holds a lock across the IO (see [`crate::locking`]), and any number of jobs may be
//! in flight at once; the caller bounds them.
//!
//! C header: [`include/linux/dm-kcopyd.h`](srctree/include/linux/dm-kcopyd.h)

use super::{bdev::BlockDevice, bindings, bio::OwnedBio, device::DmDev};
use core::ptr::NonNull;
use kernel::ffi::{c_int, c_ulong, c_void};
use kernel::{error::from_err_ptr, prelude::*};

/// A kcopyd client. Creating one allocates its memory pool and workqueue; dropping it waits for
/// its jobs and frees them (process context).
///
/// # Invariants
///
/// `kc` comes from a successful `dm_kcopyd_client_create` and is destroyed once, in `drop`.
pub struct Kcopyd {
    kc: NonNull<bindings::dm_kcopyd_client>,
}

// SAFETY: kcopyd clients take jobs from any thread.
unsafe impl Send for Kcopyd {}
// SAFETY: as above.
unsafe impl Sync for Kcopyd {}

/// What a bio carried by a kcopyd job ([`Kcopyd::copy_then`], [`Kcopyd::zero_then`]) goes
/// on to: implemented by the per-bio data type of the target that started the job.
pub trait JobDone: Sized {
    /// The job is done (`ok`: without a read or write error); `bio` is the target's again.
    /// Called in process context (kcopyd's worker), with no lock held.
    fn job_done(bio: OwnedBio<Self>, ok: bool);
}

/// kcopyd's notify function for a job carrying a bio.
///
/// # Safety
///
/// `context` must be a bio given up by `OwnedBio::<P>::into_raw`, and this the only call
/// for it.
unsafe extern "C" fn notify_bio<P: JobDone>(
    read_err: c_int,
    write_err: c_ulong,
    context: *mut c_void,
) {
    // SAFETY: by the safety requirements.
    let bio = unsafe { OwnedBio::<P>::from_raw(context.cast()) };
    P::job_done(bio, read_err == 0 && write_err == 0);
}

impl Kcopyd {
    /// A client without throttling (process context).
    pub fn new() -> Result<Self> {
        // SAFETY: a NULL throttle is allowed (no throttling).
        let kc = from_err_ptr(unsafe { bindings::dm_kcopyd_client_create(core::ptr::null_mut()) })?;
        // INVARIANT: created successfully above.
        Ok(Self {
            kc: NonNull::new(kc).ok_or(ENOMEM)?,
        })
    }

    fn region(
        bdev: *mut bindings::block_device,
        sector: u64,
        count: u64,
    ) -> bindings::dm_io_region {
        bindings::dm_io_region {
            bdev,
            sector,
            count,
        }
    }

    /// Starts copying `count` sectors from `src` at `src_sector` to `dst` at `dst_sector`,
    /// carrying `bio`, which the job hands to [`JobDone::job_done`] when done. May sleep
    /// (for a job from kcopyd's pool); process context, no spinlock held.
    pub fn copy_then<P: JobDone>(
        &self,
        src: &BlockDevice,
        src_sector: u64,
        dst: &BlockDevice,
        dst_sector: u64,
        count: u64,
        bio: OwnedBio<P>,
    ) {
        // SAFETY: `src` is open while borrowed, and its owner (a pool, with this client)
        // drops this client, which waits for the job, before it closes `src`.
        unsafe { self.copy_raw(src.bdev(), src_sector, dst, dst_sector, count, bio) };
    }

    /// As [`Kcopyd::copy_then`], from a device of a target's table (a thin device's external
    /// origin). `bio` must keep `src` open until the job is done: a bio of a target holds a
    /// reference to the target's state, which holds its devices.
    pub fn copy_from_table_dev_then<P: JobDone>(
        &self,
        src: &DmDev,
        src_sector: u64,
        dst: &BlockDevice,
        dst_sector: u64,
        count: u64,
        bio: OwnedBio<P>,
    ) {
        // SAFETY: `src` is open while borrowed, and stays open until the job is done: the
        // job carries `bio`, which holds it open (the contract above).
        unsafe { self.copy_raw(src.bdev(), src_sector, dst, dst_sector, count, bio) };
    }

    /// Starts the copy of [`Kcopyd::copy_then`] from the block device `src`.
    ///
    /// # Safety
    ///
    /// `src` must be an open block device that stays open until the job is done.
    unsafe fn copy_raw<P: JobDone>(
        &self,
        src: *mut bindings::block_device,
        src_sector: u64,
        dst: &BlockDevice,
        dst_sector: u64,
        count: u64,
        bio: OwnedBio<P>,
    ) {
        let mut from = Self::region(src, src_sector, count);
        let mut to = Self::region(dst.bdev(), dst_sector, count);
        let ctx = bio.into_raw().cast::<c_void>();
        // SAFETY: `kc` is live (type invariant), and outlives the job: dropping the client
        // waits for its jobs. The regions name open devices (`src` by the safety
        // requirements, `dst` as in `copy_then`) and are copied by kcopyd before it returns.
        // kcopyd calls `notify_bio` exactly once, with the bio given up above.
        unsafe {
            bindings::dm_kcopyd_copy(
                self.kc.as_ptr(),
                &mut from,
                1,
                &mut to,
                0,
                Some(notify_bio::<P>),
                ctx,
            )
        }
    }

    /// Starts writing zeroes to `count` sectors of `dst` from `sector`, carrying `bio`, as
    /// [`Kcopyd::copy_then`].
    pub fn zero_then<P: JobDone>(
        &self,
        dst: &BlockDevice,
        sector: u64,
        count: u64,
        bio: OwnedBio<P>,
    ) {
        let mut to = Self::region(dst.bdev(), sector, count);
        let ctx = bio.into_raw().cast::<c_void>();
        // SAFETY: as in `copy_then`.
        unsafe {
            bindings::dm_kcopyd_zero(self.kc.as_ptr(), 1, &mut to, 0, Some(notify_bio::<P>), ctx)
        }
    }
}

impl Drop for Kcopyd {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed only here (type invariant).
        unsafe { bindings::dm_kcopyd_client_destroy(self.kc.as_ptr()) };
    }
}
