//! Host block managers (memory and file backed), for tests and tools.
//!
//! [`HostBm`] caches blocks in memory, validates them on first read and
//! stamps checksums when writing back on [`BlockManager::flush`]. What is
//! not flushed is lost when the block manager is dropped, which is how the
//! tests simulate a crash.

pub mod check;
pub mod fuzz;

use crate::pdata::block::{Block, BlockManager, Validator, BLOCK_SIZE};
use crate::pdata::error::{Error, Result};
use std::boxed::Box;
use std::cell::{Cell, Ref, RefCell, RefMut};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::vec::Vec;

/// Where a [`HostBm`] keeps its durable blocks.
pub trait Backing {
    /// Reads block `b` (never-written blocks read as zeroes).
    fn read(&self, b: u64, out: &mut Block) -> Result<()>;
    /// Writes block `b`.
    fn write(&self, b: u64, data: &Block) -> Result<()>;
    /// Makes previous writes durable.
    fn sync(&self) -> Result<()>;
}

/// An in-memory "disk" that can be shared (cloned) so a test can keep it
/// across a simulated crash.
#[derive(Clone, Default)]
pub struct MemDisk(Rc<RefCell<HashMap<u64, Box<Block>>>>);

impl MemDisk {
    /// A new empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies block `b` out.
    pub fn get(&self, b: u64) -> Block {
        self.0
            .borrow()
            .get(&b)
            .map(|x| **x)
            .unwrap_or([0; BLOCK_SIZE])
    }

    /// Overwrites block `b` (for corruption tests).
    pub fn set(&self, b: u64, data: &Block) {
        self.0.borrow_mut().insert(b, Box::new(*data));
    }

    /// Highest written block + 1.
    pub fn len_blocks(&self) -> u64 {
        self.0.borrow().keys().max().map(|m| m + 1).unwrap_or(0)
    }

    /// Deep copy.
    pub fn snapshot(&self) -> MemDisk {
        MemDisk(Rc::new(RefCell::new(self.0.borrow().clone())))
    }
}

