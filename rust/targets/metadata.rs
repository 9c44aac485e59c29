// SPDX-License-Identifier: GPL-2.0

//! The persistent-data block manager over dm-bufio: how the module's metadata reaches disk.
//!
//! - A block is checked by its validator once after it is read: the buffer's tag records which
//!   validator passed, so later locks of the cached block skip the checksum.
//! - A write-locked block is stamped (location and checksum) once per transaction, not each
//!   time it is unlocked: a checksum of 4 KiB on every unlock cost more than the rest of a
//!   provision (issue 9). Its unlock records it in the *pending* list instead (the buffer's
//!   tag says so too), and `flush` stamps every pending block before it writes the dirty
//!   buffers. The superblock alone is stamped when unlocked, so it is never on disk
//!   unstamped.
//! - dm-bufio may write a dirty block back before the flush (memory pressure), unstamped.
//!   That copy is reachable from no committed superblock: the flush stamps the block again
//!   (re-reading it if it was evicted), which dirties it, and writes it before the commit
//!   that makes it reachable. A crash before then leaves the last commit intact. A pending
//!   block read back from disk in the same transaction (evicted meanwhile) fails its check,
//!   being unstamped: it is accepted because it is pending, so it is what this transaction
//!   wrote.
//! - `flush` writes every dirty buffer and then flushes the device cache; the transaction
//!   manager calls it before and after writing the superblock.

use crate::dm::bufio::{Client, ReadBuf, WriteBuf};
use crate::pdata::{Block, BlockManager, Error, Result, Validator, BLOCK_SIZE};
use core::{
    ops::{Deref, DerefMut},
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};
use kernel::{
    alloc::flags::{__GFP_NOWARN, GFP_KERNEL, GFP_NOWAIT},
    error,
    init::InPlaceInit,
    prelude::*,
    sync::Mutex,
};

/// Metadata devices above this many blocks are used only up to it: dm-thin's limit
/// (`DM_SM_METADATA_MAX_BLOCKS`), what 255 space map bitmaps of 16320 blocks each can count,
/// 4161600 blocks, just under 16 GiB.
pub const MAX_METADATA_BLOCKS: u64 = 255 * ((1 << 14) - 64);

/// dm-thin warns about a metadata device larger than 16 GiB, in sectors (its
/// `THIN_METADATA_MAX_SECTORS_WARNING`).
pub const METADATA_WARN_SECTORS: u64 = 16 * (1 << 30) / 512;

/// Changed blocks waiting to be stamped, with their validators.
type Pending = KVec<(u64, Validator)>;

/// pdata's block manager over a dm-bufio client of 4 KiB blocks.
pub struct BufioBm {
    client: Client<BLOCK_SIZE>,
    /// Blocks the metadata may use: the device's size when the client was made, grown with
    /// the device on a pool's resume ([`BufioBm::grow_to`]). Changed and read under the
    /// pool's metadata lock (or in its constructor, before the lock exists).
    nr_blocks: AtomicU64,
    /// Blocks changed since the last flush and not stamped yet, with their validators (a
    /// leaf lock, rank 2c in [`crate::locking`]: taken under the metadata lock, or in a pool's
    /// constructor before that lock exists).
    pending: Pin<KBox<Mutex<Pending>>>,
}

impl BufioBm {
    /// Wraps a client; the device's size is read here, and again when the pool resumes
    /// ([`BufioBm::device_blocks`]).
    pub fn new(client: Client<BLOCK_SIZE>) -> error::Result<Self> {
        let nr_blocks = AtomicU64::new(client.nr_blocks().min(MAX_METADATA_BLOCKS));
        let pending = KBox::pin_init(
            kernel::new_mutex!(KVec::new(), "rthin_metadata_pending"),
            GFP_KERNEL,
        )?;
        Ok(Self {
            client,
            nr_blocks,
            pending,
        })
    }

