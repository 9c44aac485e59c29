// SPDX-License-Identifier: GPL-2.0

//! dm-kcopyd: copying and zeroing ranges of sectors with the kernel's copy daemon.
//!
//! The calls here wait for the copy to finish. The caller must hold no lock while it waits
//! (see [`crate::locking`]): kcopyd's completion path takes none of rthin's locks, and a
//! waiter that held one would block every thread that needs it for as long as the IO takes.
//!
//! C header: [`include/linux/dm-kcopyd.h`](srctree/include/linux/dm-kcopyd.h)

use super::{bdev::BlockDevice, bindings};
use core::ptr::NonNull;
use kernel::ffi::{c_int, c_ulong, c_void};
use kernel::{error::from_err_ptr, prelude::*, types::Opaque};

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

/// The result a kcopyd job reports, and the completion its waiter sleeps on.
struct Wait {
    done: Opaque<bindings::completion>,
    read_err: c_int,
    write_err: c_ulong,
}

/// kcopyd's notify function for a [`Wait`].
///
/// # Safety
///
/// `context` must point to a live `Wait` whose completion is initialised.
unsafe extern "C" fn notify(read_err: c_int, write_err: c_ulong, context: *mut c_void) {
    let w = context.cast::<Wait>();
    // SAFETY: by the safety requirements; the waiter does not look at the fields until the
    // completion below fires, and then owns them again.
    unsafe {
        (*w).read_err = read_err;
        (*w).write_err = write_err;
        bindings::complete((*w).done.get());
    }
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

    fn region(dev: &BlockDevice, sector: u64, count: u64) -> bindings::dm_io_region {
        bindings::dm_io_region {
            bdev: dev.bdev(),
            sector,
            count,
        }
    }

    /// Runs one job through `start` and sleeps until it is done.
    fn run(&self, start: impl FnOnce(*mut bindings::dm_kcopyd_client, *mut c_void)) -> Result {
        let mut w = Wait {
            done: Opaque::uninit(),
            read_err: 0,
            write_err: 0,
        };
        // SAFETY: `w` lives on this stack frame until after the wait below.
        unsafe { bindings::rthin_init_completion(w.done.get()) };
        let ctx = core::ptr::addr_of_mut!(w).cast::<c_void>();
        start(self.kc.as_ptr(), ctx);
        // SAFETY: the completion is initialised and `notify` fires it exactly once.
        unsafe { bindings::wait_for_completion_io(w.done.get()) };
        if w.read_err != 0 || w.write_err != 0 {
            return Err(EIO);
        }
        Ok(())
    }

    /// Copies `count` sectors from `src` at `src_sector` to `dst` at `dst_sector`, and waits.
    pub fn copy(
        &self,
        src: &BlockDevice,
        src_sector: u64,
        dst: &BlockDevice,
        dst_sector: u64,
        count: u64,
    ) -> Result {
        let mut from = Self::region(src, src_sector, count);
        let mut to = Self::region(dst, dst_sector, count);
        self.run(|kc, ctx| {
            // SAFETY: `kc` is live; the regions name open devices and are copied by kcopyd
            // before it returns; `notify` gets the live `Wait` behind `ctx`.
            unsafe { bindings::dm_kcopyd_copy(kc, &mut from, 1, &mut to, 0, Some(notify), ctx) }
        })
    }

    /// Writes zeroes to `count` sectors of `dst` from `sector`, and waits.
    pub fn zero(&self, dst: &BlockDevice, sector: u64, count: u64) -> Result {
        let mut to = Self::region(dst, sector, count);
        self.run(|kc, ctx| {
            // SAFETY: as in `copy`.
            unsafe { bindings::dm_kcopyd_zero(kc, 1, &mut to, 0, Some(notify), ctx) }
        })
    }
}

impl Drop for Kcopyd {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed only here (type invariant).
        unsafe { bindings::dm_kcopyd_client_destroy(self.kc.as_ptr()) };
    }
}
