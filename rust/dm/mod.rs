// SPDX-License-Identifier: GPL-2.0

//! Safe abstractions over device-mapper and the kernel services its targets use.
//!
//! This is the only part of rthin that contains `unsafe` code or touches raw bindings.
//! Everything above it (`persistent-data`, the targets) is safe Rust.
//!
//! C headers: [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h),
//! [`include/linux/dm-bufio.h`](srctree/include/linux/dm-bufio.h),
//! [`include/linux/dm-kcopyd.h`](srctree/include/linux/dm-kcopyd.h).

mod bindings;

pub mod bdev;
pub mod bio;
pub mod bufio;
pub mod device;
pub mod kcopyd;
pub mod kvec;
pub mod lifetime;
pub mod log;
pub mod status;
pub mod sync;
pub mod target;
pub mod workqueue;

pub use bdev::BlockDevice;
pub use bio::{Bio, BioList, BlkStatus, Op, OwnedBio};
pub use device::DmDev;
pub use status::StatusWriter;
pub use target::{
    Args, Callout, Ctr, CtrError, EndIo, MapResult, QueueLimits, Registration, StatusType,
    TableRef, Target, TargetInfo,
};
