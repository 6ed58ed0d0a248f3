//! The bootloaders of a box: each definition's image resolved through the same sources,
//! store and pins as a kernel ([`Import::image_tree`]), and the files of its boot chain found
//! in the flattened image (`kernel::regular_file`), ready for `boot::iso` and `boot::disk`; and
//! the boot configs the loaders read (systemd-boot's entries, GRUB's core image with its
//! early config and `grub.cfg`).

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
        self.read_ref(c, role)
    }

    fn read_ref(&self, c: &ContentRef, what: &str) -> Result<Vec<u8>> {
        let mut v = Vec::with_capacity(c.len as usize);
        self.tree
            .open(c)
            .take(c.len)
            .read_to_end(&mut v)
            .map_err(|e| Error::other(format!("reading {} from {}: {e}", self.def.files.get(what).map(String::as_str).unwrap_or(what), self.image.reference.text)))?;
        Ok(v)
    }

    /// A GRUB EFI core image (`emit::grub`) from this grub bootloader's platform directory:
    /// [`GRUB_MODULES`] with their dependencies, `config` embedded as the early config,
    /// `prefix` as the prefix. A missing module names the directory, image and definition.
    pub fn grub_image(&self, config: Option<&str>, prefix: &str) -> Result<Vec<u8>> {
        let GrubParts { named, kernel_img, moddep, wanted, modules } = self.grub_parts(&[])?;
        // The platform directory's name (checked by the spec and against the box's platform).
        let target = self.grub_target().ok_or_else(|| Error::other(format!("{named}: not an x86_64-efi or arm64-efi directory")))?;
        let input = crate::emit::grub::Input {
            target,
            dir: &named,
            kernel_img: &kernel_img,
            modules: &modules,
            moddep: &moddep,
            wanted: &wanted,
            config: config.map(str::as_bytes),
            prefix,
        };
        Ok(crate::emit::grub::write(&input)?)
    }
}

impl Bootloader {
    /// The GRUB EFI target of a grub bootloader, from its platform directory's name.
    pub fn grub_target(&self) -> Option<crate::emit::grub::Target> {
        let dir = self.def.files.get("platform")?.trim_end_matches('/');
        crate::emit::grub::Target::from_name(dir.rsplit('/').next()?)
    }
}

/// What every GRUB core image is made of, read from a grub bootloader's platform directory.
struct GrubParts {
    /// The directory, image and definition, for messages.
    named: String,
    kernel_img: Vec<u8>,
    moddep: String,
    /// [`GRUB_MODULES`] and the platform's extra ones.
    wanted: Vec<String>,
    /// Every wanted module and its dependencies, by name.
    modules: BTreeMap<String, Vec<u8>>,
}

impl Bootloader {
    /// `kernel.img`, `moddep.lst` and the modules [`GRUB_MODULES`] and `extra` need, in
    /// dependency order; a missing module names the directory, image and definition.
    fn grub_parts(&self, extra: &[&str]) -> Result<GrubParts> {
        let dir = self.def.files["platform"].trim_end_matches('/');
        let named = format!("{dir} in {} (from {})", self.image.reference.text, self.def.file.display());
        let kernel_img = self.read(GRUB_KERNEL)?;
        let moddep = String::from_utf8(self.read(GRUB_MODDEP)?).map_err(|_| Error::other(format!("{named}: moddep.lst is not UTF-8 text")))?;
        let wanted: Vec<String> = GRUB_MODULES.iter().chain(extra).map(|m| m.to_string()).collect();
        let order = crate::emit::grub::resolve(&named, &moddep, &wanted)?;
        let mut modules = BTreeMap::new();
        for m in order {
            let path = format!("{dir}/{m}.mod");
            let c = crate::boot::kernel::regular_file(&self.tree, &path)
                .map_err(|_| crate::emit::grub::GrubError::MissingModule { dir: named.clone(), module: m.clone() })?;
            modules.insert(m, self.read_ref(&c, &path)?);
        }
        Ok(GrubParts { named, kernel_img, moddep, wanted, modules })
    }
}

impl Bootloader {
    /// The BIOS boot chain of an i386-pc grub bootloader (`emit::grub::pc`): the core image
    /// for `first_sector` ([`GRUB_MODULES`] and `biosdisk`, `prefix` as the prefix) and
    /// `boot.img`.
    pub fn grub_pc(&self, prefix: &str, first_sector: u64) -> Result<(Vec<u8>, Vec<u8>)> {
        let GrubParts { named, kernel_img, moddep, wanted, modules } = self.grub_parts(&["biosdisk"])?;
        let (lzma_decompress, diskboot) = (self.read("lzma_decompress.img")?, self.read("diskboot.img")?);
        let input = crate::emit::grub::pc::PcInput {
            dir: &named,
            kernel_img: &kernel_img,
            lzma_decompress: &lzma_decompress,
            diskboot: &diskboot,
            modules: &modules,
            moddep: &moddep,
            wanted: &wanted,
            config: None,
            prefix,
        };
        Ok((crate::emit::grub::pc::core_image(&input, first_sector)?, self.read("boot.img")?))
    }
}

/// Roles of a grub bootloader's files (inside its `platform` directory).
const GRUB_KERNEL: &str = "kernel.img";
const GRUB_MODDEP: &str = "moddep.lst";

