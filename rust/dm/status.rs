// SPDX-License-Identifier: GPL-2.0

//! A bounded writer into the result buffer that device-mapper hands to `status` and `message`.

use core::fmt;

/// Writes text into dm's result buffer with `DMEMIT`'s rules: output past the end of the
/// buffer is cut off silently, and the text is always NUL-terminated. dm notices a full
/// buffer by itself and asks again with a larger one.
///
/// # Invariants
///
/// `buf` is not empty, `pos < buf.len()`, and `buf[pos]` is NUL.
pub struct StatusWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> StatusWriter<'a> {
    /// Creates a writer over `buf`, emptying it. Returns `None` for an empty buffer, which
    /// cannot even hold the terminating NUL.
    pub fn new(buf: &'a mut [u8]) -> Option<Self> {
        *buf.first_mut()? = 0;
        // INVARIANT: `buf` is not empty and its first byte is NUL.
        Some(Self { buf, pos: 0 })
    }

    /// Number of bytes written so far, the terminating NUL not counted.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// The text written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.pos).unwrap_or_default()
    }
}

impl fmt::Write for StatusWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - 1 - self.pos;
        let n = s.len().min(room);
        if let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.pos..self.pos + n),
            s.as_bytes().get(..n),
        ) {
            dst.copy_from_slice(src);
            self.pos += n;
        }
        // INVARIANT: `pos <= buf.len() - 1`, and the byte at `pos` is made NUL.
        if let Some(end) = self.buf.get_mut(self.pos) {
            *end = 0;
        }
        Ok(())
    }
}
