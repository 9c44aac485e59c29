// SPDX-License-Identifier: GPL-2.0

//! Bios as device-mapper targets see them: lent in `map` and `end_io` ([`Bio`]), or taken over
//! by the target to be finished later ([`OwnedBio`], kept in a [`BioList`]).
//!
//! C header: [`include/linux/blk_types.h`](srctree/include/linux/blk_types.h)

use super::{bindings, device::DmDev};
use core::{
    marker::PhantomData,
    mem,
    ops::{Deref, DerefMut},
    ptr::{self, NonNull},
};
use kernel::types::Opaque;

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

/// The fields of a bio a target may read and change. [`Bio`] and [`OwnedBio`] dereference
/// to it.
///
/// # Invariants
///
/// Only reached through a `Bio` or an `OwnedBio`, whose invariants make the bio valid and
/// exclusively the holder's.
#[repr(transparent)]
pub struct BioView(Opaque<bindings::bio>);

impl BioView {
    fn raw(&self) -> *mut bindings::bio {
        self.0.get()
    }

    fn opf(&self) -> bindings::blk_opf_t {
        // SAFETY: the bio is valid (type invariant).
        unsafe { (*self.raw()).bi_opf }
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
        // SAFETY: the bio is valid (type invariant).
        unsafe { (*self.raw()).bi_iter.bi_sector }
    }

    /// Moves the bio to start at `sector`.
    pub fn set_sector(&mut self, sector: u64) {
        // SAFETY: the bio is valid and ours to modify (type invariant).
        unsafe { (*self.raw()).bi_iter.bi_sector = sector };
    }

    /// Size of the bio's data in bytes.
    pub fn size(&self) -> u32 {
        // SAFETY: the bio is valid (type invariant).
        unsafe { (*self.raw()).bi_iter.bi_size }
    }

    /// Size of the bio's data in 512-byte sectors.
    pub fn sectors(&self) -> u32 {
        self.size() >> 9
    }

    /// The status the bio has (set by the device that completed it, or by the target).
    pub fn status(&self) -> BlkStatus {
        // SAFETY: the bio is valid (type invariant).
        BlkStatus::from_raw(unsafe { (*self.raw()).bi_status })
    }

    /// Fills the bio's data with zeroes (a read of space that holds nothing).
    pub fn zero_fill(&mut self) {
        // SAFETY: the bio is valid and ours (type invariant); its current iterator describes
        // the data pages it carries.
        unsafe { bindings::zero_fill_bio_iter(self.raw(), (*self.raw()).bi_iter) };
    }

    /// Shortens the bio to its first `bytes` bytes (no more than it has): what comes after is
    /// left as it is in its pages (zero-filled first, for a read that the device serves only
    /// in part, as dm-thin's read past the end of an external origin).
    pub fn truncate(&mut self, bytes: u32) {
        if bytes < self.size() {
            // SAFETY: the bio is valid and ours to modify (type invariant); a smaller size
            // describes a prefix of the same pages.
            unsafe { (*self.raw()).bi_iter.bi_size = bytes };
        }
    }

    /// Sets the status the bio completes with.
    pub fn set_status(&mut self, status: BlkStatus) {
        // SAFETY: the bio is valid and ours (type invariant).
        unsafe { (*self.raw()).bi_status = status.to_raw() };
    }

    /// Points the bio at `dev`'s block device.
    pub fn set_dev(&mut self, dev: &DmDev) {
        // SAFETY: the bio is valid and ours to modify (type invariant); `dev` holds a reference
        // to its block device for as long as it exists.
        unsafe { bindings::rthin_bio_set_dev(self.raw(), dev.bdev()) };
    }
}

/// A bio that device-mapper lends to a target for the duration of one callback. `P` is the
/// target's per-bio data type. The target either hands it back (inside the callback's
/// result) or takes it over with [`Bio::take`].
///
/// # Invariants
///
/// `ptr` points to a valid `struct bio` that no one else modifies for `'a`, with room for a
/// `P` in dm's per-bio area (`per_bio_ptr::<P>`).
pub struct Bio<'a, P> {
    ptr: NonNull<bindings::bio>,
    _p: PhantomData<(&'a mut bindings::bio, P)>,
}

impl<'a, P> Bio<'a, P> {
    /// Wraps a bio lent by device-mapper.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid bio that the caller may modify, and that nothing else
    /// accesses, for `'a`, and dm's per-bio area in front of it must have room for a `P`.
    pub(crate) unsafe fn from_raw(ptr: *mut bindings::bio) -> Self {
        // INVARIANT: by the safety requirements.
        Self {
            // SAFETY: the caller passes a valid, hence non-null, bio.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            _p: PhantomData,
        }
    }

    pub(crate) fn as_ptr(&self) -> *mut bindings::bio {
        self.ptr.as_ptr()
    }