    /// The metadata device's size now, in blocks, up to [`MAX_METADATA_BLOCKS`].
    pub fn device_blocks(&self) -> u64 {
        self.client.nr_blocks().min(MAX_METADATA_BLOCKS)
    }

    /// Lets the metadata use `n` blocks, as many as the device has now at most (a grown
    /// device, before the metadata space map grows to it). Never shrinks.
    pub fn grow_to(&self, n: u64) {
        self.nr_blocks
            .fetch_max(n.min(self.device_blocks()), Ordering::Relaxed);
    }

    /// Stamps every pending block (see the module docs): with the validator its buffer's tag
    /// names, or, for a block evicted and read back meanwhile, the one it was listed with.
    fn stamp_pending(&self) -> Result<()> {
        let list = core::mem::take(&mut *self.pending.lock());
        for &(b, listed) in list.iter() {
            let mut buf = self.client.write(b).map_err(from_kernel)?;
            let tag = buf.tag().load(Ordering::Acquire);
            let v = match validator_of(tag & !PENDING) {
                Some(v) if tag & PENDING != 0 => v,
                _ => listed,
            };
            v.prepare_for_write(buf.data_mut(), b);
            buf.tag().store(tag_of(v), Ordering::Release);
        }
        Ok(())
    }

    /// Checks block `b` by `v` once after it is read (the tag records that it passed). A block
    /// that fails but is pending is this transaction's own, written back unstamped: accepted.
    fn validate(&self, data: &Block, tag: &AtomicU32, b: u64, v: Validator) -> Result<()> {
        let want = tag_of(v);
        let have = tag.load(Ordering::Acquire);
        if have & !PENDING == want {
            return Ok(());
        }
        match v.check(data, b) {
            Ok(()) => tag.store(want, Ordering::Release),
            Err(e) => {
                if !self.pending.lock().iter().any(|&(p, _)| p == b) {
                    return Err(e);
                }
                tag.store(want | PENDING, Ordering::Release);
            }
        }
        Ok(())
    }
}

/// Set in a buffer's tag while the block waits in the pending list, unstamped.
const PENDING: u32 = 1 << 8;

/// The kernel errno for a persistent-data error.
pub fn to_kernel(e: Error) -> error::Error {
    error::Error::from_errno(-e.errno())
}

fn from_kernel(e: error::Error) -> Error {
    match e.to_errno() {
        x if x == EBUSY.to_errno() => Error::Busy,
        x if x == ENOMEM.to_errno() => Error::NoMem,
        _ => Error::Io,
    }
}

/// Tag value meaning "checked by `v`"; 0, the value of a new buffer, means unchecked.
fn tag_of(v: Validator) -> u32 {
    match v {
        Validator::None => 1,
        Validator::Superblock => 2,
        Validator::BtreeNode => 3,
        Validator::Bitmap => 4,
        Validator::Index => 5,
    }
}

/// The validator a tag names, if any.
fn validator_of(tag: u32) -> Option<Validator> {
    [
        Validator::None,
        Validator::Superblock,
        Validator::BtreeNode,
        Validator::Bitmap,
        Validator::Index,
    ]
    .into_iter()
    .find(|&v| tag_of(v) == tag)
}

/// A read lock on a metadata block.
pub struct ReadGuard<'a> {
    buf: ReadBuf<'a, BLOCK_SIZE>,
}

impl Deref for ReadGuard<'_> {
    type Target = Block;

    fn deref(&self) -> &Block {
        self.buf.data()
    }
}

/// A write lock on a metadata block; recorded for stamping when dropped.
pub struct WriteGuard<'a> {
    buf: WriteBuf<'a, BLOCK_SIZE>,
    v: Validator,
    loc: u64,
    pending: &'a Mutex<Pending>,
}

impl Deref for WriteGuard<'_> {
    type Target = Block;

    fn deref(&self) -> &Block {
        self.buf.data()
    }
}

