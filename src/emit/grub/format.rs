//! On-disk facts of a GRUB EFI core image: the ELF64 tables read from `kernel.img`, the
//! module area GRUB's kernel walks at boot, and the PE32+ header `grub-mkimage` wraps around
//! them. Each constant names the GRUB 2.06/2.12 source it comes from; the two releases agree on
//! everything here (checked against `util/mkimage.c`, `util/grub-mkimagexx.c`,
//! `include/grub/kernel.h` and `include/grub/efi/pe32.h` of both tags).
//!
//! The ELF reader is bounds-checked throughout: `kernel.img` comes from a layer, so a
//! truncated or hostile file gives [`GrubError::Elf`], never a panic.

use super::GrubError;

/// The `-O` targets this emitter knows (`image_targets[]` in `util/mkimage.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `x86_64-efi`: PE machine 0x8664, ELF machine EM_X86_64.
    X86_64Efi,
    /// `arm64-efi`: PE machine 0xaa64, ELF machine EM_AARCH64, plus a GOT after the kernel.
    Arm64Efi,
}

impl Target {
    /// The platform directory name GRUB installs to (`/usr/lib/grub/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Target::X86_64Efi => "x86_64-efi",
            Target::Arm64Efi => "arm64-efi",
        }
    }

    /// Parses a platform name as `grub-mkimage -O` spells it.
    pub fn from_name(name: &str) -> Option<Target> {
        match name {
            "x86_64-efi" => Some(Target::X86_64Efi),
            "arm64-efi" => Some(Target::Arm64Efi),
            _ => None,
        }
    }

    /// `pe_target` of the image target (`GRUB_PE32_MACHINE_*`).
    pub fn pe_machine(self) -> u16 {
        match self {
            Target::X86_64Efi => 0x8664,
            Target::Arm64Efi => 0xaa64,
        }
    }

    /// `elf_target` of the image target (`EM_X86_64` = 62, `EM_AARCH64` = 183).
    pub fn elf_machine(self) -> u16 {
        match self {
            Target::X86_64Efi => 62,
            Target::Arm64Efi => 183,
        }
    }
}

// ---- PE32+ (include/grub/efi/pe32.h, util/mkimage.c) ----

/// `GRUB_PE32_SECTION_ALIGNMENT` = `GRUB_EFI_PAGE_SIZE`; also the file alignment
/// (`GRUB_PE32_FILE_ALIGNMENT`). Changing it changes every offset in the image.
pub const PE_ALIGN: u64 = 0x1000;
/// `EFI64_HEADER_SIZE`: DOS stub + signature + COFF + PE32+ optional header + 4 section
/// headers (552 bytes), rounded up to [`PE_ALIGN`]. GRUB reserves room for 4 section headers
/// even when a 5th (`.sbat`) is added; we never add one.
pub const EFI64_HEADER_SIZE: u64 = 0x1000;
/// Size of `GRUB_PE32_MSDOS_STUB`; the PE signature follows at this offset.
pub const MSDOS_STUB_SIZE: usize = 0x80;
/// `GRUB_PE32_MSDOS_STUB`: the DOS header and "This program cannot be run in DOS mode."
/// stub as objcopy writes it, with `e_lfanew` = 0x80.
pub const MSDOS_STUB: [u8; MSDOS_STUB_SIZE] = [
    0x4d, 0x5a, 0x90, 0x00, 0x03, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00,
    0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00,
    0x0e, 0x1f, 0xba, 0x0e, 0x00, 0xb4, 0x09, 0xcd, 0x21, 0xb8, 0x01, 0x4c, 0xcd, 0x21, 0x54, 0x68,
    0x69, 0x73, 0x20, 0x70, 0x72, 0x6f, 0x67, 0x72, 0x61, 0x6d, 0x20, 0x63, 0x61, 0x6e, 0x6e, 0x6f,
    0x74, 0x20, 0x62, 0x65, 0x20, 0x72, 0x75, 0x6e, 0x20, 0x69, 0x6e, 0x20, 0x44, 0x4f, 0x53, 0x20,
    0x6d, 0x6f, 0x64, 0x65, 0x2e, 0x0d, 0x0d, 0x0a, 0x24, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];
