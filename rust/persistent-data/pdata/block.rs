//! Block manager interface, block validators and little-endian helpers.
//!
//! Metadata lives in 4 KiB blocks. The environment (the kernel module over
//! dm-bufio, or the host over memory/files) implements [`BlockManager`];
//! everything above it is written against that trait only.

use super::crc32c::dm_checksum;
use super::error::{Error, Result};
use core::ops::{Deref, DerefMut};

/// Size of a metadata block in bytes.
pub const BLOCK_SIZE: usize = 4096;
/// Size of a metadata block in 512-byte sectors.
pub const BLOCK_SECTORS: u32 = 8;

/// The contents of one metadata block.
pub type Block = [u8; BLOCK_SIZE];

/// Salt xored into the superblock checksum.
pub const SUPERBLOCK_CSUM_XOR: u32 = 160_774;
/// Salt xored into the btree node checksum.
pub const BTREE_CSUM_XOR: u32 = 121_107;
/// Salt xored into the space map bitmap checksum.
pub const BITMAP_CSUM_XOR: u32 = 240_779;
/// Salt xored into the metadata space map index checksum.
pub const INDEX_CSUM_XOR: u32 = 160_478;

/// Magic number of the thin-pool superblock.
pub const THIN_MAGIC: u64 = 27_022_010;

/// Kind of a block, selecting how it is checked after reading and
/// stamped (location and checksum) before writing.
///
/// All four checked kinds keep their checksum in bytes 0..4 (covering bytes
/// 4..4096) and their own location in bytes 8..16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// No checking at all (raw access).
    None,
    /// The thin-pool superblock.
    Superblock,
    /// A btree node.
    BtreeNode,
    /// A space map bitmap block.
    Bitmap,
    /// The metadata space map's index block.
    Index,
}

impl Validator {
    fn salt(self) -> Option<u32> {
        match self {
            Validator::None => None,
            Validator::Superblock => Some(SUPERBLOCK_CSUM_XOR),
            Validator::BtreeNode => Some(BTREE_CSUM_XOR),
            Validator::Bitmap => Some(BITMAP_CSUM_XOR),
            Validator::Index => Some(INDEX_CSUM_XOR),
        }
    }

    /// Checks a block just read from location `loc`.
    ///
    /// Returns [`Error::WrongBlock`] if the block names another location and
    /// [`Error::Corrupt`] for a checksum mismatch or an impossible header.
    pub fn check(self, data: &Block, loc: u64) -> Result<()> {
        let Some(salt) = self.salt() else {
            return Ok(());
        };
        if get_u64(data, 8)? != loc {
            return Err(Error::WrongBlock);
        }
        if self == Validator::Superblock && get_u64(data, 32)? != THIN_MAGIC {
            return Err(Error::Corrupt);
        }
        let body = data.get(4..).ok_or(Error::Corrupt)?;
        if dm_checksum(body, salt) != get_u32(data, 0)? {
            return Err(Error::Corrupt);
        }
        if self == Validator::BtreeNode {
            super::btree::check_node_header(data)?;
        }
        Ok(())
    }

    /// Stamps location `loc` and the checksum into a block about to be
    /// written.
    pub fn prepare_for_write(self, data: &mut Block, loc: u64) {
        let Some(salt) = self.salt() else {
            return;
        };
        let _ = put_u64(data, 8, loc);
        let csum = match data.get(4..) {
            Some(body) => dm_checksum(body, salt),
            None => return,
        };
        let _ = put_u32(data, 0, csum);
    }
}

