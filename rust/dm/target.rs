// SPDX-License-Identifier: GPL-2.0

//! Device-mapper targets: a Rust type implementing [`Target`] becomes a `struct target_type`
//! registered with dm for as long as its [`Registration`] lives.
//!
//! The target's state is created by [`Target::ctr`] and owned by dm through `ti->private`
//! until the destructor drops it. Every other callback gets shared access to it
//! (`Pin<&Self>`), since dm calls `map` and `end_io` on many CPUs at once.

use super::{
    bindings,
    bio::{per_bio_ptr, per_bio_size, Bio, BlkStatus, Taken},
    device::{DmDev, TargetAnchor},
    lifetime::{Owner, Ref},
    status::StatusWriter,
};
use core::{
    marker::PhantomData,
    mem,
    pin::Pin,
    ptr::{self, NonNull},
};
use kernel::ffi::{c_char, c_int, c_uint, c_void};
use kernel::{
    alloc::flags::GFP_KERNEL,
    build_error, c_str,
    error::{Error, Result},
    prelude::*,
    str::CStr,
    types::{ForeignOwnable, Opaque},
    ThisModule,
};

/// Why a constructor refused its table line: an errno for the ioctl, and the message dm
/// prints for it (`ti->error`).
#[derive(Clone, Copy, Debug)]
pub struct CtrError {
    err: Error,
    msg: &'static CStr,
}

impl CtrError {
    /// A constructor error with errno `err` and message `msg`.
    pub const fn new(err: Error, msg: &'static CStr) -> Self {
        Self { err, msg }
    }

    /// The errno.
    pub fn error(&self) -> Error {
        self.err
    }

    /// The message.
    pub fn message(&self) -> &'static CStr {
        self.msg
    }
}

/// What [`Target::map`] decided for a bio. Every variant but `Submitted` hands the bio back
/// to dm.
pub enum MapResult<'a, P> {
    /// The bio was remapped (device and sector changed): dm submits it. `P` is the bio's
    /// per-bio data, handed back to [`Target::end_io`] when the bio completes.
    Remapped(Bio<'a, P>, P),
    /// The target has dealt with the bio itself (for example zero-filled a read): dm
    /// completes it now with this status. `P` goes to [`Target::end_io`] as for a remap.
    Complete(Bio<'a, P>, BlkStatus, P),
    /// The target took the bio over ([`Bio::take`]) and will submit or end it later.
    Submitted(Taken<'a, P>),
    /// Fail the bio with an IO error.
    Kill(Bio<'a, P>),
    /// Have dm requeue the bio (it is mapped again later).
    Requeue(Bio<'a, P>),
    // No `DelayRequeue`: `DM_MAPIO_DELAY_REQUEUE` is for request-based targets only. Bio-based
    // dm (`__map_bio` in 6.12's dm.c) has no case for it and reaches `BUG()`, so safe code
    // must not be able to return it (issue 8, item 12).
}

/// What [`Target::end_io`] decided for a completed bio.
pub enum EndIo<'a, P> {
    /// The bio is done, with the status [`Target::end_io`] left in place.
    Done(Bio<'a, P>),
    /// Have dm requeue the original bio.
    Requeue(Bio<'a, P>),
    /// The target took the bio over again ([`Bio::take`]); it ends it later, and `end_io`
    /// then sees it once more.
    Incomplete(Taken<'a, P>),
}

/// Which status dm asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusType {
    /// `dmsetup status`.
    Info,
    /// `dmsetup table`: the table line as it would be given to the constructor.
    Table,
    /// The IMA measurement record.
    Ima,
}

/// A target's view of its `struct dm_target`.
///
/// # Invariants
///
/// The wrapped `dm_target` is valid for the lifetime of any reference to this type.
#[repr(transparent)]
pub struct TargetInfo(Opaque<bindings::dm_target>);

impl TargetInfo {
    /// # Safety
    ///
    /// `ptr` must point to a `dm_target` that stays valid for `'a`.
    unsafe fn from_raw<'a>(ptr: *mut bindings::dm_target) -> &'a Self {
        // SAFETY: `TargetInfo` is a transparent wrapper of `dm_target`, valid for `'a` by the
        // safety requirements.
        unsafe { &*ptr.cast::<Self>() }
    }

    fn raw(&self) -> *mut bindings::dm_target {
        self.0.get()
    }

    /// First sector of the target in the mapped device.
    pub fn begin(&self) -> u64 {
        // SAFETY: the target is valid (type invariant); `begin` does not change after creation.
        unsafe { (*self.raw()).begin }
    }

    /// Length of the target in sectors.
    pub fn len(&self) -> u64 {
        // SAFETY: the target is valid (type invariant); `len` does not change after creation.
        unsafe { (*self.raw()).len }
    }

    /// Whether the target has length zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name dm gives the mapped device in its log lines (`major:minor`).
    pub fn device_name(&self) -> &CStr {
        // SAFETY: the target is valid, so is its table and the table's mapped device, whose
        // name is a NUL-terminated string that lives as long as the device.
        unsafe {
            CStr::from_char_ptr(bindings::dm_device_name(bindings::dm_table_get_md(
                (*self.raw()).table,
            )))
        }
    }

    /// The device number of the mapped device the target belongs to.
    pub fn md_devt(&self) -> u32 {
        // SAFETY: the target is valid, so is its table's mapped device.
        unsafe { bindings::rthin_target_md_devt(self.raw()) }
    }

    /// Offset of `sector` of the mapped device from the target's first sector
    /// (`dm_target_offset`).
    pub fn offset(&self, sector: u64) -> u64 {
        sector.wrapping_sub(self.begin())
    }

    /// Whether the target's mapped device is suspended (`dm_suspended`).
    pub fn is_suspended(&self) -> bool {
        // SAFETY: the target is valid (type invariant), and so its table's mapped device.
        unsafe { bindings::dm_suspended(self.raw()) != 0 }
    }

    /// Whether the target's mapped device is being suspended without flushing
    /// (`dm_noflush_suspending`): during such a suspend, a bio ended with
    /// [`crate::dm::BlkStatus::DM_REQUEUE`] (or mapped with [`MapResult::Requeue`]) is kept
    /// by dm and mapped again after resume, instead of failing.
    pub fn noflush_suspending(&self) -> bool {
        // SAFETY: `ti` is a live target (type invariant); dm only reads its mapped device's
        // flags.
        unsafe { bindings::dm_noflush_suspending(self.raw()) != 0 }
    }
}

/// The `flags` of [`Target::status`]: the caller asked not to flush anything for the status
/// (`dmsetup status --noflush`). dm's `DM_STATUS_NOFLUSH_FLAG`, defined in `drivers/md/dm.h`,
/// which is private to dm, so not in the bindings.
pub const STATUS_NOFLUSH: u32 = 1 << 0;

/// The arguments of a table line or a message, as C strings.
///
/// # Invariants
///
/// Every pointer in `argv` is a valid NUL-terminated string for `'a`.
pub struct Args<'a> {
    argv: &'a [*mut c_char],
}

impl<'a> Args<'a> {
    /// # Safety
    ///
    /// `argv` must point to `argc` valid NUL-terminated strings that live for `'a`.
    unsafe fn from_raw(argc: c_uint, argv: *mut *mut c_char) -> Self {
        let argv = if argc == 0 || argv.is_null() {
            &[][..]
        } else {
            // SAFETY: by the safety requirements, `argv` has `argc` entries valid for `'a`.
            unsafe { core::slice::from_raw_parts(argv, argc as usize) }
        };
        // INVARIANT: by the safety requirements.
        Self { argv }
    }

    /// Number of arguments left.
    pub fn len(&self) -> usize {
        self.argv.len()
    }

    /// Whether no argument is left.
    pub fn is_empty(&self) -> bool {
        self.argv.is_empty()
    }

    /// The `i`-th argument left, without consuming anything.
    pub fn get(&self, i: usize) -> Option<&'a CStr> {
        let p = *self.argv.get(i)?;
        // SAFETY: by the type invariant each entry is a valid string for `'a`.
        Some(unsafe { CStr::from_char_ptr(p) })
    }
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a CStr;

    fn next(&mut self) -> Option<&'a CStr> {
        let first = self.get(0)?;
        self.argv = &self.argv[1..];
        Some(first)
    }
}

/// Parses a whole argument as an unsigned decimal number: digits only, no sign, no
/// surrounding text, no overflow.
pub fn parse_u64(s: &CStr) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &c| {
        if !c.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })
}