impl Backing for MemDisk {
    fn read(&self, b: u64, out: &mut Block) -> Result<()> {
        *out = self.get(b);
        Ok(())
    }
    fn write(&self, b: u64, data: &Block) -> Result<()> {
        self.set(b, data);
        Ok(())
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

/// A file (or block device) used as the metadata device.
pub struct FileDisk(pub File);

impl Backing for FileDisk {
    fn read(&self, b: u64, out: &mut Block) -> Result<()> {
        let off = b.checked_mul(BLOCK_SIZE as u64).ok_or(Error::Inval)?;
        let mut done = 0;
        while done < BLOCK_SIZE {
            let n = self
                .0
                .read_at(&mut out[done..], off + done as u64)
                .map_err(|_| Error::Io)?;
            if n == 0 {
                out[done..].fill(0);
                break;
            }
            done += n;
        }
        Ok(())
    }
    fn write(&self, b: u64, data: &Block) -> Result<()> {
        let off = b.checked_mul(BLOCK_SIZE as u64).ok_or(Error::Inval)?;
        self.0.write_all_at(data, off).map_err(|_| Error::Io)
    }
    fn sync(&self) -> Result<()> {
        self.0.sync_data().map_err(|_| Error::Io)
    }
}

#[derive(Default)]
struct Slot {
    data: Option<Box<Block>>,
    validator: Option<Validator>,
    dirty: bool,
}

/// Caching block manager over a [`Backing`].
pub struct HostBm<D: Backing> {
    disk: D,
    nr_blocks: Cell<u64>,
    slots: Vec<RefCell<Slot>>,
    dirty: RefCell<Vec<u64>>,
    reads: Cell<u64>,
    writes: Cell<u64>,
    locks: Cell<u64>,
}

impl<D: Backing> HostBm<D> {
    /// A block manager of `nr_blocks` blocks that can later be grown up to
    /// `capacity` blocks with [`HostBm::set_nr_blocks`].
    pub fn new(disk: D, nr_blocks: u64, capacity: u64) -> Self {
        let cap = capacity.max(nr_blocks);
        HostBm {
            disk,
            nr_blocks: Cell::new(nr_blocks),
            slots: (0..cap).map(|_| RefCell::new(Slot::default())).collect(),
            dirty: RefCell::new(Vec::new()),
            reads: Cell::new(0),
            writes: Cell::new(0),
            locks: Cell::new(0),
        }
    }

    /// Grows (or shrinks) the device, within the capacity.
    pub fn set_nr_blocks(&self, n: u64) -> Result<()> {
        if n > self.slots.len() as u64 {
            return Err(Error::NoSpace);
        }
        self.nr_blocks.set(n);
        Ok(())
    }

    /// Drops the cache (losing unflushed writes, like a crash) and returns
    /// the backing store.
    pub fn into_disk(self) -> D {
        self.disk
    }

    /// The backing store.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// (blocks read from, blocks written to) the backing store so far.
    pub fn io_counts(&self) -> (u64, u64) {
        (self.reads.get(), self.writes.get())
    }

    /// Writes back (without syncing) each dirty, unlocked block for which
    /// `pick` returns true, as a cache under memory pressure might.
    pub fn writeback_some(&self, pick: &mut dyn FnMut(u64) -> bool) -> Result<()> {
        let list: Vec<u64> = self.dirty.borrow().clone();
        for b in list {
            if pick(b) {
                self.write_back(b)?;
            }
        }
        Ok(())
    }

    /// Drops clean cached blocks so later reads go to the backing store.
    pub fn drop_clean(&self) {
        for s in &self.slots {
            if let Ok(mut s) = s.try_borrow_mut() {
                if !s.dirty {
                    s.data = None;
                    s.validator = None;
                }
            }
        }
    }

    fn slot(&self, b: u64) -> Result<&RefCell<Slot>> {
        if b >= self.nr_blocks.get() {
            return Err(Error::Inval);
        }
        self.slots.get(b as usize).ok_or(Error::Inval)
    }

    fn write_back(&self, b: u64) -> Result<()> {
        // Not `slot()`: a block dirtied before the device shrank is still
        // written back.
        let cell = self.slots.get(b as usize).ok_or(Error::Inval)?;
        let mut s = cell.try_borrow_mut().map_err(|_| Error::Busy)?;
        if !s.dirty {
            return Ok(());
        }
        let v = s.validator.unwrap_or(Validator::None);
        if let Some(d) = s.data.as_deref_mut() {
            v.prepare_for_write(d, b);
            self.disk.write(b, d)?;
            self.writes.set(self.writes.get() + 1);
        }
        s.dirty = false;
        self.dirty.borrow_mut().retain(|&x| x != b);
        Ok(())
    }

    /// Block locks taken so far (read, write and new-block locks): what a cached
    /// block manager pays per metadata operation, as dm-bufio does in the kernel.
    pub fn lock_count(&self) -> u64 {
        self.locks.get()
    }

    /// Makes sure block `b` is cached and checked with `v`.
    fn load(&self, b: u64, v: Validator, can_block: bool) -> Result<()> {
        self.locks.set(self.locks.get() + 1);
        let cell = self.slot(b)?;
        let mut s = cell.try_borrow_mut().map_err(|_| Error::Busy);
        let s = match s.as_mut() {
            Ok(s) => s,
            // Locked by someone else: it is loaded; check the validator.
            Err(_) => {
                let s = cell.try_borrow().map_err(|_| Error::Busy)?;
                return match s.validator {
                    Some(cv) if cv == v || v == Validator::None => Ok(()),
                    _ if s.dirty => Ok(()),
                    _ => match s.data.as_deref() {
                        Some(d) => v.check(d, b),
                        None => Err(Error::Io),
                    },
                };
            }
        };
        match s.data.as_deref() {
            None => {
                if !can_block {
                    return Err(Error::WouldBlock);
                }
                let mut d = Box::new([0u8; BLOCK_SIZE]);
                self.disk.read(b, &mut d)?;
                self.reads.set(self.reads.get() + 1);
                v.check(&d, b)?;
                s.data = Some(d);
                s.validator = Some(v);
            }
            Some(d) => {
                if v != Validator::None && s.validator != Some(v) {
                    if !s.dirty {
                        v.check(d, b)?;
                    }
                    s.validator = Some(v);
                }
            }
        }
        Ok(())
    }
}

impl<D: Backing> BlockManager for HostBm<D> {
    type ReadGuard<'a>
        = Ref<'a, Block>
    where
        Self: 'a;
    type WriteGuard<'a>
        = RefMut<'a, Block>
    where
        Self: 'a;
    type Buf = Box<Block>;

    fn nr_blocks(&self) -> u64 {
        self.nr_blocks.get()
    }

    fn read_lock(&self, b: u64, v: Validator) -> Result<Ref<'_, Block>> {
        self.load(b, v, true)?;
        let s = self.slot(b)?.try_borrow().map_err(|_| Error::Busy)?;
        Ref::filter_map(s, |s| s.data.as_deref()).map_err(|_| Error::Io)
    }

    fn try_read_lock(&self, b: u64, v: Validator) -> Result<Ref<'_, Block>> {
        self.load(b, v, false)?;
        let s = self.slot(b)?.try_borrow().map_err(|_| Error::WouldBlock)?;
        Ref::filter_map(s, |s| s.data.as_deref()).map_err(|_| Error::Io)
    }

