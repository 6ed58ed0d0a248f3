//! `[output.squashfs]`: the rootfs as a SquashFS 4.0 image, for firmware and for the root
//! partition of disk images. Read by the kernel and by squashfs-tools' `unsquashfs`.
//!
//! Written here rather than with the `backhand` crate: backhand's writer has no hardlinks
//! (it would store a hardlinked file twice and lose the link), does not write xattrs, and
//! needs rust 1.90; ours keeps the tree's inodes, writes `user.`/`trusted.`/`security.`
//! xattrs, and derives every byte from the tree (see `writer`). No fragments: each file's
//! tail is its own block, which costs a little ratio on many tiny files and keeps the layout
//! one pass over the data in path order.

pub mod debug;
pub mod format;
pub mod writer;

pub use writer::{write, Options};
