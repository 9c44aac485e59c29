// SPDX-License-Identifier: GPL-2.0

//! rthin: device-mapper targets in Rust.
//!
//! The crate has three layers, each in its own folder under `rust/`:
//!
//! 1. [`dm`]: the safe abstraction layer over the kernel's C interfaces (target registration,
//!    bios, devices, locks, workqueues, object lifetimes). It is the only place where `unsafe`
//!    code and raw bindings appear.
//! 2. [`pdata`] (`rust/persistent-data/`): dm-thin's on-disk metadata structures, safe code over
//!    `core` only, also built as a host crate.
//! 3. [`targets`]: the targets themselves, safe Rust over the two layers below.
//!
//! The lock hierarchy of the whole module is written down once, in [`locking`].

// `PoolCore`'s initialiser has more fields than pin-init's macros expand within the default
// limit.
#![recursion_limit = "512"]

use kernel::prelude::*;

pub mod dm;
pub mod locking;
#[forbid(unsafe_code)]
#[path = "persistent-data/pdata/mod.rs"]
pub mod pdata;
#[forbid(unsafe_code)]
pub mod targets;

module! {
    type: RthinModule,
    name: "rthin",
    author: "rthin developers",
    description: "Thin provisioning and friends: device-mapper targets in Rust",
    license: "GPL",
}

struct RthinModule {
    _targets: targets::Registrations,
}

impl kernel::Module for RthinModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            _targets: targets::Registrations::new(module)?,
        })
    }
}
