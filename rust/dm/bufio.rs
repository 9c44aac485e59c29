// SPDX-License-Identifier: GPL-2.0

//! dm-bufio: a cache of fixed-size blocks of a device, for metadata.
//!
//! dm-bufio hands the same memory to everyone who holds a block. To keep Rust's aliasing rules,
//! each buffer carries a lock word in its aux data: any number of [`ReadBuf`]s, or one
//! [`WriteBuf`], may hold a block at a time. A conflicting request fails with `EBUSY` instead
//! of waiting: the metadata layer above serialises writers with its own lock, so a conflict
//! is a bug to report, not a wait.
//!
//! Creating a client registers a shrinker: never do it with the metadata lock held (seed 004).
//! Roll back by [`Client::reset`] of the existing client instead of creating a new one.
//!
//! C header: [`include/linux/dm-bufio.h`](srctree/include/linux/dm-bufio.h)

use super::{bindings, device::DmDev};
use core::{
    marker::PhantomData,
    ptr::NonNull,
    sync::atomic::{AtomicI32, Ordering},
};
use kernel::{error::Error, prelude::*, sync::Arc};

/// A dm-bufio client over a device opened by a target.
///
/// # Invariants
///
/// `c` is a live client from `dm_bufio_client_create` with `aux_size` room for an `AtomicI32`
/// lock word in every buffer, initialised by `alloc_callback`; `dev` keeps its block device
/// open for the client's lifetime.
pub struct Client {
    c: NonNull<bindings::dm_bufio_client>,
    block_size: usize,
    _dev: Arc<DmDev>,
}

// SAFETY: dm-bufio clients are used from any thread; dm-bufio locks internally.
unsafe impl Send for Client {}
// SAFETY: as above; buffer contents are protected by the per-buffer lock words.
unsafe impl Sync for Client {}

fn from_err_ptr<T>(p: *mut T) -> Result<NonNull<T>> {
    let v = p as isize;
    if (-4095..0).contains(&v) {
        return Err(Error::from_errno(v as i32));
    }
    NonNull::new(p).ok_or(ENOMEM)
}

/// Initialises the lock word of each new buffer.
///
/// # Safety
///
/// Only dm-bufio calls it, for a new buffer of a client created by [`Client::new`].
unsafe extern "C" fn alloc_callback(b: *mut bindings::dm_buffer) {
    // SAFETY: dm-bufio calls this for every new buffer of a client created with `aux_size`
    // room for the lock word; the aux area is ours to initialise.
    unsafe {
        bindings::dm_bufio_get_aux_data(b)
            .cast::<AtomicI32>()
            .write(AtomicI32::new(0));
    }
}

impl Client {
    /// Creates a client over `dev` with blocks of `block_size` bytes (a power of two, at
    /// least 512) and `reserved` buffers kept for progress under memory pressure.
    pub fn new(dev: Arc<DmDev>, block_size: u32, reserved: u32) -> Result<Self> {
        // SAFETY: `dev` holds the block device open, for as long as the client (kept in `_dev`).
        let c = unsafe {
            bindings::dm_bufio_client_create(
                dev.bdev(),
                block_size,
                reserved,
                core::mem::size_of::<AtomicI32>() as u32,
                Some(alloc_callback),
                None,
                0,
            )
        };
        // INVARIANT: a live client with room for, and initialisation of, the lock word.
        Ok(Self {
            c: from_err_ptr(c)?,
            block_size: block_size as usize,
            _dev: dev,
        })
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Number of whole blocks on the device.
    pub fn nr_blocks(&self) -> u64 {
        // SAFETY: `c` is live (type invariant).
        unsafe { bindings::dm_bufio_get_device_size(self.c.as_ptr()) }
    }

    fn lock(&self, b: *mut bindings::dm_buffer, data: *mut u8, write: bool) -> Result<Held> {
        // SAFETY: `b` is a buffer we hold; its aux data is the lock word (type invariant).
        let word = unsafe { &*bindings::dm_bufio_get_aux_data(b).cast::<AtomicI32>() };
        let r = if write {
            word.compare_exchange(0, -1, Ordering::Acquire, Ordering::Relaxed)
                .map(|_| ())
        } else {
            word.fetch_update(Ordering::Acquire, Ordering::Relaxed, |v| {
                (v >= 0).then_some(v + 1)
            })
            .map(|_| ())
        };
        if r.is_err() {
            // SAFETY: we hold `b` and give it back.
            unsafe { bindings::dm_bufio_release(b) };
            return Err(EBUSY);
        }
        Ok(Held {
            b,
            data,
            len: self.block_size,
        })
    }

    fn get(
        &self,
        block: u64,
        f: unsafe extern "C" fn(
            *mut bindings::dm_bufio_client,
            bindings::sector_t,
            *mut *mut bindings::dm_buffer,
        ) -> *mut kernel::ffi::c_void,
    ) -> Result<Option<(*mut bindings::dm_buffer, *mut u8)>> {
        let mut b: *mut bindings::dm_buffer = core::ptr::null_mut();
        // SAFETY: `c` is live; `b` is a valid place for the buffer.
        let data = unsafe { f(self.c.as_ptr(), block, &mut b) };
        if data.is_null() {
            return Ok(None);
        }
        let data = from_err_ptr(data)?;
        Ok(Some((b, data.as_ptr().cast())))
    }

    /// Reads `block` (doing IO if it is not cached) and read-locks it.
    pub fn read(&self, block: u64) -> Result<ReadBuf<'_>> {
        let (b, d) = self.get(block, bindings::dm_bufio_read)?.ok_or(EIO)?;
        Ok(ReadBuf {
            held: self.lock(b, d, false)?,
            _p: PhantomData,
        })
    }

