// SPDX-License-Identifier: GPL-2.0

//! The persistent-data block manager over dm-bufio: how the module's metadata reaches disk.
//!
//! - A block is checked by its validator once after it is read: the buffer's tag records which
//!   validator passed, so later locks of the cached block skip the checksum.
//! - A write-locked block is stamped (location and checksum) when it is unlocked, so whenever
//!   no writer holds a dirty block, its buffer is what may go to disk. dm-bufio may write a
//!   block back while a writer still holds it; the writer's release marks it dirty again,
//!   so the stamped version is written before the commit that makes it reachable.
//! - `flush` writes every dirty buffer and then flushes the device cache; the transaction
//!   manager calls it before and after writing the superblock.

use crate::dm::bufio::{Client, ReadBuf, WriteBuf};
use crate::pdata::{Block, BlockManager, Error, Result, Validator, BLOCK_SIZE};
use core::{
    ops::{Deref, DerefMut},
    sync::atomic::Ordering,
};
use kernel::{alloc::flags::GFP_KERNEL, error, init::InPlaceInit, prelude::*};

/// Metadata devices above this many blocks are used only up to it (dm-thin's limit: 255 index
/// entries of 16 Ki blocks, about 16 GiB).
pub const MAX_METADATA_BLOCKS: u64 = 255 * (1 << 14);

/// pdata's block manager over a dm-bufio client of 4 KiB blocks.
pub struct BufioBm {
    client: Client<BLOCK_SIZE>,
    nr_blocks: u64,
}

impl BufioBm {
    /// Wraps a client; the device's size is read once, here.
    pub fn new(client: Client<BLOCK_SIZE>) -> Self {
        let nr_blocks = client.nr_blocks().min(MAX_METADATA_BLOCKS);
        Self { client, nr_blocks }
    }
}

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

fn validate(data: &Block, tag: &core::sync::atomic::AtomicU32, b: u64, v: Validator) -> Result<()> {
    let want = tag_of(v);
    if tag.load(Ordering::Acquire) != want {
        v.check(data, b)?;
        tag.store(want, Ordering::Release);
    }
    Ok(())
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

/// A write lock on a metadata block; stamped for writing when dropped.
pub struct WriteGuard<'a> {
    buf: WriteBuf<'a, BLOCK_SIZE>,
    v: Validator,
    loc: u64,
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
        self.nr_blocks
    }

    fn read_lock(&self, b: u64, v: Validator) -> Result<ReadGuard<'_>> {
        if b >= self.nr_blocks {
            return Err(Error::Inval);
        }
        let buf = self.client.read(b).map_err(from_kernel)?;
        validate(buf.data(), buf.tag(), b, v)?;
        Ok(ReadGuard { buf })
    }

    fn try_read_lock(&self, b: u64, v: Validator) -> Result<ReadGuard<'_>> {
        if b >= self.nr_blocks {
            return Err(Error::Inval);
        }
        let buf = self
            .client
            .try_read(b)
            .map_err(from_kernel)?
            .ok_or(Error::WouldBlock)?;
        validate(buf.data(), buf.tag(), b, v)?;
        Ok(ReadGuard { buf })
    }

    fn write_lock(&self, b: u64, v: Validator) -> Result<WriteGuard<'_>> {
        if b >= self.nr_blocks {
            return Err(Error::Inval);
        }
        let buf = self.client.write(b).map_err(from_kernel)?;
        validate(buf.data(), buf.tag(), b, v)?;
        Ok(WriteGuard { buf, v, loc: b })
    }

    fn write_lock_zero(&self, b: u64, v: Validator) -> Result<WriteGuard<'_>> {
        if b >= self.nr_blocks {
            return Err(Error::Inval);
        }
        let buf = self.client.new_block(b).map_err(from_kernel)?;
        Ok(WriteGuard { buf, v, loc: b })
    }

    fn flush(&self) -> Result<()> {
        self.client.write_dirty().map_err(from_kernel)
    }

    /// Drops every cached block, so the next reads come from disk: how an abort rolls back
    /// to the last commit. The existing client is reset, never recreated (seed 004).
    fn reset(&mut self) {
        self.client.reset();
    }

    fn alloc_buf(&self) -> Result<ScratchBuf> {
        // pdata asks for scratch buffers only when it opens or formats the metadata, in the
        // pool's constructor (process context, not an IO path).
        KBox::init(kernel::init::zeroed(), GFP_KERNEL)
            .map(ScratchBuf)
            .map_err(|_| Error::NoMem)
    }
}
