//! stagebox: compose digest-pinned OCI images into reproducible artifacts.
//!
//! Data flows one way: [`spec`] (box files) → [`source`] (resolve, fetch, verify) →
//! [`tree`] (flatten, normalize) → [`emit`] (one module per output format), with
//! [`measure`] (digests, manifest) beside the emitters. [`build`] and [`inspect`] are the
//! commands that wire them together; `main.rs` only parses arguments.

pub mod boot;
pub mod build;
pub mod cmd;
pub mod digest;
pub mod emit;
pub mod error;
pub mod fsutil;
pub mod measure;
pub mod progress;
pub mod reference;
pub mod source;
pub mod spec;
pub mod tarfmt;
pub mod tree;

pub use error::{Error, Result};
