// SPDX-License-Identifier: GPL-2.0

//! The device-mapper targets of rthin, written in safe Rust over [`crate::dm`].

use crate::dm::{self, Registration};
use crate::{dm_err, dm_info};
use kernel::{c_str, prelude::*, str::CStr};

pub mod metadata;
pub mod rlinear;
pub mod thin;

/// Every target type the module registers; dropping it unregisters them.
pub struct Registrations {
    _rlinear: Registration<rlinear::Linear>,
    _pool: Registration<thin::pool::Pool>,
    _thin: Registration<thin::Thin>,
}

/// dm-thin's names for the thin targets, taken with the `dm_thin_names` module parameter.
const DM_THIN_POOL: &CStr = c_str!("thin-pool");
const DM_THIN: &CStr = c_str!("thin");

impl Registrations {
    /// Registers every target type of the module: the thin targets as `rthin-pool` and
    /// `rthin`, or, with `dm_thin_names=1`, as dm-thin's `thin-pool` and `thin` (with
    /// dm-thin's version, which they carry anyway), so that lvm2 and other dm-thin users
    /// drive rthin without knowing it. That fails, and the module does not load, if dm-thin's
    /// targets are registered already (`dm_register_target` returns `EBUSY` for a name taken).
    pub fn new(module: &'static ThisModule) -> Result<Self> {
        let rlinear = Registration::new(module)?;
        if !dm::target::dm_thin_names() {
            return Ok(Self {
                _rlinear: rlinear,
                _pool: Registration::new(module)?,
                _thin: Registration::new(module)?,
            });
        }
        let named = |e: Error, name: &CStr| {
            if e == EBUSY {
                dm_err!(
                    thin::pool::PREFIX,
                    "dm_thin_names=1: a target named '{}' is registered already (dm-thin's \
                     dm_thin_pool module is loaded?): remove every dm-thin device and unload it \
                     (modprobe -r dm_thin_pool), or load rthin without dm_thin_names to get \
                     rthin-pool and rthin",
                    name.to_str().unwrap_or("?")
                );
            }
            e
        };
        let pool =
            Registration::new_as(module, DM_THIN_POOL).map_err(|e| named(e, DM_THIN_POOL))?;
        let thin = Registration::new_as(module, DM_THIN).map_err(|e| named(e, DM_THIN))?;
        dm_info!(
            thin::pool::PREFIX,
            "dm_thin_names=1: the thin targets are registered as thin-pool and thin"
        );
        Ok(Self {
            _rlinear: rlinear,
            _pool: pool,
            _thin: thin,
        })
    }
}
