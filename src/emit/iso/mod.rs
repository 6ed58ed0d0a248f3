//! ISO 9660 images: the flattened tree as an ECMA-119 file system with Rock Ridge (modes,
//! owners, symlinks, hardlinks, devices, FIFOs, long names) and Joliet, plus El Torito boot
//! entries, for `[output.iso]`. The caller (`boot::iso` for a bootable ISO) adds bootloader
//! files and the ESP image as [`IsoFile`]s and writes the hybrid MBR/GPT into the system area.
//!
//! Written here rather than with a crate. `hadris-iso` (the one maintained Rust ISO writer)
//! was evaluated: it needs rustc 1.88 (above our `rust-version`), its `from_fs` path reads
//! every file into memory (we must stream a rootfs of any size), it writes no backup GPT,
//! and its extent order and name mangling are not under our control, so reproducibility
//! would rest on its internals. ECMA-119 + SUSP/RRIP + Joliet + El Torito is a few hundred
//! lines of encoders.
//!
//! Decisions: dates are SOURCE_DATE_EPOCH (file mtimes clamped to it); ISO 9660 names are
//! level 2 style d-characters (30 characters, `;1`), made unique per directory with a `_N`
//! suffix, in bytewise order of the real names; Joliet names are UCS-2, at most 64
//! characters, with characters it cannot hold (controls, `* / : ; ? \`, non-BMP) as `_`
//! and the same `_N` rule, unique ignoring ASCII case (Windows reads Joliet that way); Rock
//! Ridge always carries the real bytes (tests/it/iso.rs `rock_ridge_keeps_names_iso_and_joliet_cannot_hold`). Directories deeper than
//! ECMA-119's 8 levels stay where they are (as ISO 9660:1999 and xorriso's
//! `-compliance deep_paths` do; Rock Ridge and Joliet readers follow them), no `rr_moved`
//! relocation. Files over 4 GiB get several contiguous extents with the multi-extent flag
//! (ECMA-119 level 3). Hardlinks share one extent and one PX serial number with nlink set.
//!
//! Split as `format` (on-disk encoders and constants, spec references), `writer` (tree →
//! plan → bytes; lay out first, then write) and `debug` (image → readable description).

pub mod debug;
pub mod format;
pub mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A file added to the ISO beside the tree (bootloader files, kernel, initramfs, the ESP
/// image). Its bytes come from a host file (the caller stages them in a temp dir).
#[derive(Debug, Clone)]
pub struct IsoFile {
    /// Absolute path in the ISO, e.g. "/boot/isolinux/isolinux.bin". Parents are created
    /// (mode 0755, owner 0:0). A path that collides with a tree path is an error.
    pub path: String,
    pub source: PathBuf,
    /// Permission bits for Rock Ridge (e.g. 0o644).
    pub mode: u32,
}

/// An El Torito boot entry, in catalog order.
#[derive(Debug, Clone)]
pub enum BootEntry {
    /// BIOS, no emulation (isolinux.bin): load size 4 (512-byte sectors), the 56-byte boot
    /// info table patched into the file at offset 8 (PVD LBA, file LBA, length, checksum).
    Bios { path: String },
    /// UEFI (platform 0xEF), no emulation, pointing at a FAT image file in the ISO.
    Efi { path: String },
}

#[derive(Debug, Clone, Default)]
pub struct IsoOptions {
    /// Volume identifier (the writer maps it to d-characters, max 32; Joliet gets the original,
    /// up to 16 characters).
    pub volume_id: String,
    /// SOURCE_DATE_EPOCH: every date in the image.
    pub sde: u64,
    pub extra: Vec<IsoFile>,
    pub boot: Vec<BootEntry>,
    /// Path of the boot catalog file in the ISO (required when `boot` is not empty),
    /// e.g. "/boot/boot.catalog".
    pub catalog: Option<String>,
    /// Zero bytes reserved after the last extent, included in the image size (the backup
    /// GPT goes there). The image size is a multiple of 2048.
    pub tail_reserve: u64,
}

/// Where things ended up: what the hybrid MBR/GPT needs.
#[derive(Debug, Clone)]
pub struct IsoLayout {
    /// Total image size in bytes (a multiple of 2048, including `tail_reserve`).
    pub size: u64,
    /// Extra files (by their `IsoFile::path`) and the catalog: (first 2048-byte block, byte length).
    pub files: BTreeMap<String, (u64, u64)>,
}

/// Write the ISO image into `out` (an empty file; positioned writes). The system area
/// (bytes 0..32768) is left zero: the caller writes the MBR/GPT there afterwards with
/// `FileExt::write_all_at`. File contents are copied from the tree's spill files
/// ([`crate::tree::Tree::open`]) to their laid-out offsets.
pub fn write(tree: &crate::tree::Tree, opts: &IsoOptions, out: &std::fs::File) -> crate::Result<IsoLayout> {
    writer::Plan::new(tree, opts)?.write(out)
}
