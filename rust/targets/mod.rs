// SPDX-License-Identifier: GPL-2.0

//! The device-mapper targets of rthin, written in safe Rust over [`crate::dm`].

use crate::dm::Registration;
use kernel::prelude::*;

pub mod metadata;
pub mod rlinear;
pub mod thin;

/// Every target type the module registers; dropping it unregisters them.
pub struct Registrations {
    _rlinear: Registration<rlinear::Linear>,
    _pool: Registration<thin::pool::Pool>,
    _thin: Registration<thin::Thin>,
}

impl Registrations {
    /// Registers every target type of the module.
    pub fn new(module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            _rlinear: Registration::new(module)?,
            _pool: Registration::new(module)?,
            _thin: Registration::new(module)?,
        })
    }
}
