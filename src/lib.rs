//! stagebox: compose digest-pinned OCI images into reproducible artifacts.
//!
//! Data flows one way: [`spec`] (box files) → [`source`] (resolve, fetch, verify) →
//! [`tree`] (flatten, normalize) → [`emit`] (one module per output format), with
//! [`measure`] (digests, manifest) beside the emitters. [`build`] and [`inspect`] are the
//! commands that wire them together; `main.rs` only parses arguments.

pub mod bootloader;
pub mod build;
pub mod check;
pub mod diff;
pub mod digest;
pub mod disk;
pub mod emit;
pub mod enclave;
pub mod error;
pub mod fsutil;
pub mod inspect;
pub mod isoboot;
pub mod kernel;
pub mod lock;
pub mod measure;
pub mod package;
pub mod progress;
pub mod run;
pub mod source;
pub mod spec;
pub mod tarfmt;
pub mod tree;

pub use error::{Error, Result};