/// `STABLE_EMBEDDING_TIMESTAMP` (2015-01-01T00:00:00Z): GRUB's fixed COFF time stamp.
pub const STABLE_TIMESTAMP: u32 = 1_420_070_400;
/// Size of `struct grub_pe32_coff_header`.
pub const COFF_HEADER_SIZE: usize = 20;
/// Size of `struct grub_pe64_optional_header` (112 bytes + 16 data directories).
pub const PE64_OPTIONAL_HEADER_SIZE: usize = 240;
/// Size of `struct grub_pe32_section_table`.
pub const SECTION_HEADER_SIZE: usize = 40;
/// `GRUB_PE32_PE64_MAGIC`.
pub const PE64_MAGIC: u16 = 0x20b;
/// `GRUB_PE32_SUBSYSTEM_EFI_APPLICATION`.
pub const SUBSYSTEM_EFI_APPLICATION: u16 = 10;
/// `GRUB_PE32_NUM_DATA_DIRECTORIES`.
pub const NUM_DATA_DIRECTORIES: u32 = 16;
/// Index of the base relocation table among the data directories.
pub const DATA_DIR_BASE_RELOC: usize = 5;
/// COFF characteristics: executable, line numbers, local symbols and debug info stripped
/// (`GRUB_PE32_EXECUTABLE_IMAGE | ..._LINE_NUMS_STRIPPED | ..._LOCAL_SYMS_STRIPPED |
/// ..._DEBUG_STRIPPED`); a 64-bit image does not set `..._32BIT_MACHINE`.
pub const COFF_CHARACTERISTICS: u16 = 0x0002 | 0x0004 | 0x0008 | 0x0200;
/// `.text`: `SCN_CNT_CODE | SCN_MEM_EXECUTE | SCN_MEM_READ`.
pub const SCN_TEXT: u32 = 0x0000_0020 | 0x2000_0000 | 0x4000_0000;
/// `.data` and `mods`: `SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ | SCN_MEM_WRITE`.
pub const SCN_DATA: u32 = 0x0000_0040 | 0x4000_0000 | 0x8000_0000;
/// `.reloc`: `SCN_CNT_INITIALIZED_DATA | SCN_MEM_DISCARDABLE | SCN_MEM_READ`.
pub const SCN_RELOC: u32 = 0x0000_0040 | 0x0200_0000 | 0x4000_0000;
/// Stack/heap reserve and commit sizes GRUB writes ("Do these really matter?").
pub const STACK_HEAP_SIZE: u64 = 0x10000;
/// `GRUB_PE32_REL_BASED_DIR64`: a 64-bit absolute address to rebase.
pub const REL_BASED_DIR64: u16 = 10;
/// Size of `struct grub_pe32_fixup_block` without entries (page RVA + block size).
pub const FIXUP_BLOCK_HEADER: u64 = 8;
/// The most entries GRUB's fixup block buffer holds (`2 * 0x1000` bytes of `u16`).
pub const FIXUP_BLOCK_MAX_ENTRIES: usize = 0x1000;

// ---- module area (include/grub/kernel.h) ----

/// `GRUB_MODULE_MAGIC`, "gmim" little-endian.
pub const MODULE_MAGIC: u32 = 0x676d_696d;
/// Size of `struct grub_module_info64` (magic, padding, offset, size).
pub const MODULE_INFO64_SIZE: u64 = 24;
/// Size of `struct grub_module_header` (type, size).
pub const MODULE_HEADER_SIZE: u64 = 8;
/// `OBJ_TYPE_ELF`: a `.mod` file.
pub const OBJ_TYPE_ELF: u32 = 0;
/// `OBJ_TYPE_CONFIG`: the early config (`-c`), NUL-terminated.
pub const OBJ_TYPE_CONFIG: u32 = 2;
/// `OBJ_TYPE_PREFIX`: the prefix (`-p`), NUL-terminated.
pub const OBJ_TYPE_PREFIX: u32 = 3;
/// `ALIGN_ADDR`: module objects are padded to the target's pointer size.
pub const ADDR_ALIGN: u64 = 8;

/// GRUB's `ALIGN_UP(x, a)`: `(x + a - 1) & ~(a - 1)` (the mask form, also for odd `a`).
pub fn align_up(x: u64, a: u64) -> u64 {
    x.wrapping_add(a.wrapping_sub(1)) & !a.wrapping_sub(1)
}

// ---- ELF64 (the parts grub-mkimagexx.c reads) ----

pub const SHT_SYMTAB: u32 = 2;
pub const SHT_RELA: u32 = 4;
pub const SHT_NOBITS: u32 = 8;
pub const SHT_REL: u32 = 9;
pub const SHF_ALLOC: u64 = 0x2;
pub const SHF_EXECINSTR: u64 = 0x4;
/// `SHN_UNDEF` / `STN_UNDEF`.
pub const SHN_UNDEF: u16 = 0;
/// `SHN_ABS` (GRUB's `STN_ABS`).
pub const SHN_ABS: u16 = 0xfff1;
const EHDR_SIZE: usize = 64;
const SHDR_SIZE: usize = 64;
pub const SYM_SIZE: usize = 24;
pub const RELA_SIZE: usize = 24;

/// One section header of `kernel.img`.
#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    pub sh_type: u32,
    pub flags: u64,
    pub offset: u64,
    pub size: u64,
    pub link: u32,
    pub info: u32,
    pub addralign: u64,
    pub entsize: u64,
}