/// What a constructor may do to its target besides building its state.
pub struct Ctr<'a> {
    ti: NonNull<bindings::dm_target>,
    /// The anchor of the target's devices, made with the first one.
    anchor: Option<Owner<TargetAnchor>>,
    _p: PhantomData<&'a mut bindings::dm_target>,
}

impl Ctr<'_> {
    /// The target being constructed.
    pub fn info(&self) -> &TargetInfo {
        // SAFETY: `ti` is valid while the constructor runs.
        unsafe { TargetInfo::from_raw(self.ti.as_ptr()) }
    }

    /// A reference to the target's anchor, made with the first one asked for.
    fn anchor(&mut self) -> Result<Ref<TargetAnchor>> {
        Ok(match &self.anchor {
            Some(a) => a.get(),
            None => {
                let a = Owner::new(TargetAnchor, GFP_KERNEL)?;
                let r = a.get();
                self.anchor = Some(a);
                r
            }
        })
    }

    /// A handle to the target's table, for raising events on it later ([`TableRef`]).
    pub fn table_ref(&mut self) -> Result<TableRef> {
        let anchor = self.anchor()?;
        // SAFETY: `ti` is valid while the constructor runs; its table is set before.
        let table = unsafe { (*self.ti.as_ptr()).table };
        let table = NonNull::new(table).ok_or(EINVAL)?;
        // INVARIANT: `table` is the target's table, which dm frees only after the target's
        // destructor, which waits for `anchor` (see `DmDev`).
        Ok(TableRef {
            table,
            _anchor: anchor,
        })
    }

    /// Opens `path` (a `/dev` path or `major:minor`) with the table's mode.
    pub fn get_device(&mut self, path: &CStr) -> Result<DmDev> {
        // SAFETY: `ti` is a valid target under construction; its table is set before.
        let mode = unsafe { bindings::dm_table_get_mode((*self.ti.as_ptr()).table) };
        self.get_device_mode(path, mode)
    }

    /// Opens `path` (a `/dev` path or `major:minor`) for reading only, whatever the table's
    /// mode (a device the target never writes, such as dm-thin's external origin).
    pub fn get_device_read_only(&mut self, path: &CStr) -> Result<DmDev> {
        self.get_device_mode(path, bindings::RTHIN_BLK_OPEN_READ)
    }

    fn get_device_mode(&mut self, path: &CStr, mode: bindings::blk_mode_t) -> Result<DmDev> {
        let anchor = self.anchor()?;
        let ti = self.ti.as_ptr();
        let mut dev: *mut bindings::dm_dev = ptr::null_mut();
        // SAFETY: `ti` is a valid target under construction, `path` a valid string and `dev`
        // a valid place for the result.
        let ret = unsafe { bindings::dm_get_device(ti, path.as_char_ptr(), mode, &mut dev) };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        let dev = NonNull::new(dev).ok_or(EINVAL)?;
        // SAFETY: `dev` comes from a successful `dm_get_device` on `ti`, and `anchor` refers to
        // `ti`'s anchor: `ctr_callback` keeps its owner with the target's state (or drops it on
        // a constructor error), and `dtr_callback` drops it last, waiting for every `DmDev`.
        Ok(unsafe { DmDev::from_raw(self.ti, dev, anchor) })
    }

    fn with<R>(&mut self, f: impl FnOnce(&mut bindings::dm_target) -> R) -> R {
        // SAFETY: `ti` is valid and exclusively ours while the constructor runs.
        f(unsafe { &mut *self.ti.as_ptr() })
    }

    /// How many flush bios dm sends to the target per flush (`num_flush_bios`).
    pub fn set_num_flush_bios(&mut self, n: u32) {
        self.with(|ti| ti.num_flush_bios = n);
    }

    /// Whether dm sends flushes (`REQ_PREFLUSH`) to the target's `map` (`flush_supported`).
    pub fn set_flush_supported(&mut self, on: bool) {
        self.with(|ti| ti.set_flush_supported(on));
    }

    /// Whether discards are split on `max_io_len` boundaries like other bios
    /// (`max_discard_granularity`).
    pub fn set_max_discard_granularity(&mut self, on: bool) {
        self.with(|ti| ti.set_max_discard_granularity(on));
    }

    /// How many discard bios dm sends per discard (`num_discard_bios`).
    pub fn set_num_discard_bios(&mut self, n: u32) {
        self.with(|ti| ti.num_discard_bios = n);
    }

    /// How many secure-erase bios dm sends per secure erase.
    pub fn set_num_secure_erase_bios(&mut self, n: u32) {
        self.with(|ti| ti.num_secure_erase_bios = n);
    }

    /// How many write-zeroes bios dm sends per write-zeroes.
    pub fn set_num_write_zeroes_bios(&mut self, n: u32) {
        self.with(|ti| ti.num_write_zeroes_bios = n);
    }

    /// Lets dm send empty flushes straight to the target's devices without calling `map`
    /// (for targets whose device list never changes, as dm-linear's).
    pub fn set_flush_bypasses_map(&mut self, on: bool) {
        self.with(|ti| ti.set_flush_bypasses_map(on));
    }

    /// Whether the target handles discards even where its devices do not.
    pub fn set_discards_supported(&mut self, on: bool) {
        self.with(|ti| ti.set_discards_supported(on));
    }

    /// Whether swap bios to the target count against dm's limit of swap bios in flight
    /// (`limit_swap_bios`, the `swap_bios` parameter of dm-mod).
    pub fn set_limit_swap_bios(&mut self, on: bool) {
        self.with(|ti| ti.set_limit_swap_bios(on));
    }

    /// Whether the IO accounting of a bio the target takes over ([`MapResult::Submitted`])
    /// starts when the target submits it remapped ([`super::OwnedBio::submit`]), not when
    /// `map` returns (`accounts_remapped_io`).
    pub fn set_accounts_remapped_io(&mut self, on: bool) {
        self.with(|ti| ti.set_accounts_remapped_io(on));
    }

    /// Splits bios so that none crosses a multiple of `sectors`.
    pub fn set_max_io_len(&mut self, sectors: u64) -> Result {
        // SAFETY: `ti` is valid while the constructor runs.
        let ret = unsafe { bindings::dm_set_target_max_io_len(self.ti.as_ptr(), sectors) };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(())
    }
}

