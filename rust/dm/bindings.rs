// SPDX-License-Identifier: GPL-2.0

//! Raw bindings for what `kernel::bindings` lacks: device-mapper, dm-bufio, dm-kcopyd, and
//! rthin's C helpers. Generated at build time by bindgen (see `Kbuild`); every type they refer
//! to that `kernel::bindings` already has is taken from there.

#![allow(
    dead_code,
    improper_ctypes,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unreachable_pub,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    rustdoc::all
)]

pub(crate) use kernel::bindings::*;
use kernel::ffi;

include!("bindings_generated.rs");
