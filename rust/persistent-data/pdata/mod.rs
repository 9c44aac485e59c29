//! rthin's persistent-data layer: dm-thin's on-disk metadata format in safe
//! Rust, depending only on `core`.
//!
//! Layers, bottom up:
//! - [`crc32c`]: checksums (`dm_bm_checksum` convention);
//! - [`block`]: the [`block::BlockManager`] trait the environment
//!   implements (kernel: dm-bufio; host: memory or files), validators and
//!   error values ([`error`]);
//! - [`tm`]: transaction manager (shadowing) with the metadata space map;
//! - [`sm`]: space map common code and the data space map;
//! - [`btree`]: dm-btree compatible copy-on-write B-trees;
//! - [`thin`]: the thin-pool metadata API.
//!
//! The only dynamic memory used is [`block::BlockManager::Buf`] (two 4 KiB
//! buffers per open pool); everything else is fixed-size. Corrupt input
//! yields errors, never panics.
#![deny(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

pub mod block;
pub mod btree;
pub mod crc32c;
pub mod error;
pub mod sm;
pub mod thin;
pub mod tm;

pub use block::{Block, BlockManager, Validator, BLOCK_SIZE};
pub use error::{Error, Result};
pub use thin::{DeviceDetails, LookupResult, MappedRange, PoolMetadata};