/// A handle to the table a target belongs to, for raising events on it (`dm_table_event`)
/// from outside the target's callbacks (from a worker, or from state that outlives the
/// table). Made by [`Ctr::table_ref`].
///
/// As a [`DmDev`], it holds a reference to the target's anchor: the target's destructor waits
/// until every handle is dropped, so a handle kept anywhere never outlives the table; kept
/// forever, it keeps the destructor waiting, which the hung-task detector makes visible.
///
/// # Invariants
///
/// `table` is the table of the target whose anchor `_anchor` refers to: valid while the
/// handle lives.
pub struct TableRef {
    table: NonNull<bindings::dm_table>,
    _anchor: Ref<TargetAnchor>,
}

// SAFETY: the handle only calls `dm_table_event`, which may be called from any thread (it
// takes dm's event mutex), and compares the table's address.
unsafe impl Send for TableRef {}
// SAFETY: as above; no method changes the handle.
unsafe impl Sync for TableRef {}

impl TableRef {
    /// Raises an event on the table (`dm_table_event`): if it is its device's live table, the
    /// device's event counter goes up, waking `dmsetup wait` and dmeventd. Process context;
    /// it takes dm's event mutex, so the caller should hold no lock that dm's event callback
    /// could need.
    pub fn raise_event(&self) {
        // SAFETY: `might_sleep` has no preconditions.
        unsafe { bindings::rthin_might_sleep() };
        // SAFETY: the table is valid (type invariant); a table not bound to its device has no
        // event callback, and then this does nothing.
        unsafe { bindings::dm_table_event(self.table.as_ptr()) };
    }