    /// Takes the bio over from dm, with its per-bio data `per_bio`. The returned [`Taken`]
    /// is what the callback returns to say so; the [`OwnedBio`] must later be submitted or
    /// ended.
    pub fn take(self, per_bio: P) -> (OwnedBio<P>, Taken<'a, P>) {
        // SAFETY: the per-bio area has room for a `P` (type invariant) and holds no live
        // value: dm's callbacks read it out before lending the bio.
        unsafe { ptr::write(per_bio_ptr::<P>(self.ptr.as_ptr()), per_bio) };
        // INVARIANT: the bio was lent to us exclusively and dm now leaves it to the target
        // (the callback returns `Taken`); its per-bio area holds `per_bio`.
        (
            OwnedBio {
                ptr: self.ptr,
                _p: PhantomData,
            },
            Taken(PhantomData),
        )
    }
}

impl<P> Deref for Bio<'_, P> {
    type Target = BioView;

    fn deref(&self) -> &BioView {
        // SAFETY: `BioView` is a transparent wrapper of the bio, valid and ours for the borrow
        // (type invariant).
        unsafe { &*self.ptr.as_ptr().cast::<BioView>() }
    }
}

impl<P> DerefMut for Bio<'_, P> {
    fn deref_mut(&mut self) -> &mut BioView {
        // SAFETY: as above, and exclusively ours.
        unsafe { &mut *self.ptr.as_ptr().cast::<BioView>() }
    }
}

/// Proof that a target took over the bio of a callback ([`Bio::take`]).
///
/// It is branded with the lifetime `'a` of the bio it was made from, and invariant in it: a
/// callback is generic over its bio's lifetime, so it can only return a `Taken` made from
/// the bio it was lent, never one kept from an earlier call (which would leave its own bio
/// neither completed nor handed back). It is neither `Clone` nor constructible elsewhere.
pub struct Taken<'a, P>(PhantomData<(Invariant<'a>, P)>);

/// A marker invariant in `'a` (neither longer nor shorter lifetimes convert to it).
type Invariant<'a> = fn(&'a ()) -> &'a ();

/// Room to reserve for a `P` in dm's per-bio area: its size rounded up so that the data dm
/// places in front of its own 8-byte aligned per-bio structure stays aligned.
pub(crate) const fn per_bio_size<P>() -> usize {
    (mem::size_of::<P>() + 7) & !7
}

/// Where a `P` lives in the per-bio area of `bio`.
pub(crate) fn per_bio_ptr<P>(bio: *mut bindings::bio) -> *mut P {
    // SAFETY: a pointer computation only; the callers guarantee that dm reserved
    // `per_bio_size::<P>()` bytes in front of the bio.
    unsafe { bindings::dm_per_bio_data(bio, per_bio_size::<P>()) }.cast()
}

/// A bio the target has taken over from dm: it must be submitted ([`OwnedBio::submit`]) or
/// ended ([`OwnedBio::end`]). Dropping it ends it with an IO error, so a bio is never lost.
/// Its per-bio data stays in dm's per-bio area, where `end_io` finds it.
///
/// # Invariants
///
/// `ptr` is a valid bio that only this value may touch, until it is submitted or ended; its
/// per-bio area holds a live `P`. It is a clone dm made for a target (taken over in `map` or
/// `end_io` by [`Bio::take`], the only way to make one).
pub struct OwnedBio<P> {
    ptr: NonNull<bindings::bio>,
    _p: PhantomData<P>,
}

// SAFETY: the bio may be finished from any thread; the per-bio data moves with it.
unsafe impl<P: Send> Send for OwnedBio<P> {}

impl<P> OwnedBio<P> {
    /// The per-bio data.
    pub fn per_bio(&self) -> &P {
        // SAFETY: the per-bio area holds a live `P` (type invariant).
        unsafe { &*per_bio_ptr::<P>(self.ptr.as_ptr()) }
    }

    /// The per-bio data, to change.
    pub fn per_bio_mut(&mut self) -> &mut P {
        // SAFETY: as above, and the bio is exclusively ours.
        unsafe { &mut *per_bio_ptr::<P>(self.ptr.as_ptr()) }
    }

    /// Gives up the bio as a raw pointer, still owned: [`OwnedBio::from_raw`] takes it back.
    pub(super) fn into_raw(self) -> *mut bindings::bio {
        let p = self.ptr.as_ptr();
        mem::forget(self);
        p
    }

    /// Takes back a bio given up by [`OwnedBio::into_raw`].
    ///
    /// # Safety
    ///
    /// `ptr` must come from `OwnedBio::<P>::into_raw` (same `P`), and be taken back once.
    pub(super) unsafe fn from_raw(ptr: *mut bindings::bio) -> Self {
        // INVARIANT: by the safety requirements, the bio is owned as it was by the `OwnedBio`
        // that gave it up.
        Self {
            // SAFETY: `into_raw` gave a non-null pointer.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            _p: PhantomData,
        }
    }

