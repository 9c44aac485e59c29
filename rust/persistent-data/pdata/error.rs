//! Error values. Every error carries the errno the kernel side returns.

/// An error from the persistent-data layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// I/O error from the underlying device (`EIO`).
    Io,
    /// Out of memory (`ENOMEM`).
    NoMem,
    /// Out of space on the metadata or data device (`ENOSPC`).
    NoSpace,
    /// Invalid argument or inconsistent request (`EINVAL`).
    Inval,
    /// Key or device not present (`ENODATA`).
    NoData,
    /// The operation would have to block for I/O (`EWOULDBLOCK`).
    WouldBlock,
    /// Checksum mismatch or structurally corrupt block (`EILSEQ`).
    Corrupt,
    /// A block claims a location other than the one it was read from (`ENOTBLK`).
    WrongBlock,
    /// The object already exists (`EEXIST`).
    Exists,
    /// Resource busy, e.g. a block locked twice or a held root in place (`EBUSY`).
    Busy,
    /// Metadata opened read-only or in failure mode (`EROFS`).
    ReadOnly,
    /// Unsupported feature or parameter (`EOPNOTSUPP`).
    NotSupported,
}

impl Error {
    /// The (positive) errno value for this error, as used by Linux.
    pub fn errno(self) -> i32 {
        match self {
            Error::Io => 5,
            Error::NoMem => 12,
            Error::NoSpace => 28,
            Error::Inval => 22,
            Error::NoData => 61,
            Error::WouldBlock => 11,
            Error::Corrupt => 84,
            Error::WrongBlock => 15,
            Error::Exists => 17,
            Error::Busy => 16,
            Error::ReadOnly => 30,
            Error::NotSupported => 95,
        }
    }
}

/// Result type of the persistent-data layer.
pub type Result<T> = core::result::Result<T, Error>;