    /// Whether `other` is a handle to the same table.
    pub fn same_table(&self, other: &TableRef) -> bool {
        self.table == other.table
    }
}

impl Clone for TableRef {
    fn clone(&self) -> Self {
        // INVARIANT: the same table, and another reference to the same anchor.
        Self {
            table: self.table,
            _anchor: self._anchor.clone(),
        }
    }
}

/// The callback that `iterate_devices` calls for each device of the target.
pub struct Callout<'a> {
    ti: *mut bindings::dm_target,
    f: bindings::iterate_devices_callout_fn,
    data: *mut c_void,
    _p: PhantomData<&'a mut c_void>,
}

impl Callout<'_> {
    /// Reports that the target maps `len` sectors of `dev` from sector `start`. A non-zero
    /// result ends the iteration and must be returned from `iterate_devices`.
    pub fn call(&mut self, dev: &DmDev, start: u64, len: u64) -> i32 {
        match self.f {
            // SAFETY: dm passed `f` with `ti` and `data` to `iterate_devices`, which is still
            // running; `dev` is a device the target holds.
            Some(f) => unsafe { f(self.ti, dev.as_ptr(), start, len, self.data) },
            None => 0,
        }
    }
}

/// The queue limits a target may adjust in `io_hints`.
pub struct QueueLimits<'a> {
    limits: &'a mut bindings::queue_limits,
}

impl QueueLimits<'_> {
    /// Minimum IO size in bytes.
    pub fn io_min(&self) -> u32 {
        self.limits.io_min
    }

    /// Optimal IO size in bytes.
    pub fn io_opt(&self) -> u32 {
        self.limits.io_opt
    }

    /// Largest IO, in sectors.
    pub fn max_sectors(&self) -> u32 {
        self.limits.max_sectors
    }

    /// Sets the largest IO, in sectors.
    pub fn set_max_sectors(&mut self, sectors: u32) {
        self.limits.max_sectors = sectors;
    }

    /// Sets the minimum IO size in bytes.
    pub fn set_io_min(&mut self, bytes: u32) {
        self.limits.io_min = bytes;
    }

    /// Sets the optimal IO size in bytes.
    pub fn set_io_opt(&mut self, bytes: u32) {
        self.limits.io_opt = bytes;
    }

    /// Logical block size in bytes.
    pub fn logical_block_size(&self) -> u32 {
        self.limits.logical_block_size
    }

    /// Sets the discard granularity in bytes.
    pub fn set_discard_granularity(&mut self, bytes: u32) {
        self.limits.discard_granularity = bytes;
    }

    /// Sets the largest discard the target accepts, in sectors.
    pub fn set_max_hw_discard_sectors(&mut self, sectors: u32) {
        self.limits.max_hw_discard_sectors = sectors;
    }
}