    /// Read-locks `block` only if it is cached: `Ok(None)` where reading it would need IO.
    /// For the IO-mapping path, which must not wait for metadata IO.
    pub fn try_read(&self, block: u64) -> Result<Option<ReadBuf<'_>>> {
        match self.get(block, bindings::dm_bufio_get)? {
            None => Ok(None),
            Some((b, d)) => Ok(Some(ReadBuf {
                held: self.lock(b, d, false)?,
                _p: PhantomData,
            })),
        }
    }

    /// Reads `block` and write-locks it; it is written back when dirty buffers are written.
    pub fn write(&self, block: u64) -> Result<WriteBuf<'_>> {
        let (b, d) = self.get(block, bindings::dm_bufio_read)?.ok_or(EIO)?;
        Ok(WriteBuf {
            held: self.lock(b, d, true)?,
            _p: PhantomData,
        })
    }

    /// Write-locks `block` without reading it; its contents are zeroed.
    pub fn new_block(&self, block: u64) -> Result<WriteBuf<'_>> {
        let (b, d) = self.get(block, bindings::dm_bufio_new)?.ok_or(ENOMEM)?;
        let mut w = WriteBuf {
            held: self.lock(b, d, true)?,
            _p: PhantomData,
        };
        w.data_mut().fill(0);
        Ok(w)
    }

    /// Starts reading `n` blocks from `block` into the cache.
    pub fn prefetch(&self, block: u64, n: u32) {
        // SAFETY: `c` is live.
        unsafe { bindings::dm_bufio_prefetch(self.c.as_ptr(), block, n) }
    }

    /// Writes every dirty buffer and waits for the writes.
    pub fn write_dirty(&self) -> Result {
        // SAFETY: `c` is live.
        let r = unsafe { bindings::dm_bufio_write_dirty_buffers(self.c.as_ptr()) };
        if r != 0 {
            return Err(Error::from_errno(r));
        }
        Ok(())
    }

    /// Flushes the device's write cache.
    pub fn flush(&self) -> Result {
        // SAFETY: `c` is live.
        let r = unsafe { bindings::dm_bufio_issue_flush(self.c.as_ptr()) };
        if r != 0 {
            return Err(Error::from_errno(r));
        }
        Ok(())
    }

    /// Drops every cached buffer, dirty ones included, so the next reads come from disk.
    /// `&mut self` proves that no buffer is held. This is how an abort rolls back: the client
    /// is reset, never recreated (seed 004).
    pub fn reset(&mut self) {
        // SAFETY: `c` is live and, by `&mut self`, none of its buffers is held by us.
        unsafe { bindings::dm_bufio_client_reset(self.c.as_ptr()) }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: `c` is live; no buffer borrows the client any more.
        unsafe { bindings::dm_bufio_client_destroy(self.c.as_ptr()) }
    }
}

/// A held, locked buffer.
///
/// # Invariants
///
/// `b` is held (read or new, not yet released) and locked through its lock word; `data`
/// points to its `len` bytes.
struct Held {
    b: *mut bindings::dm_buffer,
    data: *mut u8,
    len: usize,
}

impl Held {
    fn block(&self) -> u64 {
        // SAFETY: `b` is held.
        unsafe { bindings::dm_bufio_get_block_number(self.b) }
    }

    fn word(&self) -> &AtomicI32 {
        // SAFETY: `b` is held and its aux data is the lock word.
        unsafe { &*bindings::dm_bufio_get_aux_data(self.b).cast::<AtomicI32>() }
    }

    fn data(&self) -> &[u8] {
        // SAFETY: `data` has `len` bytes; a read or write lock is held, so no `&mut` aliases.
        unsafe { core::slice::from_raw_parts(self.data, self.len) }
    }
}

/// A read-locked block.
pub struct ReadBuf<'a> {
    held: Held,
    _p: PhantomData<&'a Client>,
}

impl ReadBuf<'_> {
    /// The block's number.
    pub fn block(&self) -> u64 {
        self.held.block()
    }

    /// The block's contents.
    pub fn data(&self) -> &[u8] {
        self.held.data()
    }
}

impl Drop for ReadBuf<'_> {
    fn drop(&mut self) {
        self.held.word().fetch_sub(1, Ordering::Release);
        // SAFETY: the buffer is held by us and released once.
        unsafe { bindings::dm_bufio_release(self.held.b) }
    }
}

/// A write-locked block; changes are marked dirty and written with the client's dirty buffers.
pub struct WriteBuf<'a> {
    held: Held,
    _p: PhantomData<&'a Client>,
}

impl WriteBuf<'_> {
    /// The block's number.
    pub fn block(&self) -> u64 {
        self.held.block()
    }

    /// The block's contents.
    pub fn data(&self) -> &[u8] {
        self.held.data()
    }

    /// The block's contents, to change; the buffer is marked dirty.
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: the buffer is held.
        unsafe { bindings::dm_bufio_mark_buffer_dirty(self.held.b) };
        // SAFETY: we hold the write lock, so this is the only reference to the data.
        unsafe { core::slice::from_raw_parts_mut(self.held.data, self.held.len) }
    }
}

impl Drop for WriteBuf<'_> {
    fn drop(&mut self) {
        self.held.word().store(0, Ordering::Release);
        // SAFETY: the buffer is held by us and released once.
        unsafe { bindings::dm_bufio_release(self.held.b) }
    }
}
