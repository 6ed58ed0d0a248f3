//! GRUB EFI core images: the `BOOTX64.EFI`/`BOOTAA64.EFI` that `grub-mkimage -O x86_64-efi`
//! (or `arm64-efi`) assembles from a platform directory (`kernel.img`, `*.mod`,
//! `moddep.lst`), built here byte for byte from the same inputs without running any program
//! from the host or the layer.
//!
//! Split as `format` (PE32+, module-area and ELF facts, with the GRUB source each comes from,
//! and a bounds-checked ELF reader), `writer` (dependency resolution, kernel relocation, image
//! assembly) and `debug` (image → text listing of sections and embedded objects).
//!
//! Hand-written because no crate does this: crates.io has GRUB *config* helpers but nothing
//! that builds a core image, and the job is mostly GRUB's own conventions (which sections are
//! kept, how `.text`/`.data`/`.bss` are merged and padded, the fixup block padding, the module
//! area) that a general PE writer such as `object::write` would not reproduce byte for byte.
//! The ELF side reads only section headers, one symbol table and the relocation tables, so a
//! small bounds-checked reader in `format` does it.
//!
//! Facts come from GRUB 2.06 and 2.12 (`util/mkimage.c`, `util/grub-mkimagexx.c`,
//! `util/resolve.c`); the two releases build x86_64 and arm64 EFI images the same way, so one
//! writer serves Debian 12's packages and StageX's `user-grub`.

pub mod debug;
pub mod format;
pub mod pc;
pub mod writer;

pub use format::Target;
pub use writer::{resolve, write, Input};

/// Why a core image cannot be built; each names the directory, file or module at fault.
#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    /// A module the list needs (asked for, or a dependency) has no `.mod` file.
    #[error("{dir}: module {module} is needed but {module}.mod is not there")]
    MissingModule { dir: String, module: String },
    /// A module with no line in `moddep.lst`.
    #[error("{dir}/moddep.lst: no entry for module {module}{}", needed_by.as_ref().map(|m| format!(" (a dependency of {m})")).unwrap_or_default())]
    NotInModdep { dir: String, module: String, needed_by: Option<String> },
    /// Modules that depend on each other in a loop.
    #[error("{dir}/moddep.lst: dependency cycle {chain}")]
    Cycle { dir: String, chain: String },
    /// A `moddep.lst` line that does not parse.
    #[error("{dir}/moddep.lst:{line}: {message}")]
    Moddep { dir: String, line: usize, message: String },
    /// A module name that is not a plain name (empty, or a path).
    #[error("module name {name:?} is not a plain module name")]
    BadModuleName { name: String },
    /// `kernel.img` built for another architecture.
    #[error("{file}: {found}, not a {target} kernel")]
    WrongTarget { file: String, found: String, target: &'static str },
    /// `kernel.img` that is not a usable ELF64 file.
    #[error("{file}: {message}")]
    Elf { file: String, message: String },
    /// A relocation type GRUB's mkimage does not handle either.
    #[error("{file}: {section}: relocation type {kind} is not supported")]
    Relocation { file: String, section: String, kind: u32 },
    /// An image over the 2 GiB a PE32+ header can describe comfortably.
    #[error("core image of {size} bytes is too large")]
    TooLarge { size: u64 },
}

impl From<GrubError> for crate::error::Error {
    fn from(e: GrubError) -> Self {
        crate::error::Error::Other(e.to_string())
    }
}
