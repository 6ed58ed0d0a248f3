//! stagebox: compose digest-pinned OCI images into reproducible artifacts.
//!
//! Layers, lowest first; imports run down only (`tests/it/architecture.rs` keeps it so, and
//! `docs/design.md` draws it): utilities ([`error`], [`date`], [`digest`], [`fsutil`],
//! [`progress`], [`tarfmt`], [`kernelfmt`], [`reference`](mod@reference)) → [`spec`] (box files) →
//! [`source`] (resolve, fetch, verify) → [`tree`] (flatten, normalize) → [`emit`] (one module
//! per output format) and [`measure`] (digests, manifest, staging of output files) →
//! [`boot`] (kernel, bootloaders, bootable outputs) → [`build`] (the plan and the output
//! table) → [`cmd`] (the commands) → `main.rs`, which parses arguments and calls one command.

pub mod boot;
pub mod build;
pub mod cmd;
pub mod date;
pub mod digest;
pub mod emit;
pub mod error;
pub mod fsutil;
pub mod kernelfmt;
pub mod measure;
pub mod progress;
pub mod reference;
pub mod source;
pub mod spec;
pub mod tarfmt;
pub mod tree;

pub use error::{Error, Result};
