// SPDX-License-Identifier: GPL-2.0

//! `rlinear`: dm-linear's table line, status and behaviour, through the safe layer.
//!
//! Table line: `<start> <length> rlinear <device> <offset>`; sector `s` of the target maps to
//! sector `offset + s` of `device`.

use crate::dm::{
    lifetime::{Owner, Ref},
    target::parse_u64,
    Args, Bio, Callout, Ctr, CtrError, DmDev, MapResult, StatusType, StatusWriter, Target,
    TargetInfo,
};
use core::{fmt::Write, pin::Pin};
use kernel::{alloc::flags::GFP_KERNEL, c_str, prelude::*};

/// What a linear mapping needs in its IO path.
pub struct Mapping {
    dev: DmDev,
    start: u64,
}

/// An `rlinear` target.
///
/// Each bio in flight holds a [`Ref`] on the mapping, dropped when the bio completes
/// (interrupt context); the mapping is freed in the destructor after they drain.
pub struct Linear {
    mapping: Owner<Mapping>,
}

const ERR_ARGS: CtrError = CtrError::new(EINVAL, c_str!("Invalid argument count"));
const ERR_SECTOR: CtrError = CtrError::new(EINVAL, c_str!("Invalid device sector"));
const ERR_NOMEM: CtrError = CtrError::new(ENOMEM, c_str!("Cannot allocate linear context"));

#[vtable]
impl Target for Linear {
    const NAME: &'static CStr = c_str!("rlinear");
    const VERSION: [u32; 3] = [1, 4, 0];
    const FEATURES: u64 = (crate::dm::target::features::PASSES_INTEGRITY
        | crate::dm::target::features::NOWAIT
        | crate::dm::target::features::PASSES_CRYPTO);

    type PerBio = Ref<Mapping>;

    fn ctr(ctr: &mut Ctr<'_>, args: Args<'_>) -> Result<Pin<KBox<Self>>, CtrError> {
        if args.len() != 2 {
            return Err(ERR_ARGS);
        }
        let (Some(path), Some(offset)) = (args.get(0), args.get(1)) else {
            return Err(ERR_ARGS);
        };
        let start = parse_u64(offset).ok_or(ERR_SECTOR)?;
        let dev = ctr
            .get_device(path)
            .map_err(|e| CtrError::new(e, c_str!("Device lookup failed")))?;
        ctr.set_num_flush_bios(1);
        ctr.set_num_discard_bios(1);
        ctr.set_num_secure_erase_bios(1);
        ctr.set_num_write_zeroes_bios(1);
        ctr.set_flush_bypasses_map(true);
        let mapping = Owner::new(Mapping { dev, start }, GFP_KERNEL).map_err(|_| ERR_NOMEM)?;
        KBox::pin(Linear { mapping }, GFP_KERNEL).map_err(|_| ERR_NOMEM)
    }

    fn map<'a>(
        this: Pin<&Self>,
        ti: &TargetInfo,
        mut bio: Bio<'a, Ref<Mapping>>,
    ) -> MapResult<'a, Ref<Mapping>> {
        let m = &this.mapping;
        bio.set_dev(&m.dev);
        let sector = m.start + ti.offset(bio.sector());
        bio.set_sector(sector);
        MapResult::Remapped(bio, m.get())
    }

    fn status(
        this: Pin<&Self>,
        _ti: &TargetInfo,
        kind: StatusType,
        _flags: u32,
        out: &mut StatusWriter<'_>,
    ) {
        let m = &this.mapping;
        // The writer truncates like DMEMIT and never fails.
        let _ = match kind {
            StatusType::Info => Ok(()),
            StatusType::Table => write!(out, "{} {}", m.dev.name(), m.start),
            StatusType::Ima => write!(
                out,
                "target_name={},target_version={}.{}.{},device_name={},start={};",
                Self::NAME,
                Self::VERSION[0],
                Self::VERSION[1],
                Self::VERSION[2],
                m.dev.name(),
                m.start
            ),
        };
    }

    fn iterate_devices(this: Pin<&Self>, ti: &TargetInfo, callout: &mut Callout<'_>) -> i32 {
        callout.call(&this.mapping.dev, this.mapping.start, ti.len())
    }
}