impl DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut Block {
        self.buf.data_mut()
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let (v, loc) = (self.v, self.loc);
        let tag = self.buf.tag();
        if v != Validator::Superblock && v != Validator::None {
            if tag.load(Ordering::Acquire) == tag_of(v) | PENDING {
                return;
            }
            // No reclaim under this lock (it is taken under the metadata lock, which is taken
            // in reclaim): if the list cannot grow without it, the block is stamped now.
            if self
                .pending
                .lock()
                .push((loc, v), GFP_NOWAIT | __GFP_NOWARN)
                .is_ok()
            {
                tag.store(tag_of(v) | PENDING, Ordering::Release);
                return;
            }
            // No memory for the list: stamp it now, as the superblock.
        }
        v.prepare_for_write(self.buf.data_mut(), loc);
        self.buf.tag().store(tag_of(v), Ordering::Release);
    }
}

/// A zeroed 4 KiB scratch buffer.
pub struct ScratchBuf(KBox<Block>);

impl Deref for ScratchBuf {
    type Target = Block;

    fn deref(&self) -> &Block {
        &self.0
    }
}

impl DerefMut for ScratchBuf {
    fn deref_mut(&mut self) -> &mut Block {
        &mut self.0
    }
}

impl BlockManager for BufioBm {
    type ReadGuard<'a> = ReadGuard<'a>;
    type WriteGuard<'a> = WriteGuard<'a>;
    type Buf = ScratchBuf;

    fn nr_blocks(&self) -> u64 {
        self.nr_blocks.load(Ordering::Relaxed)
    }

    fn read_lock(&self, b: u64, v: Validator) -> Result<ReadGuard<'_>> {
        if b >= self.nr_blocks() {
            return Err(Error::Inval);
        }
        let buf = self.client.read(b).map_err(from_kernel)?;
        self.validate(buf.data(), buf.tag(), b, v)?;
        Ok(ReadGuard { buf })
    }

    fn try_read_lock(&self, b: u64, v: Validator) -> Result<ReadGuard<'_>> {
        if b >= self.nr_blocks() {
            return Err(Error::Inval);
        }
        let buf = self
            .client
            .try_read(b)
            .map_err(from_kernel)?
            .ok_or(Error::WouldBlock)?;
        self.validate(buf.data(), buf.tag(), b, v)?;
        Ok(ReadGuard { buf })
    }

    fn write_lock(&self, b: u64, v: Validator) -> Result<WriteGuard<'_>> {
        if b >= self.nr_blocks() {
            return Err(Error::Inval);
        }
        let buf = self.client.write(b).map_err(from_kernel)?;
        self.validate(buf.data(), buf.tag(), b, v)?;
        Ok(WriteGuard {
            buf,
            v,
            loc: b,
            pending: &self.pending,
        })
    }

    fn write_lock_zero(&self, b: u64, v: Validator) -> Result<WriteGuard<'_>> {
        if b >= self.nr_blocks() {
            return Err(Error::Inval);
        }
        let buf = self.client.new_block(b).map_err(from_kernel)?;
        Ok(WriteGuard {
            buf,
            v,
            loc: b,
            pending: &self.pending,
        })
    }

    fn flush(&self) -> Result<()> {
        self.stamp_pending()?;
        self.client.write_dirty().map_err(from_kernel)
    }

    /// Drops every cached block, so the next reads come from disk: how an abort rolls back
    /// to the last commit. The existing client is reset, never recreated (seed 004).
    fn reset(&mut self) {
        self.client.reset();
        // What was pending is thrown away with the transaction.
        // Freed after the lock is released.
        let old = core::mem::take(&mut *self.pending.lock());
        drop(old);
    }

    fn alloc_buf(&self) -> Result<ScratchBuf> {
        // pdata asks for scratch buffers only when it opens or formats the metadata, in the
        // pool's constructor (process context, not an IO path).
        KBox::init(kernel::init::zeroed(), GFP_KERNEL)
            .map(ScratchBuf)
            .map_err(|_| Error::NoMem)
    }
}