/// Block manager: gives locked access to the 4 KiB blocks of the metadata
/// device.
///
/// Locks are RAII guards; dropping a guard unlocks. A write guard marks the
/// block dirty. Implementations must:
/// - run [`Validator::check`] when a block is read from the device (a block
///   already cached under another non-`None` validator may be rejected with
///   [`Error::Inval`]);
/// - run [`Validator::prepare_for_write`] (with the validator of the most
///   recent lock) on every dirty block before it reaches the device;
/// - return [`Error::Inval`] for locations `>= nr_blocks()` and
///   [`Error::Busy`] when a block is locked in a conflicting way.
///
/// Dirty blocks may reach the device at any time; only [`BlockManager::flush`]
/// orders them (everything dirty is durable when it returns).
pub trait BlockManager {
    /// Guard of a read-locked block.
    type ReadGuard<'a>: Deref<Target = Block>
    where
        Self: 'a;
    /// Guard of a write-locked block.
    type WriteGuard<'a>: DerefMut<Target = Block>
    where
        Self: 'a;
    /// An owned, zero-initialised 4 KiB scratch buffer not tied to any
    /// location (the only dynamic memory this layer asks for).
    type Buf: DerefMut<Target = Block>;

    /// Number of blocks on the metadata device.
    fn nr_blocks(&self) -> u64;
    /// Read-locks block `b`, reading and checking it if not cached.
    fn read_lock(&self, b: u64, v: Validator) -> Result<Self::ReadGuard<'_>>;
    /// Like [`BlockManager::read_lock`] but fails with
    /// [`Error::WouldBlock`] instead of doing I/O. It need not be
    /// free of sleeping: the kernel's (dm-bufio) takes a semaphore
    /// and waits for a read of the block already in flight.
    fn try_read_lock(&self, b: u64, v: Validator) -> Result<Self::ReadGuard<'_>>;
    /// Write-locks block `b`, reading and checking it if not cached.
    fn write_lock(&self, b: u64, v: Validator) -> Result<Self::WriteGuard<'_>>;
    /// Write-locks block `b` without reading it; the contents are zeroed.
    fn write_lock_zero(&self, b: u64, v: Validator) -> Result<Self::WriteGuard<'_>>;
    /// Writes every dirty block and waits until they are durable.
    fn flush(&self) -> Result<()>;
    /// Allocates a zeroed scratch buffer, [`Error::NoMem`] on failure.
    fn alloc_buf(&self) -> Result<Self::Buf>;
    /// Drops every cached block, so that later locks read from the device: how an abort
    /// rolls back. An environment without a cache of its own has nothing to do.
    fn reset(&mut self) {}
}

/// Reads a little-endian u32 at `off`.
pub fn get_u32(b: &[u8], off: usize) -> Result<u32> {
    let end = off.checked_add(4).ok_or(Error::Corrupt)?;
    let s = b.get(off..end).ok_or(Error::Corrupt)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Ok(u32::from_le_bytes(a))
}

/// Reads a little-endian u64 at `off`.
pub fn get_u64(b: &[u8], off: usize) -> Result<u64> {
    let end = off.checked_add(8).ok_or(Error::Corrupt)?;
    let s = b.get(off..end).ok_or(Error::Corrupt)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// Writes a little-endian u32 at `off`.
pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) -> Result<()> {
    let end = off.checked_add(4).ok_or(Error::Corrupt)?;
    b.get_mut(off..end)
        .ok_or(Error::Corrupt)?
        .copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// Writes a little-endian u64 at `off`.
pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) -> Result<()> {
    let end = off.checked_add(8).ok_or(Error::Corrupt)?;
    b.get_mut(off..end)
        .ok_or(Error::Corrupt)?
        .copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// Borrows `len` bytes at `off`.
pub(crate) fn sub(b: &[u8], off: usize, len: usize) -> Result<&[u8]> {
    let end = off.checked_add(len).ok_or(Error::Corrupt)?;
    b.get(off..end).ok_or(Error::Corrupt)
}

/// Mutably borrows `len` bytes at `off`.
pub(crate) fn sub_mut(b: &mut [u8], off: usize, len: usize) -> Result<&mut [u8]> {
    let end = off.checked_add(len).ok_or(Error::Corrupt)?;
    b.get_mut(off..end).ok_or(Error::Corrupt)
}
