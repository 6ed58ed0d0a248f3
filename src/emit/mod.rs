//! Emitters: one module per output format, each a function from the tree (plus options) to
//! a writer. No emitter re-reads layers or re-sorts the tree.

pub mod compress;
pub mod cpio;
pub mod eif;
pub mod erofs;
pub mod fat;
pub mod gpt;
pub mod oci;
pub mod squashfs;
pub mod tar;
