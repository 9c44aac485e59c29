// SPDX-License-Identifier: GPL-2.0

//! Devices that a target opens from its table line (`dm_get_device`/`dm_put_device`).

use super::bindings;
use core::ptr::NonNull;
use kernel::str::CStr;

/// A device opened by a target's constructor. Dropping it releases it (`dm_put_device`).
///
/// # Invariants
///
/// `dev` was returned by a successful `dm_get_device(ti, ...)` and is released once, in `drop`.
/// `ti` stays valid until the `DmDev` is dropped: a `DmDev` is created only by
/// [`super::Ctr::get_device`] and stored in the target's private data, which the
/// abstraction drops in the target's destructor, before dm frees `ti`.
pub struct DmDev {
    ti: NonNull<bindings::dm_target>,
    dev: NonNull<bindings::dm_dev>,
}

// SAFETY: a `dm_dev` may be used and released from any thread; dm serialises table changes.
unsafe impl Send for DmDev {}
// SAFETY: the shared accessors only read fields that do not change while the device is held.
unsafe impl Sync for DmDev {}

impl DmDev {
    /// Takes over a device returned by `dm_get_device`.
    ///
    /// # Safety
    ///
    /// `dev` must come from a successful `dm_get_device(ti, ...)`, not yet put, and `ti` must
    /// outlive the returned value (see the type invariants).
    pub(crate) unsafe fn from_raw(
        ti: NonNull<bindings::dm_target>,
        dev: NonNull<bindings::dm_dev>,
    ) -> Self {
        // INVARIANT: by the safety requirements.
        Self { ti, dev }
    }

    pub(crate) fn as_ptr(&self) -> *mut bindings::dm_dev {
        self.dev.as_ptr()
    }

    pub(crate) fn bdev(&self) -> *mut bindings::block_device {
        // SAFETY: `dev` is a live `dm_dev` (type invariant).
        unsafe { (*self.dev.as_ptr()).bdev }
    }

    /// The device's name as dm prints it in tables: `major:minor`.
    pub fn name(&self) -> &CStr {
        // SAFETY: `dev` is a live `dm_dev`; dm fills `name` with a NUL-terminated
        // `major:minor` string when it opens the device, and never changes it.
        unsafe { CStr::from_char_ptr((*self.dev.as_ptr()).name.as_ptr()) }
    }

    /// The device number.
    pub fn devt(&self) -> u32 {
        // SAFETY: the block device is held open through `dev`.
        unsafe { (*self.bdev()).bd_dev }
    }

    /// Whether the device is a device-mapper device.
    pub fn is_mapped_device(&self) -> bool {
        // SAFETY: `dm_get_md` takes a reference on the mapped device it finds, dropped at once.
        unsafe {
            let md = bindings::dm_get_md(self.devt());
            if md.is_null() {
                return false;
            }
            bindings::dm_put(md);
        }
        true
    }

    /// Size of the device in 512-byte sectors.
    pub fn nr_sectors(&self) -> u64 {
        // SAFETY: the block device is held open through `dev`.
        unsafe { bindings::rthin_bdev_nr_sectors(self.bdev()) }
    }
}

impl Drop for DmDev {
    fn drop(&mut self) {
        // SAFETY: by the type invariants `ti` is valid and `dev` was got from it and not yet put.
        unsafe { bindings::dm_put_device(self.ti.as_ptr(), self.dev.as_ptr()) };
    }
}