/// A device-mapper target type.
///
/// Callbacks that a target does not implement are left out of the `target_type`, so dm
/// behaves as it does for a C target without them.
#[vtable]
pub trait Target: Sized + Send + Sync + 'static {
    /// The name used in table lines.
    const NAME: &'static CStr;
    /// The version `dmsetup targets` shows.
    const VERSION: [u32; 3];
    /// `DM_TARGET_*` feature flags.
    const FEATURES: u64 = 0;

    /// Data kept with each bio from `map` to `end_io` (`()` if none). It lives in the
    /// space dm reserves in front of each bio, so it costs no allocation.
    type PerBio: Send;

    /// Builds the target's state from its table line, or says why the line is refused.
    fn ctr(ctr: &mut Ctr<'_>, args: Args<'_>) -> core::result::Result<Pin<KBox<Self>>, CtrError>;

    /// Maps one bio.
    fn map<'a>(
        this: Pin<&Self>,
        ti: &TargetInfo,
        bio: Bio<'a, Self::PerBio>,
    ) -> MapResult<'a, Self::PerBio>;

    /// Sees a bio complete, with the per-bio data `map` (or [`Bio::take`]) gave.
    fn end_io<'a>(
        _this: Pin<&Self>,
        _ti: &TargetInfo,
        _bio: Bio<'a, Self::PerBio>,
        _per_bio: Self::PerBio,
        _status: &mut BlkStatus,
    ) -> EndIo<'a, Self::PerBio> {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Called when suspend starts; IO may still be in flight.
    fn presuspend(_this: Pin<&Self>, _ti: &TargetInfo) {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Called when a suspend fails after [`Target::presuspend`] ran: undo it (the device is
    /// not suspended, and no resume follows).
    fn presuspend_undo(_this: Pin<&Self>) {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Called when the device is suspended and no IO is in flight.
    fn postsuspend(_this: Pin<&Self>) {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Called before resume; an error keeps the device suspended.
    fn preresume(_this: Pin<&Self>) -> Result {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Called when the device resumes.
    fn resume(_this: Pin<&Self>) {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Writes the status line (`dmsetup status`) or the table line (`dmsetup table`).
    fn status(
        _this: Pin<&Self>,
        _ti: &TargetInfo,
        _kind: StatusType,
        _flags: u32,
        _out: &mut StatusWriter<'_>,
    ) {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Handles `dmsetup message`; text written to `out` is returned to the caller.
    fn message(
        _this: Pin<&Self>,
        _ti: &TargetInfo,
        _args: Args<'_>,
        _out: &mut StatusWriter<'_>,
    ) -> Result {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Calls `callout` for each device the target maps onto.
    fn iterate_devices(_this: Pin<&Self>, _ti: &TargetInfo, _callout: &mut Callout<'_>) -> i32 {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Adjusts the queue limits of the mapped device.
    fn io_hints(_this: Pin<&Self>, _ti: &TargetInfo, _limits: &mut QueueLimits<'_>) {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }
}

/// Whether dm must call `end_io`: the target asked for it, or its per-bio data must be dropped.
const fn has_end_io<T: Target>() -> bool {
    T::HAS_END_IO || mem::needs_drop::<T::PerBio>()
}

struct Callbacks<T: Target>(PhantomData<T>);

/// What `ti->private` holds: the target's state, then the anchor of its devices. Fields drop
/// in order: the state (and the devices in it) first, then the anchor, whose owner waits for
/// any device kept elsewhere.
struct Private<T> {
    state: Pin<KBox<T>>,
    _anchor: Option<Owner<TargetAnchor>>,
}

impl<T: Target> Callbacks<T> {
    /// # Safety
    ///
    /// `ti` must be the `private`-carrying target of a successful `ctr_callback` that has not
    /// been destroyed; the returned borrow must not outlive the callback.
    unsafe fn this<'a>(ti: *mut bindings::dm_target) -> Pin<&'a T> {
        // SAFETY: `ti` is a valid, constructed target (the caller's guarantee).
        let private = unsafe { (*ti).private };
        // SAFETY: `private` was set from `KBox<Private<T>>::into_foreign` in `ctr_callback` and
        // is released only in `dtr_callback`, never concurrently with other callbacks.
        let p: &'a Private<T> = unsafe { KBox::<Private<T>>::borrow(private) };
        p.state.as_ref()
    }

    /// dm's `ctr` callback for `T`.
    ///
    /// # Safety
    ///
    /// Only device-mapper calls it, through the `target_type` of a [`Registration<T>`], with
    /// the arguments its `ctr` contract gives.
    unsafe extern "C" fn ctr_callback(
        ti: *mut bindings::dm_target,
        argc: c_uint,
        argv: *mut *mut c_char,
    ) -> c_int {
        let Some(nti) = NonNull::new(ti) else {
            return EINVAL.to_errno();
        };
        if mem::align_of::<T::PerBio>() > 8 {
            // SAFETY: `ti` is valid while the constructor runs.
            unsafe { (*ti).error = c_str!("per-bio data over-aligned").as_char_ptr().cast_mut() };
            return EINVAL.to_errno();
        }
        let mut ctr = Ctr {
            ti: nti,
            anchor: None,
            _p: PhantomData,
        };
        // SAFETY: dm passes `argc` valid strings in `argv`, alive while the constructor runs.
        let args = unsafe { Args::from_raw(argc, argv) };
        let r = T::ctr(&mut ctr, args).and_then(|state| {
            let p = Private {
                state,
                _anchor: ctr.anchor.take(),
            };
            KBox::new(p, GFP_KERNEL).map_err(|_| CtrError::new(ENOMEM, c_str!("Out of memory")))
        });
        match r {
            Ok(private) => {
                // SAFETY: `ti` is valid and ours while the constructor runs.
                unsafe {
                    (*ti).per_io_data_size = per_bio_size::<T::PerBio>() as c_uint;
                    (*ti).private = private.into_foreign().cast_mut();
                }
                0
            }
            Err(e) => {
                // SAFETY: `ti` is valid; dm only reads `error`, and the message is static.
                unsafe { (*ti).error = e.msg.as_char_ptr().cast_mut() };
                e.err.to_errno()
            }
        }
    }

    /// dm's `dtr` callback for `T`.
    ///
    /// # Safety
    ///
    /// Only device-mapper calls it, through the `target_type` of a [`Registration<T>`], with
    /// the arguments its `dtr` contract gives.
    unsafe extern "C" fn dtr_callback(ti: *mut bindings::dm_target) {
        // SAFETY: dm calls the destructor once, after a successful constructor, when no other
        // callback runs and no bio of the target is in flight.
        drop(unsafe { <KBox<Private<T>> as ForeignOwnable>::from_foreign((*ti).private) });
    }

    /// dm's `map` callback for `T`.
    ///
    /// # Safety
    ///
    /// Only device-mapper calls it, through the `target_type` of a [`Registration<T>`], with
    /// the arguments its `map` contract gives.
    unsafe extern "C" fn map_callback(
        ti: *mut bindings::dm_target,
        bio: *mut bindings::bio,
    ) -> c_int {
        // SAFETY: dm calls `map` on a constructed target.
        let this = unsafe { Self::this(ti) };
        // SAFETY: `ti` is valid during the callback.
        let info = unsafe { TargetInfo::from_raw(ti) };
        // SAFETY: dm lends the clone bio to the target during `map`; `ctr_callback` reserved
        // room for a `T::PerBio` in its per-bio area.
        let b = unsafe { Bio::<T::PerBio>::from_raw(bio) };
        let r = match T::map(this, info, b) {
            MapResult::Remapped(b, per_bio) => {
                if has_end_io::<T>() {
                    // SAFETY: the per-bio area is reserved, aligned (see `per_bio_size`) and
                    // unused until `end_io`, which reads it back exactly once.
                    unsafe { ptr::write(per_bio_ptr::<T::PerBio>(b.as_ptr()), per_bio) };
                } else {
                    drop(per_bio);
                }
                bindings::DM_MAPIO_REMAPPED
            }
            MapResult::Complete(mut b, status, per_bio) => {
                if has_end_io::<T>() {
                    // SAFETY: as for `Remapped`: `end_io` runs when the bio completes below.
                    unsafe { ptr::write(per_bio_ptr::<T::PerBio>(b.as_ptr()), per_bio) };
                } else {
                    drop(per_bio);
                }
                b.set_status(status);
                // SAFETY: the target owns the clone during `map`; ending it here and returning
                // `DM_MAPIO_SUBMITTED` hands it back to dm, which completes it through `end_io`.
                unsafe { bindings::bio_endio(b.as_ptr()) };
                bindings::DM_MAPIO_SUBMITTED
            }
            // The target owns the bio now (and has written its per-bio data); dm leaves it.
            MapResult::Submitted(_) => bindings::DM_MAPIO_SUBMITTED,
            MapResult::Kill(_) => bindings::DM_MAPIO_KILL,
            MapResult::Requeue(_) => bindings::DM_MAPIO_REQUEUE,
        };
        r as c_int
    }

    /// dm's `end_io` callback for `T`.
    ///
    /// # Safety
    ///
    /// Only device-mapper calls it, through the `target_type` of a [`Registration<T>`], with
    /// the arguments its `end_io` contract gives.
    unsafe extern "C" fn end_io_callback(
        ti: *mut bindings::dm_target,
        bio: *mut bindings::bio,
        error: *mut bindings::blk_status_t,
    ) -> c_int {
        // SAFETY: `end_io` is called only for bios `map` remapped, completed or took over,
        // whose per-bio data was written then (or by `Bio::take` since); it is read back here
        // once (dm maps a requeued bio again, and a bio taken again is written again).
        let per_bio = unsafe { ptr::read(per_bio_ptr::<T::PerBio>(bio)) };
        if !T::HAS_END_IO {
            drop(per_bio);
            return bindings::DM_ENDIO_DONE as c_int;
        }
        // SAFETY: dm calls `end_io` on a constructed target.
        let this = unsafe { Self::this(ti) };
        // SAFETY: `ti` is valid during the callback.
        let info = unsafe { TargetInfo::from_raw(ti) };
        // SAFETY: dm lends the completed clone bio to the target during `end_io`; its per-bio
        // area has room for a `T::PerBio`.
        let b = unsafe { Bio::<T::PerBio>::from_raw(bio) };
        // SAFETY: `error` points to the bio's status, valid during the callback.
        let mut status = BlkStatus::from_raw(unsafe { *error });
        let r = T::end_io(this, info, b, per_bio, &mut status);
        // SAFETY: as above.
        unsafe { *error = status.to_raw() };
        match r {
            EndIo::Done(_) => bindings::DM_ENDIO_DONE as c_int,
            EndIo::Requeue(_) => bindings::DM_ENDIO_REQUEUE as c_int,
            EndIo::Incomplete(_) => bindings::DM_ENDIO_INCOMPLETE as c_int,
        }
    }

    /// dm's `presuspend` callback for `T`.
    ///
    /// # Safety
    ///
    /// Only device-mapper calls it, through the `target_type` of a [`Registration<T>`], with
    /// the arguments its `presuspend` contract gives.
    unsafe extern "C" fn presuspend_callback(ti: *mut bindings::dm_target) {
        // SAFETY: dm calls suspend hooks on a constructed target.
        let this = unsafe { Self::this(ti) };
        // SAFETY: `ti` stays valid for the call.
        let info = unsafe { TargetInfo::from_raw(ti) };
        T::presuspend(this, info)
    }

    /// dm's `presuspend_undo` callback for `T`.
    ///
    /// # Safety
    ///
    /// Only device-mapper calls it, through the `target_type` of a [`Registration<T>`], with
    /// the arguments its `presuspend_undo` contract gives.
    unsafe extern "C" fn presuspend_undo_callback(ti: *mut bindings::dm_target) {
        // SAFETY: dm calls suspend hooks on a constructed target.
        T::presuspend_undo(unsafe { Self::this(ti) })
    }

    /// dm's `postsuspend` callback for `T`.
    ///
    /// # Safety
    ///
    /// Only device-mapper calls it, through the `target_type` of a [`Registration<T>`], with
    /// the arguments its `postsuspend` contract gives.
    unsafe extern "C" fn postsuspend_callback(ti: *mut bindings::dm_target) {
        // SAFETY: dm calls suspend hooks on a constructed target.
        T::postsuspend(unsafe { Self::this(ti) })
    }

    /// dm's `preresume` callback for `T`.
    ///
    /// # Safety
    ///
    /// Only device-mapper calls it, through the `target_type` of a [`Registration<T>`], with
    /// the arguments its `preresume` contract gives.
    unsafe extern "C" fn preresume_callback(ti: *mut bindings::dm_target) -> c_int {
        // SAFETY: dm calls resume hooks on a constructed target.
        match T::preresume(unsafe { Self::this(ti) }) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// dm's `resume` callback for `T`.
    ///
    /// # Safety
    ///
    /// Only device-mapper calls it, through the `target_type` of a [`Registration<T>`], with
    /// the arguments its `resume` contract gives.
    unsafe extern "C" fn resume_callback(ti: *mut bindings::dm_target) {
        // SAFETY: dm calls resume hooks on a constructed target.
        T::resume(unsafe { Self::this(ti) })
    }

    /// dm's `status` callback for `T`.
    ///
    /// # Safety
    ///
    /// Only device-mapper calls it, through the `target_type` of a [`Registration<T>`], with
    /// the arguments its `status` contract gives.
    unsafe extern "C" fn status_callback(
        ti: *mut bindings::dm_target,
        kind: bindings::status_type_t,
        flags: c_uint,
        result: *mut c_char,
        maxlen: c_uint,
    ) {
        if result.is_null() {
            return;
        }
        // SAFETY: dm passes a buffer of `maxlen` bytes, ours to write during the callback.
        let buf = unsafe { core::slice::from_raw_parts_mut(result.cast::<u8>(), maxlen as usize) };
        let Some(mut out) = StatusWriter::new(buf) else {
            return;
        };
        let kind = match kind {
            bindings::status_type_t_STATUSTYPE_INFO => StatusType::Info,
            bindings::status_type_t_STATUSTYPE_TABLE => StatusType::Table,
            bindings::status_type_t_STATUSTYPE_IMA => StatusType::Ima,
            _ => return,
        };
        // SAFETY: dm asks a constructed target for its status; `ti` is valid meanwhile.
        let (this, info) = unsafe { (Self::this(ti), TargetInfo::from_raw(ti)) };
        T::status(this, info, kind, flags, &mut out);
    }

    /// dm's `message` callback for `T`.
    ///
    /// # Safety
    ///
    /// Only device-mapper calls it, through the `target_type` of a [`Registration<T>`], with
    /// the arguments its `message` contract gives.
    unsafe extern "C" fn message_callback(
        ti: *mut bindings::dm_target,
        argc: c_uint,
        argv: *mut *mut c_char,
        result: *mut c_char,
        maxlen: c_uint,
    ) -> c_int {
        let mut spare = [0u8; 1];
        let buf: &mut [u8] = if result.is_null() || maxlen == 0 {
            &mut spare
        } else {
            // SAFETY: dm passes a buffer of `maxlen` bytes, ours during the callback.
            unsafe { core::slice::from_raw_parts_mut(result.cast::<u8>(), maxlen as usize) }
        };
        let Some(mut out) = StatusWriter::new(buf) else {
            return EINVAL.to_errno();
        };
        // SAFETY: dm passes `argc` valid strings, alive during the callback.
        let args = unsafe { Args::from_raw(argc, argv) };
        // SAFETY: dm sends messages to a constructed target; `ti` is valid meanwhile.
        let (this, info) = unsafe { (Self::this(ti), TargetInfo::from_raw(ti)) };
        match T::message(this, info, args, &mut out) {
            // dm returns the result text to user space only when the target returns 1.
            Ok(()) if out.is_empty() => 0,
            Ok(()) => 1,
            Err(e) => e.to_errno(),
        }
    }

    /// dm's `iterate_devices` callback for `T`.
    ///
    /// # Safety
    ///
    /// Only device-mapper calls it, through the `target_type` of a [`Registration<T>`], with
    /// the arguments its `iterate_devices` contract gives.
    unsafe extern "C" fn iterate_devices_callback(
        ti: *mut bindings::dm_target,
        f: bindings::iterate_devices_callout_fn,
        data: *mut c_void,
    ) -> c_int {
        let mut callout = Callout {
            ti,
            f,
            data,
            _p: PhantomData,
        };
        // SAFETY: dm iterates the devices of a constructed target; `ti` is valid meanwhile.
        let (this, info) = unsafe { (Self::this(ti), TargetInfo::from_raw(ti)) };
        T::iterate_devices(this, info, &mut callout)
    }

    /// dm's `io_hints` callback for `T`.
    ///
    /// # Safety
    ///
    /// Only device-mapper calls it, through the `target_type` of a [`Registration<T>`], with
    /// the arguments its `io_hints` contract gives.
    unsafe extern "C" fn io_hints_callback(
        ti: *mut bindings::dm_target,
        limits: *mut bindings::queue_limits,
    ) {
        // SAFETY: dm passes limits that are ours to change during the callback.
        let limits = unsafe { &mut *limits };
        let mut limits = QueueLimits { limits };
        // SAFETY: dm asks a constructed target; `ti` is valid meanwhile.
        let (this, info) = unsafe { (Self::this(ti), TargetInfo::from_raw(ti)) };
        T::io_hints(this, info, &mut limits);
    }

    fn target_type(module: &'static ThisModule, name: &'static CStr) -> bindings::target_type {
        // Each optional callback is named only inside a branch on its constant `HAS_*` flag:
        // taking its address unconditionally (e.g. `HAS_X.then_some(cb as _)`) would
        // instantiate the trait's `build_error!` default and fail the module's link.
        bindings::target_type {
            features: T::FEATURES,
            name: name.as_char_ptr(),
            module: module.as_ptr(),
            version: T::VERSION,
            ctr: Some(Self::ctr_callback),
            dtr: Some(Self::dtr_callback),
            map: Some(Self::map_callback),
            end_io: if has_end_io::<T>() {
                Some(Self::end_io_callback)
            } else {
                None
            },
            presuspend: if T::HAS_PRESUSPEND {
                Some(Self::presuspend_callback)
            } else {
                None
            },
            presuspend_undo: if T::HAS_PRESUSPEND_UNDO {
                Some(Self::presuspend_undo_callback)
            } else {
                None
            },
            postsuspend: if T::HAS_POSTSUSPEND {
                Some(Self::postsuspend_callback)
            } else {
                None
            },
            preresume: if T::HAS_PRERESUME {
                Some(Self::preresume_callback)
            } else {
                None
            },
            resume: if T::HAS_RESUME {
                Some(Self::resume_callback)
            } else {
                None
            },
            status: if T::HAS_STATUS {
                Some(Self::status_callback)
            } else {
                None
            },
            message: if T::HAS_MESSAGE {
                Some(Self::message_callback)
            } else {
                None
            },
            iterate_devices: if T::HAS_ITERATE_DEVICES {
                Some(Self::iterate_devices_callback)
            } else {
                None
            },
            io_hints: if T::HAS_IO_HINTS {
                Some(Self::io_hints_callback)
            } else {
                None
            },
            ..Default::default()
        }
    }
}

/// A registered target type; dropping it unregisters the type.
///
/// # Invariants
///
/// `tt` is registered with dm (`dm_register_target` succeeded) and stays at its heap address
/// until `drop` unregisters it.
pub struct Registration<T: Target> {
    tt: KBox<Opaque<bindings::target_type>>,
    _p: PhantomData<T>,
}

// SAFETY: after registration only dm touches the `target_type`, under its own lock; dropping
// the registration from another thread is fine.
unsafe impl<T: Target> Send for Registration<T> {}
// SAFETY: `Registration` has no methods that use shared references.
unsafe impl<T: Target> Sync for Registration<T> {}

impl<T: Target> Registration<T> {
    /// Registers `T` with device-mapper under its own name, [`Target::NAME`].
    pub fn new(module: &'static ThisModule) -> Result<Self> {
        Self::new_as(module, T::NAME)
    }

    /// Registers `T` with device-mapper under `name` (table lines and `dmsetup targets` use
    /// it). Fails with `EBUSY` if a target of that name is registered already.
    pub fn new_as(module: &'static ThisModule, name: &'static CStr) -> Result<Self> {
        let tt = KBox::new(Opaque::uninit(), GFP_KERNEL)?;
        // SAFETY: `tt` points to memory we own, valid for writes.
        unsafe { ptr::write(tt.get(), Callbacks::<T>::target_type(module, name)) };
        // SAFETY: `tt` is fully initialised and stays at its heap address until unregistered.
        let ret = unsafe { bindings::dm_register_target(tt.get()) };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: registered above.
        Ok(Self {
            tt,
            _p: PhantomData,
        })
    }
}

impl<T: Target> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: registered (type invariant); dm refuses to unload the module while one of its
        // targets is in use, so no table refers to this type any more.
        unsafe { bindings::dm_unregister_target(self.tt.get()) };
    }
}

/// Whether the module registers its thin targets under dm-thin's names (`thin-pool`, `thin`):
/// the `dm_thin_names` module parameter, off by default.
pub fn dm_thin_names() -> bool {
    // SAFETY: reads a read-only module parameter.
    unsafe { bindings::rthin_dm_thin_names() }
}

/// `DM_TARGET_*` feature flags for [`Target::FEATURES`].
pub mod features {
    use super::bindings;

    /// Bios may be submitted with `REQ_NOWAIT` (`DM_TARGET_NOWAIT`).
    pub const NOWAIT: u64 = bindings::DM_TARGET_NOWAIT as u64;
    /// Integrity data passes through (`DM_TARGET_PASSES_INTEGRITY`).
    pub const PASSES_INTEGRITY: u64 = bindings::DM_TARGET_PASSES_INTEGRITY as u64;
    /// Inline crypto passes through (`DM_TARGET_PASSES_CRYPTO`).
    pub const PASSES_CRYPTO: u64 = bindings::DM_TARGET_PASSES_CRYPTO as u64;
    /// The target must be alone in its table (`DM_TARGET_SINGLETON`).
    pub const SINGLETON: u64 = bindings::DM_TARGET_SINGLETON as u64;
    /// The target is writable even in a read-only table (`DM_TARGET_ALWAYS_WRITEABLE`).
    pub const ALWAYS_WRITEABLE: u64 = bindings::DM_TARGET_ALWAYS_WRITEABLE as u64;
    /// The table may not be replaced by one of another type (`DM_TARGET_IMMUTABLE`).
    pub const IMMUTABLE: u64 = bindings::DM_TARGET_IMMUTABLE as u64;
}
