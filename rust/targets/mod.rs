// SPDX-License-Identifier: GPL-2.0

//! The device-mapper targets of rthin, written in safe Rust over [`crate::dm`].

use crate::dm::Registration;
use kernel::prelude::*;

pub mod rlinear;

/// Every target type the module registers; dropping it unregisters them.
pub struct Registrations {
    _rlinear: Registration<rlinear::Linear>,
}

impl Registrations {
    /// Registers every target type of the module.
    pub fn new(module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            _rlinear: Registration::new(module)?,
        })
    }
}
