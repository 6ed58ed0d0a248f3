//! Emitters: one module per output format, each a function from the tree (plus options) to
//! a writer; the pieces several share (`compress`, `gpt`, `fat`, `verity`); and `readback`,
//! which reads every format back for `inspect` and `diff`. Emitters never re-sort the tree
//! and read file contents only through it, from its spill files (`Tree::open`).

pub mod compress;
pub mod cpio;
pub mod dirtree;
pub mod eif;
pub mod erofs;
pub mod fat;
pub mod gpt;
pub mod grub;
pub mod iso;
pub mod oci;
pub mod pkg;
pub mod readback;
pub mod qcow2;
pub mod squashfs;
pub mod tar;
pub mod verity;

use std::io::{self, Write};

/// A writer that counts what passes through.
pub struct Counter<W> {
    pub inner: W,
    pub n: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
