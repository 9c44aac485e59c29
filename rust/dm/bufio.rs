// SPDX-License-Identifier: GPL-2.0

//! dm-bufio: a cache of fixed-size blocks of a device, for metadata.
//!
//! dm-bufio hands the same memory to everyone who holds a block. To keep Rust's aliasing rules,
//! each buffer carries a lock word in its aux data: any number of [`ReadBuf`]s, or one
//! [`WriteBuf`], may hold a block at a time. The aux data also has a tag word that the user
//! of the client may set freely (the metadata layer records there which validator checked
//! the block, so each block is checked once after it is read).
//!
//! A [`WriteBuf`] marks its buffer dirty when it is released, so a change is written even
//! if dm-bufio wrote the buffer back while it was still being changed. A conflicting request fails with `EBUSY` instead
//! of waiting: the metadata layer above serialises writers with its own lock, so a conflict
//! is a bug to report, not a wait.
//!
//! Creating a client registers a shrinker: never do it with the metadata lock held (seed 004).
//! Roll back by [`Client::reset`] of the existing client instead of creating a new one.
//!
//! C header: [`include/linux/dm-bufio.h`](srctree/include/linux/dm-bufio.h)

use super::{bdev::BlockDevice, bindings};
use core::{
    marker::PhantomData,
    ptr::NonNull,
    sync::atomic::{AtomicI32, AtomicU32, Ordering},
};
use kernel::{error::Error, prelude::*, sync::Arc};

/// The aux data of every buffer.
#[repr(C)]
struct Aux {
    /// Number of read holders, or -1 for the one write holder.
    lock: AtomicI32,
    /// Free for the client's user.
    tag: AtomicU32,
}

/// A dm-bufio client over a device opened by a target, with blocks of `BS` bytes.
///
/// # Invariants
///
/// `c` is a live client from `dm_bufio_client_create` with blocks of `BS` bytes and `aux_size`
/// room for an [`Aux`] in every buffer, initialised by `alloc_callback`; `dev` keeps its block
/// device open for the client's lifetime.
pub struct Client<const BS: usize> {
    c: NonNull<bindings::dm_bufio_client>,
    _dev: Arc<BlockDevice>,
}

// SAFETY: dm-bufio clients are used from any thread; dm-bufio locks internally.
unsafe impl<const BS: usize> Send for Client<BS> {}
// SAFETY: as above; buffer contents are protected by the per-buffer lock words.
unsafe impl<const BS: usize> Sync for Client<BS> {}

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
    // room for an `Aux`; the aux area is ours to initialise.
    unsafe {
        bindings::dm_bufio_get_aux_data(b).cast::<Aux>().write(Aux {
            lock: AtomicI32::new(0),
            tag: AtomicU32::new(0),
        });
    }
}

impl<const BS: usize> Client<BS> {
    const BLOCK_SIZE_OK: () = assert!(BS.is_power_of_two() && BS >= 512 && BS <= (1 << 30));

    /// Creates a client over `dev`, with `reserved` buffers kept for progress under memory
    /// pressure.
    pub fn new(dev: Arc<BlockDevice>, reserved: u32) -> Result<Self> {
        #[allow(clippy::let_unit_value)]
        let () = Self::BLOCK_SIZE_OK;
        // SAFETY: `dev` holds the block device open, for as long as the client (kept in `_dev`).
        let c = unsafe {
            bindings::dm_bufio_client_create(
                dev.bdev(),
                BS as u32,
                reserved,
                core::mem::size_of::<Aux>() as u32,
                Some(alloc_callback),
                None,
                0,
            )
        };
        // INVARIANT: a live client with `BS`-byte blocks and room for, and initialisation
        // of, the aux data.
        Ok(Self {
            c: from_err_ptr(c)?,
            _dev: dev,
        })
    }

    /// Number of whole blocks on the device.
    pub fn nr_blocks(&self) -> u64 {
        // SAFETY: `c` is live (type invariant).
        unsafe { bindings::dm_bufio_get_device_size(self.c.as_ptr()) }
    }

    fn lock(&self, b: *mut bindings::dm_buffer, data: *mut u8, write: bool) -> Result<Held<BS>> {
        // SAFETY: `b` is a buffer we hold; its aux data is an `Aux` (type invariant).
        let word = unsafe { &(*bindings::dm_bufio_get_aux_data(b).cast::<Aux>()).lock };
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
        // INVARIANT: held, locked, and `data` has `BS` bytes (type invariant of `Client`).
        Ok(Held { b, data })
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
    pub fn read(&self, block: u64) -> Result<ReadBuf<'_, BS>> {
        let (b, d) = self.get(block, bindings::dm_bufio_read)?.ok_or(EIO)?;
        Ok(ReadBuf {
            held: self.lock(b, d, false)?,
            _p: PhantomData,
        })
    }

