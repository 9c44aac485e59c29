// SPDX-License-Identifier: GPL-2.0

//! Bios as device-mapper targets see them in `map` and `end_io`.
//!
//! C header: [`include/linux/blk_types.h`](srctree/include/linux/blk_types.h)

use super::{bindings, device::DmDev};
use core::{marker::PhantomData, ptr::NonNull};

/// The operation of a bio (`bio_op()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `REQ_OP_READ`.
    Read,
    /// `REQ_OP_WRITE`; an empty write with [`Bio::is_preflush`] is a flush.
    Write,
    /// `REQ_OP_FLUSH`.
    Flush,
    /// `REQ_OP_DISCARD`.
    Discard,
    /// `REQ_OP_SECURE_ERASE`.
    SecureErase,
    /// `REQ_OP_WRITE_ZEROES`.
    WriteZeroes,
    /// Any other operation, with its raw value.
    Other(u32),
}

/// A block status (`blk_status_t`) with which a bio completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkStatus(u8);

impl BlkStatus {
    /// Success.
    pub const OK: Self = Self(bindings::RTHIN_BLK_STS_OK);
    /// An IO error.
    pub const IOERR: Self = Self(bindings::RTHIN_BLK_STS_IOERR);
    /// Out of space.
    pub const NOSPC: Self = Self(bindings::RTHIN_BLK_STS_NOSPC);
    /// Operation not supported.
    pub const NOTSUPP: Self = Self(bindings::RTHIN_BLK_STS_NOTSUPP);
    /// Try again (`REQ_NOWAIT` could not be honoured).
    pub const AGAIN: Self = Self(bindings::RTHIN_BLK_STS_AGAIN);
    /// Ask dm to requeue the original bio.
    pub const DM_REQUEUE: Self = Self(bindings::RTHIN_BLK_STS_DM_REQUEUE);

    /// Whether this is success.
    pub fn is_ok(self) -> bool {
        self == Self::OK
    }

    pub(crate) fn from_raw(raw: bindings::blk_status_t) -> Self {
        Self(raw)
    }

    pub(crate) fn to_raw(self) -> bindings::blk_status_t {
        self.0
    }
}

/// A bio that device-mapper lends to a target for the duration of one callback.
///
/// # Invariants
///
/// `ptr` points to a valid `struct bio` that no one else modifies for `'a`.
pub struct Bio<'a> {
    ptr: NonNull<bindings::bio>,
    _p: PhantomData<&'a mut bindings::bio>,
}

impl<'a> Bio<'a> {
    /// Wraps a bio lent by device-mapper.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid bio that the caller may modify, and that nothing else
    /// accesses, for `'a`.
    pub(crate) unsafe fn from_raw(ptr: *mut bindings::bio) -> Self {
        // INVARIANT: by the safety requirements.
        Self {
            // SAFETY: the caller passes a valid, hence non-null, bio.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            _p: PhantomData,
        }
    }

    fn opf(&self) -> bindings::blk_opf_t {
        // SAFETY: by the type invariant the bio is valid for reads.
        unsafe { (*self.ptr.as_ptr()).bi_opf }
    }

    /// The bio's operation.
    pub fn op(&self) -> Op {
        let op = self.opf() & bindings::RTHIN_REQ_OP_MASK;
        match op {
            bindings::req_op_REQ_OP_READ => Op::Read,
            bindings::req_op_REQ_OP_WRITE => Op::Write,
            bindings::req_op_REQ_OP_FLUSH => Op::Flush,
            bindings::req_op_REQ_OP_DISCARD => Op::Discard,
            bindings::req_op_REQ_OP_SECURE_ERASE => Op::SecureErase,
            bindings::req_op_REQ_OP_WRITE_ZEROES => Op::WriteZeroes,
            other => Op::Other(other),
        }
    }

    /// Whether the bio asks for a cache flush before it (`REQ_PREFLUSH`).
    pub fn is_preflush(&self) -> bool {
        self.opf() & bindings::RTHIN_REQ_PREFLUSH != 0
    }

    /// Whether the bio's data must be on stable storage when it completes (`REQ_FUA`).
    pub fn is_fua(&self) -> bool {
        self.opf() & bindings::RTHIN_REQ_FUA != 0
    }

    /// First sector of the bio.
    pub fn sector(&self) -> u64 {
        // SAFETY: by the type invariant the bio is valid for reads.
        unsafe { (*self.ptr.as_ptr()).bi_iter.bi_sector }
    }

    /// Moves the bio to start at `sector`.
    pub fn set_sector(&mut self, sector: u64) {
        // SAFETY: by the type invariant the bio is valid, and ours to modify.
        unsafe { (*self.ptr.as_ptr()).bi_iter.bi_sector = sector };
    }

    /// Size of the bio's data in bytes.
    pub fn size(&self) -> u32 {
        // SAFETY: by the type invariant the bio is valid for reads.
        unsafe { (*self.ptr.as_ptr()).bi_iter.bi_size }
    }

    /// Size of the bio's data in 512-byte sectors.
    pub fn sectors(&self) -> u32 {
        self.size() >> 9
    }

    /// Fills the bio's data with zeroes (a read of space that holds nothing).
    pub fn zero_fill(&mut self) {
        // SAFETY: the bio is valid and ours (type invariant); its current iterator describes
        // the data pages it carries.
        unsafe { bindings::zero_fill_bio_iter(self.ptr.as_ptr(), (*self.ptr.as_ptr()).bi_iter) };
    }

    /// Sets the status the bio completes with.
    pub(crate) fn set_status(&mut self, status: BlkStatus) {
        // SAFETY: the bio is valid and ours (type invariant).
        unsafe { (*self.ptr.as_ptr()).bi_status = status.to_raw() };
    }

    /// Points the bio at `dev`'s block device.
    pub fn set_dev(&mut self, dev: &DmDev) {
        // SAFETY: the bio is valid and ours to modify (type invariant); `dev` holds a reference
        // to its block device for as long as it exists.
        unsafe { bindings::rthin_bio_set_dev(self.ptr.as_ptr(), dev.bdev()) };
    }
}
