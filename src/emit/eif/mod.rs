//! AWS Nitro Enclave images (EIF): a kernel, its command line, metadata, one or more ramdisks
//! and an optional signature, in the format `nitro-cli` reads, with PCRs equal to the ones
//! `nitro-cli describe-eif` and the Nitro hypervisor compute ([`crate::measure::pcr`]).
//!
//! Split as `format` (on-disk layout, metadata, a strict streaming reader, bzImage header
//! facts), `writer` (sections → bytes, laid out first), `ramdisk` (the nitro-cli style boot
//! and customer ramdisks), `sign` (signature section and its small CBOR/COSE encoding) and
//! `debug` (EIF → description and text dump for `inspect`).
//!
//! Unlike AWS's builder, nothing here reads the clock or `docker inspect`: metadata holds only
//! values the caller passes in (build time from SOURCE_DATE_EPOCH), and signatures use RFC 6979
//! nonces, so the same inputs give the same bytes, signed or not.

pub mod debug;
pub mod format;
pub mod ramdisk;
pub mod sign;
pub mod writer;

pub use writer::{measure, write, Data, Image};