    /// Read-locks `block` only if it is cached: `Ok(None)` where reading it would need IO.
    /// For the IO-mapping path, which must not issue metadata IO. It may still sleep
    /// (`dm_bufio_get` takes the cache's rw_semaphore, and waits for a read of the block that
    /// is already in flight), so process context only.
    pub fn try_read(&self, block: u64) -> Result<Option<ReadBuf<'_, BS>>> {
        match self.get(block, bindings::dm_bufio_get)? {
            None => Ok(None),
            Some((b, d)) => Ok(Some(ReadBuf {
                held: self.lock(b, d, false)?,
                _p: PhantomData,
            })),
        }
    }

    /// Reads `block` and write-locks it; it is written back when dirty buffers are written.
    pub fn write(&self, block: u64) -> Result<WriteBuf<'_, BS>> {
        let (b, d) = self.get(block, bindings::dm_bufio_read)?.ok_or(EIO)?;
        Ok(WriteBuf {
            held: self.lock(b, d, true)?,
            dirtied: false,
            _p: PhantomData,
        })
    }

    /// Write-locks `block` without reading it; its contents are zeroed.
    pub fn new_block(&self, block: u64) -> Result<WriteBuf<'_, BS>> {
        let (b, d) = self.get(block, bindings::dm_bufio_new)?.ok_or(ENOMEM)?;
        let mut w = WriteBuf {
            held: self.lock(b, d, true)?,
            dirtied: false,
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

    /// Writes every dirty buffer, waits for the writes, then flushes the device's write cache.
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

    /// Empties the cache, so the next reads come from disk: dirty buffers are first written
    /// back (`drop_buffers` starts their writes and waits for each), then every buffer is
    /// freed. Dirty buffers are *written*, not discarded. `&mut self` proves that no buffer
    /// is held. This is how an abort rolls back: the client is reset, never recreated
    /// (seed 004); what it writes are the aborted transaction's shadow blocks, which the
    /// last committed superblock does not reach.
    pub fn reset(&mut self) {
        // SAFETY: `c` is live and, by `&mut self`, none of its buffers is held by us.
        unsafe { bindings::dm_bufio_client_reset(self.c.as_ptr()) }
    }
}

impl<const BS: usize> Drop for Client<BS> {
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
/// points to its `BS` bytes.
struct Held<const BS: usize> {
    b: *mut bindings::dm_buffer,
    data: *mut u8,
}

impl<const BS: usize> Held<BS> {
    fn block(&self) -> u64 {
        // SAFETY: `b` is held.
        unsafe { bindings::dm_bufio_get_block_number(self.b) }
    }

    fn aux(&self) -> &Aux {
        // SAFETY: `b` is held and its aux data is an `Aux`.
        unsafe { &*bindings::dm_bufio_get_aux_data(self.b).cast::<Aux>() }
    }

    fn data(&self) -> &[u8; BS] {
        // SAFETY: `data` has `BS` bytes; a read or write lock is held, so no `&mut` aliases.
        unsafe { &*self.data.cast::<[u8; BS]>() }
    }
}

/// A read-locked block.
pub struct ReadBuf<'a, const BS: usize> {
    held: Held<BS>,
    _p: PhantomData<&'a Client<BS>>,
}

impl<const BS: usize> ReadBuf<'_, BS> {
    /// The block's number.
    pub fn block(&self) -> u64 {
        self.held.block()
    }

    /// The block's contents.
    pub fn data(&self) -> &[u8; BS] {
        self.held.data()
    }

    /// The buffer's tag word, free for the client's user.
    pub fn tag(&self) -> &AtomicU32 {
        &self.held.aux().tag
    }
}

impl<const BS: usize> Drop for ReadBuf<'_, BS> {
    fn drop(&mut self) {
        self.held.aux().lock.fetch_sub(1, Ordering::Release);
        // SAFETY: the buffer is held by us and released once.
        unsafe { bindings::dm_bufio_release(self.held.b) }
    }
}

/// A write-locked block; once changed, it is marked dirty when released and written with the
/// client's dirty buffers.
pub struct WriteBuf<'a, const BS: usize> {
    held: Held<BS>,
    dirtied: bool,
    _p: PhantomData<&'a Client<BS>>,
}

impl<const BS: usize> WriteBuf<'_, BS> {
    /// The block's number.
    pub fn block(&self) -> u64 {
        self.held.block()
    }

    /// The block's contents.
    pub fn data(&self) -> &[u8; BS] {
        self.held.data()
    }

    /// The block's contents, to change.
    pub fn data_mut(&mut self) -> &mut [u8; BS] {
        self.dirtied = true;
        // SAFETY: we hold the write lock, so this is the only reference to the data.
        unsafe { &mut *self.held.data.cast::<[u8; BS]>() }
    }

    /// The buffer's tag word, free for the client's user.
    pub fn tag(&self) -> &AtomicU32 {
        &self.held.aux().tag
    }
}

impl<const BS: usize> Drop for WriteBuf<'_, BS> {
    fn drop(&mut self) {
        if self.dirtied {
            // SAFETY: the buffer is held.
            unsafe { bindings::dm_bufio_mark_buffer_dirty(self.held.b) };
        }
        self.held.aux().lock.store(0, Ordering::Release);
        // SAFETY: the buffer is held by us and released once.
        unsafe { bindings::dm_bufio_release(self.held.b) }
    }
}
