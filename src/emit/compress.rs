//! Compression of tar and cpio streams at fixed settings, so the same input always gives the
//! same bytes: gzip level 6 with no name and mtime 0 (as `gzip -n`), zstd level 3 with a
//! checksum. Changing a level or the backend changes every pinned digest.

use crate::spec::Compression;
use std::io::{self, Write};

/// gzip level: the `gzip` default, what initramfs and package tools use.
pub const GZIP_LEVEL: u32 = 6;
/// zstd level: the `zstd` CLI default.
pub const ZSTD_LEVEL: i32 = 3;

/// A writer that compresses into `W`; call [`Encoder::finish`] to get `W` back.
pub enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub fn new(c: Compression, w: W) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Encoder::None(w),
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new().mtime(0).operating_system(3).write(w, flate2::Compression::new(GZIP_LEVEL)),
            ),
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)?;
                e.include_checksum(true)?;
                Encoder::Zstd(e)
            }
            Compression::Xz => {
                return Err(io::Error::new(io::ErrorKind::Unsupported, "xz compression is only offered for initramfs outputs"))
            }
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}