/// The modules of every GRUB core image stagebox builds: partition tables of a hybrid ISO and
/// a GPT disk, the file systems (ISO 9660 for the CD or stick, FAT for the ESP), `search` to
/// find the volume by its marker file, `normal` + `configfile` for `grub.cfg` and its menu,
/// `linux` to boot, `serial` + `terminal` for the serial console, `echo`.
pub const GRUB_MODULES: &[&str] =
    &["part_gpt", "part_msdos", "iso9660", "fat", "search", "search_fs_file", "normal", "configfile", "linux", "echo", "serial", "terminal"];

/// The parameters of a kernel command line as the kernel splits them: at blanks outside
/// double quotes, the quotes removed (`a="b c"` is the one parameter `a=b c`).
fn kernel_words(options: &str) -> Vec<String> {
    let (mut words, mut w, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in options.chars() {
        match c {
            '"' => (quoted, any) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut w));
                }
                any = false;
            }
            c => {
                w.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(w);
    }
    words
}

/// GRUB's `grub.cfg` for one entry: the serial console when asked, no menu delay, the box's
/// kernel command line. `linux` and `initrd` are paths on GRUB's `$root`.
pub fn grub_cfg(title: &str, linux: &str, initrd: Option<&str>, options: &str, serial: bool) -> String {
    let mut s = String::new();
    if serial {
        s.push_str("serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n");
    }
    s.push_str("set timeout=0\nset default=0\n");
    // Single quotes keep the title and each word of the command line as written (no `$`
    // expansion; GRUB has no escapes inside them, so a `'` is closed, escaped and reopened).
    // One word per parameter: `linux` joins its words with spaces, but wraps a word holding a
    // space in double quotes, which the kernel would read as one parameter.
    let q = |t: &str| format!("'{}'", t.replace('\'', "'\\''"));
    let words: Vec<String> = kernel_words(options).iter().map(|w| q(w)).collect();
    s.push_str(&format!("menuentry {} {{\n  linux {linux} {}\n", q(title), words.join(" ")));
    if let Some(i) = initrd {
        s.push_str(&format!("  initrd {i}\n"));
    }
    s.push_str("}\n");
    s
}

/// Resolve every bootloader definition: import its image and find its files.
pub fn resolve(defs: &[BootloaderDef], import: &Import) -> Result<Vec<Bootloader>> {
    let mut out = Vec::new();
    for def in defs {
        let what = format!("bootloader {}", def.name);
        let (image, tree) = import.image_tree(&def.image, &def.image_at, &what)?;
        let mut files = BTreeMap::new();
        let grub_files;
        let roles: Vec<(String, String)> = if def.kind == BootloaderKind::GrubPc {
            // The i386-pc directory: the boot chain's images, kernel.img and moddep.lst.
            let dir = def.files["platform"].trim_end_matches('/');
            grub_files = [GRUB_KERNEL, GRUB_MODDEP, "lzma_decompress.img", "diskboot.img", "boot.img"].iter().map(|f| (f.to_string(), format!("{dir}/{f}"))).collect();
            grub_files
        } else if def.kind == BootloaderKind::Grub {
            // The platform directory: kernel.img and moddep.lst must be there; modules are
            // read when the image is assembled ([`Bootloader::grub_image`]).
            let dir = def.files["platform"].trim_end_matches('/');
            grub_files = vec![(GRUB_KERNEL.to_string(), format!("{dir}/kernel.img")), (GRUB_MODDEP.to_string(), format!("{dir}/moddep.lst"))];
            grub_files
        } else {
            def.files.iter().map(|(r, p)| (r.clone(), p.clone())).collect()
        };
        for (role, path) in &roles {
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
/// (`loader`: `EFI/BOOT/BOOTX64.EFI`, or `BOOTAA64.EFI` on arm64), a `loader.conf` that boots the one entry at once, and that entry
/// (`linux` and `initrd` are ESP paths without the leading `/`). The caller adds the kernel
/// and initrd files themselves.
pub fn systemd_boot_files(loader: &str, efi: Vec<u8>, title: &str, linux: &str, initrd: Option<&str>, options: &str) -> BTreeMap<String, crate::emit::fat::EspSource> {
    use crate::emit::fat::EspSource;
    let mut entry = format!("title {title}\nlinux /{linux}\n");
    if let Some(i) = initrd {
        entry += &format!("initrd /{i}\n");
    }
    entry += &format!("options {options}\n");
    BTreeMap::from([
        (loader.to_string(), EspSource::Bytes(efi)),
        ("loader/loader.conf".to_string(), EspSource::Bytes(b"timeout 0\ndefault stagebox.conf\n".to_vec())),
        ("loader/entries/stagebox.conf".to_string(), EspSource::Bytes(entry.into_bytes())),
    ])
}

#[cfg(test)]
mod tests {
    use super::grub_cfg;

    #[test]
    fn grub_cfg_quotes_each_parameter_and_the_title() {
        let c = grub_cfg("it's", "/k", Some("/i"), "root=PARTUUID=x  ro $v", true);
        assert!(c.starts_with("serial --unit=0 --speed=115200\n"), "{c}");
        assert!(c.contains("menuentry 'it'\\''s' {\n  linux /k 'root=PARTUUID=x' 'ro' '$v'\n  initrd /i\n}\n"), "{c}");
        assert!(!grub_cfg("t", "/k", None, "", false).contains("initrd"));
        // A double-quoted value with blanks (dm-mod.create=) is one parameter, unquoted: GRUB
        // wraps it in double quotes again when it hands the kernel its command line.
        let c = grub_cfg("t", "/k", None, "a dm-mod.create=\"v,,,ro,0 8 verity\" b", false);
        assert!(c.contains("linux /k 'a' 'dm-mod.create=v,,,ro,0 8 verity' 'b'\n"), "{c}");
    }
}