    /// Submits the (remapped) bio to its device. It comes back to the target's `end_io`.
    ///
    /// It goes through `dm_submit_bio_remap`, as dm's own submission of a remapped bio, so
    /// that the IO accounting of a target with `accounts_remapped_io` starts here.
    pub fn submit(self) {
        let p = self.into_raw();
        // SAFETY: the bio is valid and ours, and a clone dm made for the target (type
        // invariant), which is what `dm_submit_bio_remap` takes;
        // a null second argument submits the clone itself, handing it to the block layer.
        unsafe { bindings::dm_submit_bio_remap(p, ptr::null_mut()) };
    }

    /// Ends the bio with `status` (any context). It goes through the target's `end_io`.
    pub fn end(mut self, status: BlkStatus) {
        self.set_status(status);
        let p = self.into_raw();
        // SAFETY: the bio is valid and ours; ending it hands it back to dm.
        unsafe { bindings::bio_endio(p) };
    }
}

impl<P> Deref for OwnedBio<P> {
    type Target = BioView;

    fn deref(&self) -> &BioView {
        // SAFETY: `BioView` is a transparent wrapper of the bio, valid and ours (type
        // invariant).
        unsafe { &*self.ptr.as_ptr().cast::<BioView>() }
    }
}

impl<P> DerefMut for OwnedBio<P> {
    fn deref_mut(&mut self) -> &mut BioView {
        // SAFETY: as above, and exclusively ours.
        unsafe { &mut *self.ptr.as_ptr().cast::<BioView>() }
    }
}

impl<P> Drop for OwnedBio<P> {
    fn drop(&mut self) {
        let p = self.ptr.as_ptr();
        // SAFETY: the bio is valid and ours (type invariant); this is its end.
        unsafe {
            (*p).bi_status = BlkStatus::IOERR.to_raw();
            bindings::bio_endio(p);
        }
    }
}

/// A first-in first-out list of owned bios, linked through the bios themselves (`bi_next`),
/// so adding to it never allocates: it may be used under a spinlock and in any context.
///
/// # Invariants
///
/// `head`..`tail` is a `bi_next` chain of bios each owned as by an [`OwnedBio<P>`]; `tail` is
/// the last (its `bi_next` null), and both are null when the list is empty.
pub struct BioList<P> {
    head: *mut bindings::bio,
    tail: *mut bindings::bio,
    _p: PhantomData<P>,
}

// SAFETY: the list owns its bios, which may be finished from any thread.
unsafe impl<P: Send> Send for BioList<P> {}
// SAFETY: a shared reference only reads whether the list is empty (`is_empty`); every method
// that touches the bios takes `&mut self`.
unsafe impl<P: Send> Sync for BioList<P> {}

impl<P> Default for BioList<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P> BioList<P> {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            _p: PhantomData,
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Adds `bio` at the end.
    pub fn push(&mut self, bio: OwnedBio<P>) {
        let b = bio.into_raw();
        // SAFETY: `b` is an owned bio, its `bi_next` ours to use; `tail`, if any, is a bio of
        // the list (type invariant).
        unsafe {
            (*b).bi_next = ptr::null_mut();
            if self.tail.is_null() {
                self.head = b;
            } else {
                (*self.tail).bi_next = b;
            }
        }
        self.tail = b;
    }

    /// Moves every bio of `other` to the end of this list.
    pub fn append(&mut self, mut other: Self) {
        if other.head.is_null() {
            return;
        }
        if self.tail.is_null() {
            self.head = other.head;
        } else {
            // SAFETY: `tail` is a bio of this list (type invariant).
            unsafe { (*self.tail).bi_next = other.head };
        }
        self.tail = other.tail;
        other.head = ptr::null_mut();
        other.tail = ptr::null_mut();
    }

    /// Takes the first bio off the list.
    pub fn pop(&mut self) -> Option<OwnedBio<P>> {
        let b = NonNull::new(self.head)?;
        // SAFETY: `b` is the first bio of the list (type invariant).
        unsafe {
            self.head = (*b.as_ptr()).bi_next;
            (*b.as_ptr()).bi_next = ptr::null_mut();
        }
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        // INVARIANT: the bio was owned by the list and now by the returned value.
        Some(OwnedBio {
            ptr: b,
            _p: PhantomData,
        })
    }

    /// Takes every bio, leaving the list empty.
    pub fn take_all(&mut self) -> Self {
        mem::take(self)
    }
}

impl<P> Iterator for BioList<P> {
    type Item = OwnedBio<P>;

    fn next(&mut self) -> Option<OwnedBio<P>> {
        self.pop()
    }
}

impl<P> Drop for BioList<P> {
    fn drop(&mut self) {
        // Each bio left ends with an IO error as its `OwnedBio` drops.
        while self.pop().is_some() {}
    }
}
