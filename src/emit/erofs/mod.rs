//! `[output.erofs]`: the rootfs as an EROFS image (Linux's read-only file system of choice
//! for composefs and Android system images), for firmware and verity-backed roots, with file
//! data stored flat or compressed (lz4, lz4hc, lzma). Read by the kernel and by erofs-utils
//! (`fsck.erofs`, `dump.erofs`).
//!
//! `format` holds the on-disk constants and records, `compress` turns file data into
//! compressed extents and their indexes, `writer` lays out and writes the image.

pub mod compress;
pub mod format;
pub mod writer;

pub use format::BLOCK;
pub use writer::{write, write_compressed, Options};
