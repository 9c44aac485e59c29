// SPDX-License-Identifier: GPL-2.0

//! What 6.12's `KVec` lacks and rthin needs.

use kernel::prelude::*;

/// Removes and returns element `i` of `v`, moving the last element into its place (`None` if
/// `i` is out of bounds). Never allocates.
pub fn swap_remove<T>(v: &mut KVec<T>, i: usize) -> Option<T> {
    let len = v.len();
    if i >= len {
        return None;
    }
    v.as_mut_slice().swap(i, len - 1);
    // SAFETY: `len - 1 < len`, so the slot is initialised; shrinking the length first means
    // the value read out is owned only by the caller.
    unsafe {
        v.set_len(len - 1);
        Some(core::ptr::read(v.as_ptr().add(len - 1)))
    }
}
