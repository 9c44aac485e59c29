//! Host build of rthin's persistent-data layer.
//!
//! The real code lives in `pdata/` and is shared verbatim with the kernel
//! module, which includes `pdata/mod.rs` as a plain module. This crate root
//! only adds host conveniences (block managers over memory and files) behind
//! the `std` feature.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "std"))]
extern crate std;

#[path = "pdata/mod.rs"]
mod pdata;
pub use pdata::*;

#[cfg(feature = "std")]
#[path = "host/mod.rs"]
pub mod host;