    fn write_lock(&self, b: u64, v: Validator) -> Result<RefMut<'_, Block>> {
        self.load(b, v, true)?;
        let mut s = self.slot(b)?.try_borrow_mut().map_err(|_| Error::Busy)?;
        if !s.dirty {
            s.dirty = true;
            self.dirty.borrow_mut().push(b);
        }
        s.validator = Some(v);
        RefMut::filter_map(s, |s| s.data.as_deref_mut()).map_err(|_| Error::Io)
    }

    fn write_lock_zero(&self, b: u64, v: Validator) -> Result<RefMut<'_, Block>> {
        self.locks.set(self.locks.get() + 1);
        let mut s = self.slot(b)?.try_borrow_mut().map_err(|_| Error::Busy)?;
        match s.data.as_deref_mut() {
            Some(d) => d.fill(0),
            None => s.data = Some(Box::new([0u8; BLOCK_SIZE])),
        }
        if !s.dirty {
            s.dirty = true;
            self.dirty.borrow_mut().push(b);
        }
        s.validator = Some(v);
        RefMut::filter_map(s, |s| s.data.as_deref_mut()).map_err(|_| Error::Io)
    }

    fn flush(&self) -> Result<()> {
        let list: Vec<u64> = core::mem::take(&mut *self.dirty.borrow_mut());
        for &b in &list {
            // Re-add so write_back finds it; it removes it again.
            self.dirty.borrow_mut().push(b);
            self.write_back(b)?;
        }
        self.disk.sync()
    }

    fn alloc_buf(&self) -> Result<Box<Block>> {
        Ok(Box::new([0u8; BLOCK_SIZE]))
    }
}

/// A memory-backed block manager.
pub type MemBm = HostBm<MemDisk>;
/// A file-backed block manager.
pub type FileBm = HostBm<FileDisk>;

impl MemBm {
    /// A memory block manager over a fresh disk.
    pub fn mem(nr_blocks: u64) -> Self {
        HostBm::new(MemDisk::new(), nr_blocks, nr_blocks)
    }
}

impl FileBm {
    /// Opens a file as a metadata device of `nr_blocks` blocks.
    pub fn file(f: File, nr_blocks: u64) -> Self {
        HostBm::new(FileDisk(f), nr_blocks, nr_blocks)
    }
}
