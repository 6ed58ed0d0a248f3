//! Kernel file forms for the architectures stagebox boots: which machine a kernel file is for
//! and in which form it comes (x86 bzImage, arm64 `Image` with or without its EFI stub, a
//! gzip-compressed `Image.gz`, an EFI zboot image), read from the first bytes alone.
//!
//! The layouts are the kernel's: the arm64 header of `Documentation/arch/arm64/booting.rst`
//! (`text_offset` at 8, `image_size` at 16, `flags` at 24, the magic `ARM\x64` at 0x38, the
//! PE header offset at 0x3c when the EFI stub is built in), and the zboot header of
//! `drivers/firmware/efi/libstub/zboot-header.S` (`MZ`, `zimg`, payload offset and size, the
//! compression name at 24, the generic Linux PE magic at 0x38). No crate reads these; they
//! are a few fixed offsets.

/// Bytes [`identify`] needs to see: the headers and a PE header near the start.
pub const HEAD: usize = 4096;

/// The CPU a kernel runs on, in OCI's architecture names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// OCI's name (`amd64`, `arm64`).
    pub fn oci(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The kernel's and `uname -m`'s name (`x86_64`, `aarch64`).
    pub fn uname(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// The removable-media loader path UEFI firmware of this architecture starts from an
    /// ESP (UEFI specification, "Removable Media Boot Behavior").
    pub fn efi_boot_file(self) -> &'static str {
        match self {
            Arch::Amd64 => "EFI/BOOT/BOOTX64.EFI",
            Arch::Arm64 => "EFI/BOOT/BOOTAA64.EFI",
        }
    }

    /// GRUB's EFI platform directory name for this architecture (`grub-mkimage -O`).
    pub fn grub_efi(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-efi",
            Arch::Arm64 => "arm64-efi",
        }
    }

    /// The serial console the kernel writes to on the machine `stagebox run` boots
    /// (`ttyS0`, the PC's 16550; `ttyAMA0`, the PL011 of QEMU's arm `virt` board).
    pub fn console(self) -> &'static str {
        match self {
            Arch::Amd64 => "ttyS0",
            Arch::Arm64 => "ttyAMA0",
        }
    }

    /// From an OCI architecture name; None for one stagebox does not boot.
    pub fn from_oci(arch: &str) -> Option<Arch> {
        match arch {
            "amd64" => Some(Arch::Amd64),
            "arm64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

/// What a kernel file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// An x86 bzImage (setup header `HdrS` at 0x202).
    BzImage,
    /// An uncompressed arm64 `Image`; `efi_stub` when it is also a PE/COFF EFI application
    /// (`MZ` at 0 and a PE header for machine 0xaa64), which UEFI loaders need.
    Arm64Image { efi_stub: bool, image_size: u64, big_endian: bool },
    /// A gzip stream (`Image.gz`): what QEMU's `-kernel` and U-Boot unpack, but no EFI loader.
    Gzip,
    /// An EFI zboot image (`CONFIG_EFI_ZBOOT`): a PE/COFF EFI application for `arch` that
    /// decompresses its payload (`compression`, e.g. "gzip", "zstd") itself.
    Zboot { arch: Option<Arch>, compression: String, payload_offset: u32, payload_size: u32 },
}

impl Form {
    /// The architecture the form names, when it names one (a gzip stream does not).
    pub fn arch(&self) -> Option<Arch> {
        match self {
            Form::BzImage => Some(Arch::Amd64),
            Form::Arm64Image { .. } => Some(Arch::Arm64),
            Form::Gzip => None,
            Form::Zboot { arch, .. } => *arch,
        }
    }

    /// Whether UEFI firmware (and GRUB's or systemd-boot's EFI `linux` loaders) can start it
    /// as an EFI application.
    pub fn is_efi_application(&self) -> bool {
        matches!(self, Form::Arm64Image { efi_stub: true, .. } | Form::Zboot { .. }) || *self == Form::BzImage
    }

    /// The file name suffix a build gives the kernel it writes beside an initramfs
    /// (`NAME.bzImage`, `NAME.Image`, `NAME.Image.gz`, `NAME.efi` for zboot).
    pub fn file_suffix(&self) -> &'static str {
        match self {
            Form::BzImage => "bzImage",
            Form::Arm64Image { .. } => "Image",
            Form::Gzip => "Image.gz",
            Form::Zboot { .. } => "efi",
        }
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Form::BzImage => "an x86 bzImage".into(),
            Form::Arm64Image { efi_stub: true, .. } => "an arm64 Image with its EFI stub".into(),
            Form::Arm64Image { efi_stub: false, .. } => "an arm64 Image without an EFI stub".into(),
            Form::Gzip => "a gzip-compressed kernel (Image.gz)".into(),
            Form::Zboot { arch, compression, .. } => {
                format!("an EFI zboot image ({compression}-compressed{})", arch.map(|a| format!(", {}", a.uname())).unwrap_or_default())
            }
        }
    }
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// The PE/COFF machine of a file starting with `MZ`, when its PE header is within `head`.
fn pe_machine(head: &[u8]) -> Option<u16> {
    if head.get(..2)? != b"MZ" {
        return None;
    }
    let pe = u32_at(head, 0x3c)? as usize;
    if head.get(pe..pe.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    u16_at(head, pe + 4)
}

/// The architecture of a PE/COFF EFI application (an `EFI/BOOT/BOOT*.EFI` loader) from its
/// first bytes; None when it is not one for amd64 or arm64.
pub fn pe_arch(head: &[u8]) -> Option<Arch> {
    match pe_machine(head)? {
        PE_AMD64 => Some(Arch::Amd64),
        PE_ARM64 => Some(Arch::Arm64),
        _ => None,
    }
}

/// PE machine numbers (PE/COFF spec, "Machine Types").
const PE_AMD64: u16 = 0x8664;
const PE_ARM64: u16 = 0xaa64;

/// Identify a kernel from its first bytes (at least [`HEAD`] of them when the file is that
/// long). An error says what was found instead.
pub fn identify(head: &[u8]) -> Result<Form, String> {
    if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        return Ok(Form::BzImage);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Form::Gzip);
    }
    if head.get(..2) == Some(b"MZ") && head.get(4..8) == Some(b"zimg") {
        let name = head.get(24..56).unwrap_or_default();
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        let arch = match pe_machine(head) {
            Some(PE_ARM64) => Some(Arch::Arm64),
            Some(PE_AMD64) => Some(Arch::Amd64),
            _ => None,
        };
        return Ok(Form::Zboot {
            arch,
            compression: String::from_utf8_lossy(name).into_owned(),
            payload_offset: u32_at(head, 8).unwrap_or(0),
            payload_size: u32_at(head, 12).unwrap_or(0),
        });
    }
    if head.get(0x38..0x3c) == Some(b"ARM\x64") {
        let flags = u64_at(head, 24).unwrap_or(0);
        return Ok(Form::Arm64Image {
            efi_stub: pe_machine(head) == Some(PE_ARM64),
            image_size: u64_at(head, 16).unwrap_or(0),
            big_endian: flags & 1 != 0,
        });
    }
    let shown = &head[..head.len().min(8)];
    Err(format!(
        "{} bytes starting {shown:02x?}: not a Linux kernel stagebox knows (an x86 bzImage, an arm64 Image, Image.gz or an EFI zboot image)",
        head.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm64_image(efi: bool) -> Vec<u8> {
        let mut k = vec![0u8; HEAD];
        if efi {
            k[..2].copy_from_slice(b"MZ");
            k[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
            k[0x40..0x44].copy_from_slice(b"PE\0\0");
            k[0x44..0x46].copy_from_slice(&PE_ARM64.to_le_bytes());
        }
        k[16..24].copy_from_slice(&(30u64 << 20).to_le_bytes());
        k[0x38..0x3c].copy_from_slice(b"ARM\x64");
        k
    }

    #[test]
    fn forms() {
        assert_eq!(identify(&arm64_image(true)).unwrap(), Form::Arm64Image { efi_stub: true, image_size: 30 << 20, big_endian: false });
        let bare = identify(&arm64_image(false)).unwrap();
        assert!(!bare.is_efi_application() && bare.arch() == Some(Arch::Arm64));
        assert_eq!(identify(&[0x1f, 0x8b, 8, 0]).unwrap(), Form::Gzip);

        let mut z = arm64_image(true);
        z[0x38..0x3c].copy_from_slice(&[0xcd, 0x23, 0x82, 0x81]);
        z[4..8].copy_from_slice(b"zimg");
        z[8..12].copy_from_slice(&0x1000u32.to_le_bytes());
        z[12..16].copy_from_slice(&0x2000u32.to_le_bytes());
        z[24..28].copy_from_slice(b"zstd");
        let f = identify(&z).unwrap();
        assert_eq!(f, Form::Zboot { arch: Some(Arch::Arm64), compression: "zstd".into(), payload_offset: 0x1000, payload_size: 0x2000 });
        assert!(f.is_efi_application());

        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(identify(&bz).unwrap().arch(), Some(Arch::Amd64));

        let e = identify(b"\x7fELF\x02\x01\x01\0").unwrap_err();
        assert!(e.contains("not a Linux kernel") && e.contains("7f, 45"), "{e}");
    }
}
