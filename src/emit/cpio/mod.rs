//! Initramfs archives: the flattened tree as a newc cpio, as the Linux kernel unpacks it at
//! boot (`init/initramfs.c`), optionally behind uncompressed early archives (CPU microcode).
//!
//! Entries come in the tree's walk order (bytewise, parents first), inode numbers and link
//! counts are computed from the tree, never taken from a host file system, hardlink groups carry
//! their data once (on the last path, as GNU cpio does), and every mtime is clamped to
//! SOURCE_DATE_EPOCH. Device nodes, FIFOs and symlinks are stored as such; newc has no room
//! for xattrs, so they are dropped (as GNU cpio and the kernel's own `gen_init_cpio` do).
//!
//! The first entry is `.`, the root directory, as `find . | cpio -o -H newc` writes it: the
//! kernel applies its mode, owner and mtime to the rootfs root, which otherwise keeps the
//! tmpfs default (01777). Other names have no `./` prefix (the form `gen_init_cpio` and
//! `bsdtar --format newc` use; the kernel, GNU cpio and libarchive read both).
//!
//! The format is small enough to write here rather than through the `cpio` crate, whose
//! builder takes names as `&str` (so no non-UTF-8 paths, which a rootfs may hold) and leaves
//! inode and link bookkeeping to the caller anyway. Split as `format` (on-disk layout and a
//! strict reader), `writer` (tree → bytes, lay out then write) and `debug` (bytes → text).
//! File bytes are copied in archive order from the tree's spill files.

pub mod debug;
pub mod format;
pub mod writer;

pub use writer::{plan, write};

use std::io::{self, Read, Write};

/// Copy one prepended archive (e.g. an early microcode cpio) and pad it with zeros to a
/// multiple of 4 bytes, so the next archive starts where the kernel looks for a header (it
/// skips zero padding in 4-byte steps between concatenated archives). Returns bytes written.
pub fn write_prepend(r: &mut impl Read, w: &mut impl Write) -> io::Result<u64> {
    let n = io::copy(r, w)?;
    let pad = format::pad4(n);
    w.write_all(&[0u8; 3][..pad])?;
    Ok(n + pad as u64)
}
