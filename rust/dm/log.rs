// SPDX-License-Identifier: GPL-2.0

//! Kernel log lines in device-mapper's format: `device-mapper: <target>: <message>`, as the
//! C targets print with `DMERR`, `DMWARN` and `DMINFO`.

use super::bindings;
use core::fmt;
use kernel::str::CStr;

/// Log levels used by device-mapper targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// `KERN_ERR`, as `DMERR`.
    Err,
    /// `KERN_WARNING`, as `DMWARN`.
    Warn,
    /// `KERN_INFO`, as `DMINFO`.
    Info,
}

/// Prints one line `device-mapper: <prefix>: <args>` at `level`.
pub fn print(level: Level, prefix: &CStr, args: fmt::Arguments<'_>) {
    let fmt: &[u8] = match level {
        Level::Err => b"\x013device-mapper: %s: %pA\n\0",
        Level::Warn => b"\x014device-mapper: %s: %pA\n\0",
        Level::Info => b"\x016device-mapper: %s: %pA\n\0",
    };
    // SAFETY: `fmt` is a NUL-terminated format string whose two conversions are `%s`, matched by
    // the NUL-terminated `prefix`, and `%pA`, matched by a pointer to a live `fmt::Arguments`
    // (the kernel's printf hands it back to Rust's formatter while `_printk` runs).
    unsafe {
        bindings::_printk(
            fmt.as_ptr().cast(),
            prefix.as_char_ptr(),
            core::ptr::from_ref(&args).cast::<kernel::ffi::c_void>(),
        );
    }
}

/// Logs an error as `DMERR` does: `dm_err!(c_str!("rlinear"), "bad {}", x)`.
#[macro_export]
macro_rules! dm_err {
    ($prefix:expr, $($arg:tt)+) => {
        $crate::dm::log::print($crate::dm::log::Level::Err, $prefix, format_args!($($arg)+))
    };
}

/// Logs a warning as `DMWARN` does.
#[macro_export]
macro_rules! dm_warn {
    ($prefix:expr, $($arg:tt)+) => {
        $crate::dm::log::print($crate::dm::log::Level::Warn, $prefix, format_args!($($arg)+))
    };
}

/// Logs information as `DMINFO` does.
#[macro_export]
macro_rules! dm_info {
    ($prefix:expr, $($arg:tt)+) => {
        $crate::dm::log::print($crate::dm::log::Level::Info, $prefix, format_args!($($arg)+))
    };
}
