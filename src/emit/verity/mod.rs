//! dm-verity hash trees: the hash device `veritysetup format` writes for a finished data
//! image (format version 1, sha256, 4096-byte data and hash blocks, superblock at offset 0),
//! and the root hash that names the whole image.
//!
//! `format` holds the on-disk superblock and the tree geometry; `writer` reads the data image
//! once, block by block (never whole into memory), keeps only the hash levels (1/128 of the
//! data) and writes the hash device. Hand-written: the format is a few dozen lines, and no
//! maintained crate writes it (the Rust dm-verity crates drive the kernel's device mapper or
//! parse Android images). Salt and UUID are derived from the data image's digest, never
//! random, so the same image always gets the same hash device and root hash
//! ([`derive_salt_uuid`]).

pub mod format;
pub mod writer;

pub use writer::{derive_salt_uuid, write, Verity};