impl Section {
    /// `is_text_section` for a relocatable (EFI) target.
    pub fn is_text(&self) -> bool {
        self.flags & (SHF_EXECINSTR | SHF_ALLOC) == SHF_EXECINSTR | SHF_ALLOC
    }
    /// `is_data_section`.
    pub fn is_data(&self) -> bool {
        self.flags & (SHF_EXECINSTR | SHF_ALLOC) == SHF_ALLOC && self.sh_type != SHT_NOBITS
    }
    /// `is_bss_section`.
    pub fn is_bss(&self) -> bool {
        self.flags & (SHF_EXECINSTR | SHF_ALLOC) == SHF_ALLOC && self.sh_type == SHT_NOBITS
    }
    /// `is_kept_section` for EFI: text, data and bss end up in the image.
    pub fn is_kept(&self) -> bool {
        self.is_text() || self.is_data() || self.is_bss()
    }
    pub fn is_reloc(&self) -> bool {
        self.sh_type == SHT_REL || self.sh_type == SHT_RELA
    }
}

/// A parsed little-endian ELF64 file: its section headers and the raw bytes.
pub struct Elf<'a> {
    pub data: &'a [u8],
    pub machine: u16,
    pub sections: Vec<Section>,
}

fn err(file: &str, message: impl Into<String>) -> GrubError {
    GrubError::Elf { file: file.to_string(), message: message.into() }
}

/// Reads a little-endian integer of `N` bytes at `off`, or `None` past the end.
pub fn le<const N: usize>(data: &[u8], off: u64) -> Option<u64> {
    let off = usize::try_from(off).ok()?;
    let bytes = data.get(off..off.checked_add(N)?)?;
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    Some(v)
}

/// The byte range `off..off+len` of `data`, or `None` past the end.
pub fn range(data: &[u8], off: u64, len: u64) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(off).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= data.len()).then_some(start..end)
}

/// A NUL-terminated string at `off`, or `None` if it runs off the end.
pub fn cstr(data: &[u8], off: u64) -> Option<&str> {
    let start = usize::try_from(off).ok()?;
    let rest = data.get(start..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

impl<'a> Elf<'a> {
    /// Parses the header and section table of `data`, named `file` in errors. Checks what
    /// `check_elf_header` checks (magic, version, class 64) plus little-endian data.
    pub fn parse(file: &str, data: &'a [u8]) -> Result<Elf<'a>, GrubError> {
        if data.len() < EHDR_SIZE || &data[..4] != b"\x7fELF" {
            return Err(err(file, "not an ELF file"));
        }
        if data[4] != 2 {
            return Err(err(file, format!("ELF class {} where a 64-bit (ELFCLASS64) file was expected", data[4])));
        }
        if data[5] != 1 {
            return Err(err(file, "not a little-endian ELF file"));
        }
        let g = |off: u64, n: usize| -> u64 {
            // The header is at least EHDR_SIZE bytes, checked above.
            match n {
                2 => le::<2>(data, off).unwrap_or(0),
                4 => le::<4>(data, off).unwrap_or(0),
                _ => le::<8>(data, off).unwrap_or(0),
            }
        };
        if data[6] != 1 || g(20, 4) != 1 {
            return Err(err(file, "unknown ELF version"));
        }
        let machine = g(18, 2) as u16;
        let shoff = g(40, 8);
        let shentsize = g(58, 2);
        let shnum = g(60, 2);
        let shstrndx = g(62, 2);
        if shnum == 0 {
            return Err(err(file, "no section headers"));
        }
        if (shentsize as usize) < SHDR_SIZE {
            return Err(err(file, format!("section header size {shentsize} is below {SHDR_SIZE}")));
        }
        range(data, shoff, shentsize * shnum)
            .ok_or_else(|| err(file, "section header table runs past the end of the file"))?;
        let mut raw = Vec::with_capacity(shnum as usize);
        for i in 0..shnum {
            let o = shoff + i * shentsize;
            let r4 = |d: u64| le::<4>(data, o + d).unwrap_or(0) as u32;
            let r8 = |d: u64| le::<8>(data, o + d).unwrap_or(0);
            raw.push((r4(0), Section {
                name: String::new(),
                sh_type: r4(4),
                flags: r8(8),
                offset: r8(24),
                size: r8(32),
                link: r4(40),
                info: r4(44),
                addralign: r8(48),
                entsize: r8(56),
            }));
        }
        let strtab = raw
            .get(shstrndx as usize)
            .map(|(_, s)| s.offset)
            .ok_or_else(|| err(file, format!("section name table index {shstrndx} out of range")))?;
        let mut sections = Vec::with_capacity(raw.len());
        for (i, (name_off, mut s)) in raw.into_iter().enumerate() {
            s.name = cstr(data, strtab.saturating_add(u64::from(name_off)))
                .ok_or_else(|| err(file, format!("section {i}: name runs past the end of the file")))?
                .to_string();
            // Sections whose bytes are copied or read must lie inside the file.
            if s.sh_type != SHT_NOBITS && (s.is_kept() || s.is_reloc() || s.sh_type == SHT_SYMTAB) {
                range(data, s.offset, s.size).ok_or_else(|| {
                    err(file, format!("section {} runs past the end of the file", s.name))
                })?;
            }
            sections.push(s);
        }
        Ok(Elf { data, machine, sections })
    }
}
