// SPDX-License-Identifier: GPL-2.0

//! Devices that a target opens from its table line (`dm_get_device`/`dm_put_device`).

use super::{bindings, lifetime::Ref};
use core::ptr::NonNull;
use kernel::str::CStr;

/// What ties a target's devices to it: every [`DmDev`] holds a reference, and the target's
/// destructor waits (through the [`super::lifetime::Owner`] the abstraction keeps beside the
/// target's state) until every one is dropped, so dm cannot free the target while a device
/// still refers to it.
pub struct TargetAnchor;

/// A device opened by a target's constructor. Dropping it releases it (`dm_put_device`), in
/// process context.
///
/// A `DmDev` may be kept anywhere, even past its target's state (moved into an object that
/// outlives it): the target's destructor then waits for it. So it can never release its
/// device on a freed target; kept forever, it keeps the destructor waiting, which
/// `might_sleep` and the hung-task detector make visible.
///
/// # Invariants
///
/// `dev` was returned by a successful `dm_get_device(ti, ...)` and is released once, in `drop`.
/// `ti` stays valid until the `DmDev` is dropped: `_anchor` is a reference to the target's
/// anchor, whose owner the abstraction drops in the target's destructor (after the state),
/// waiting until every reference is gone, before dm frees `ti`.
pub struct DmDev {
    ti: NonNull<bindings::dm_target>,
    dev: NonNull<bindings::dm_dev>,
    _anchor: Ref<TargetAnchor>,
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
    /// `dev` must come from a successful `dm_get_device(ti, ...)`, not yet put, and `anchor`
    /// must be a reference to `ti`'s anchor (see the type invariants).
    pub(crate) unsafe fn from_raw(
        ti: NonNull<bindings::dm_target>,
        dev: NonNull<bindings::dm_dev>,
        anchor: Ref<TargetAnchor>,
    ) -> Self {
        // INVARIANT: by the safety requirements.
        Self {
            ti,
            dev,
            _anchor: anchor,
        }
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

    /// The largest discard the device takes, in sectors (`bdev_max_discard_sectors`); 0 if it
    /// cannot discard.
    pub fn max_discard_sectors(&self) -> u32 {
        // SAFETY: the block device is held open through `dev`; its queue lives as long.
        unsafe { bindings::rthin_bdev_max_discard_sectors(self.bdev()) }
    }
}

impl Drop for DmDev {
    fn drop(&mut self) {
        // `dm_put_device` takes the mapped device's table-devices mutex.
        // SAFETY: `might_sleep` has no preconditions.
        unsafe { bindings::rthin_might_sleep() };
        // SAFETY: by the type invariants `ti` is valid and `dev` was got from it and not yet
        // put; the anchor reference, which keeps `ti` valid, is dropped only after this.
        unsafe { bindings::dm_put_device(self.ti.as_ptr(), self.dev.as_ptr()) };
    }
}
