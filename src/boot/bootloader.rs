//! The bootloaders of a box: each definition's image resolved through the same sources,
//! store and pins as a kernel (`kernel::import_tree`), and the files of its boot chain found
//! in the flattened image (`kernel::regular_file`), ready for the ISO and disk emitters.

use crate::error::{Error, Result};
use crate::measure::InputRecord;
use crate::boot::Import;
use crate::source::ResolvedImage;
use crate::spec::{BootloaderDef, BootloaderKind};
use crate::tree::{ContentRef, Tree};
use std::collections::BTreeMap;
use std::io::Read;

/// A resolved bootloader: its image, flattened, and its files by role.
pub struct Bootloader {
    pub def: BootloaderDef,
    pub image: ResolvedImage,
    pub tree: Tree,
    pub files: BTreeMap<String, ContentRef>,
}

impl std::fmt::Debug for Bootloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootloader").field("name", &self.def.name).field("image", &self.image.reference.text).finish()
    }
}

impl Bootloader {
    pub fn kind(&self) -> BootloaderKind {
        self.def.kind
    }

    pub fn input_record(&self) -> InputRecord {
        InputRecord { reference: self.image.reference.text.clone(), digest: self.image.pin.to_string() }
    }

    /// The bytes of the file with `role` (the files are small: boot code and loaders).
    pub fn read(&self, role: &str) -> Result<Vec<u8>> {
        let c = self.files.get(role).ok_or_else(|| Error::other(format!("bootloader {} has no {role}", self.def.name)))?;
        let mut v = Vec::with_capacity(c.len as usize);
        self.tree
            .open(c)
            .take(c.len)
            .read_to_end(&mut v)
            .map_err(|e| Error::other(format!("reading {} from {}: {e}", self.def.files[role], self.image.reference.text)))?;
        Ok(v)
    }
}

/// Resolve every bootloader definition: import its image and find its files.
pub fn resolve(defs: &[BootloaderDef], import: &Import) -> Result<Vec<Bootloader>> {
    let mut out = Vec::new();
    for def in defs {
        let what = format!("bootloader {}", def.name);
        let (image, tree) = import.image_tree(&def.image, &def.image_at, &what)?;
        let mut files = BTreeMap::new();
        for (role, path) in &def.files {
            let c = crate::boot::kernel::regular_file(&tree, path).map_err(|m| Error::Resolve {
                reference: image.reference.text.clone(),
                message: format!("{role} {path} (from {}): {m}", def.file.display()),
            })?;
            files.insert(role.clone(), c);
        }
        out.push(Bootloader { def: def.clone(), image, tree, files });
    }
    Ok(out)
}

/// The files systemd-boot needs in an ESP, by ESP path: itself as the removable-media loader
/// (`EFI/BOOT/BOOTX64.EFI`), a `loader.conf` that boots the one entry at once, and that entry
/// (`linux` and `initrd` are ESP paths without the leading `/`). The caller adds the kernel
/// and initrd files themselves.
pub fn systemd_boot_files(efi: Vec<u8>, title: &str, linux: &str, initrd: Option<&str>, options: &str) -> BTreeMap<String, crate::emit::fat::EspSource> {
    use crate::emit::fat::EspSource;
    let mut entry = format!("title {title}\nlinux /{linux}\n");
    if let Some(i) = initrd {
        entry += &format!("initrd /{i}\n");
    }
    entry += &format!("options {options}\n");
    BTreeMap::from([
        ("EFI/BOOT/BOOTX64.EFI".to_string(), EspSource::Bytes(efi)),
        ("loader/loader.conf".to_string(), EspSource::Bytes(b"timeout 0\ndefault stagebox.conf\n".to_vec())),
        ("loader/entries/stagebox.conf".to_string(), EspSource::Bytes(entry.into_bytes())),
    ])
}
