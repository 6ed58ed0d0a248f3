//! Builds the EFI core image: resolves the module list against `moddep.lst`, relocates
//! `kernel.img` into a PE32+ image with a `.reloc` table, appends the module area (modules,
//! early config, prefix) and writes the PE headers, in the order and with the padding
//! `grub-mkimage` 2.06/2.12 use (`grub_install_generate_image` in `util/mkimage.c`,
//! `grub_mkimage_load_image64` and `make_reloc_section` in `util/grub-mkimagexx.c`).
//!
//! Call order: [`resolve`] (pure, on the `moddep.lst` text) → [`load_kernel`] (layout, symbol
//! and relocation pass over a private copy of `kernel.img`) → [`write()`] assembles. Nothing
//! here does I/O; the caller reads the platform directory.

use std::collections::{BTreeMap, BTreeSet};

use super::format::*;
use super::GrubError;

/// Everything `grub-mkimage -O TARGET -d DIR [-c CONFIG] -p PREFIX MODULES...` reads.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub target: Target,
    /// How the platform directory is named in errors (e.g. `/usr/lib/grub/x86_64-efi` of a
    /// layer).
    pub dir: &'a str,
    /// `DIR/kernel.img`.
    pub kernel_img: &'a [u8],
    /// `DIR/NAME.mod` by module name (without `.mod`); only the needed ones are read.
    pub modules: &'a BTreeMap<String, Vec<u8>>,
    /// `DIR/moddep.lst`.
    pub moddep: &'a str,
    /// The modules asked for, in command-line order (a trailing `.mod` is accepted).
    pub wanted: &'a [String],
    /// The early config (`-c FILE`) bytes, embedded NUL-terminated.
    pub config: Option<&'a [u8]>,
    /// The prefix (`-p`), e.g. `/boot/grub`; grub-mkimage requires one.
    pub prefix: &'a str,
}

/// The modules to embed, dependencies first, in the order `grub-mkimage` writes them.
///
/// Mirrors `grub_util_resolve_dependencies` (`util/resolve.c`): for each wanted module a
/// depth-first walk that adds a module after its dependencies, visiting a module's
/// dependencies in the reverse of their order on its `moddep.lst` line, and using the last
/// line when a module has several. Unlike GRUB (which recurses forever on a cycle and embeds
/// a module with no line without its dependencies), a cycle or a module without a line is an
/// error here.
pub fn resolve(dir: &str, moddep: &str, wanted: &[String]) -> Result<Vec<String>, GrubError> {
    let mut deps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (i, line) in moddep.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (name, rest) = line.split_once(':').ok_or_else(|| GrubError::Moddep {
            dir: dir.to_string(),
            line: i + 1,
            message: format!("no ':' in {line:?}"),
        })?;
        // A later line replaces an earlier one, as GRUB's list (prepended, searched from the
        // head) finds the last.
        deps.insert(name, rest.split_whitespace().collect());
    }

    struct Walk<'d> {
        dir: &'d str,
        deps: BTreeMap<&'d str, Vec<&'d str>>,
        done: BTreeSet<String>,
        order: Vec<String>,
        stack: Vec<String>,
    }
    impl Walk<'_> {
        fn add(&mut self, name: &str) -> Result<(), GrubError> {
            if self.done.contains(name) {
                return Ok(());
            }
            if let Some(at) = self.stack.iter().position(|m| m == name) {
                let mut chain: Vec<&str> = self.stack[at..].iter().map(String::as_str).collect();
                chain.push(name);
                return Err(GrubError::Cycle { dir: self.dir.to_string(), chain: chain.join(" -> ") });
            }
            let Some(list) = self.deps.get(name).cloned() else {
                return Err(GrubError::NotInModdep {
                    dir: self.dir.to_string(),
                    module: name.to_string(),
                    needed_by: self.stack.last().cloned(),
                });
            };
            self.stack.push(name.to_string());
            for d in list.iter().rev() {
                self.add(d)?;
            }
            self.stack.pop();
            self.done.insert(name.to_string());
            self.order.push(name.to_string());
            Ok(())
        }
    }

    let mut walk = Walk { dir, deps, done: BTreeSet::new(), order: Vec::new(), stack: Vec::new() };
    for w in wanted {
        let name = w.strip_suffix(".mod").unwrap_or(w);
        if name.is_empty() || name.contains('/') {
            return Err(GrubError::BadModuleName { name: w.clone() });
        }
        walk.add(name)?;
    }
    Ok(walk.order)
}

/// What [`load_kernel`] learns about the relocated kernel (`struct grub_mkimage_layout`).
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Bytes of code (`.text` sections, padded so data starts on a page).
    pub exec_size: u64,
    /// Code + data + bss + GOT, page-aligned: where the module area starts.
    pub kernel_size: u64,
    /// Entry point RVA (`_start`/`start`).
    pub start_address: u64,
    /// The `.reloc` section: PE base relocation blocks.
    pub reloc: Vec<u8>,
}

fn elf_err(file: &str, message: impl Into<String>) -> GrubError {
    GrubError::Elf { file: file.to_string(), message: message.into() }
}

/// Reads `N` little-endian bytes at `off` of `d`, naming `file` when out of bounds.
fn rd<const N: usize>(file: &str, d: &[u8], off: u64) -> Result<u64, GrubError> {
    le::<N>(d, off).ok_or_else(|| elf_err(file, format!("read of {N} bytes at {off:#x} is past the end")))
}

fn wr(file: &str, d: &mut [u8], off: u64, v: u64, n: usize) -> Result<(), GrubError> {
    let r = range(d, off, n as u64)
        .ok_or_else(|| elf_err(file, format!("relocation target {off:#x} is past the end")))?;
    d[r].copy_from_slice(&v.to_le_bytes()[..n]);
    Ok(())
}

/// PE base relocation blocks as `add_fixup_entry` builds them: one block per 4 KiB page in
/// the order relocations come, padded to 8 bytes when a block closes, and the last block
/// padded with empty entries so the table ends on a page boundary.
struct Fixups {
    out: Vec<u8>,
    cur: Option<(u64, Vec<u16>)>,
}

impl Fixups {
    fn flush(&mut self, last: bool) {
        let Some((page, mut entries)) = self.cur.take() else { return };
        if last {
            let next = self.out.len() as u64 + FIXUP_BLOCK_HEADER + 2 * entries.len() as u64;
            let pad = (align_up(next, PE_ALIGN) - next) / 2;
            entries.extend(std::iter::repeat_n(0, pad as usize));
        } else {
            while (FIXUP_BLOCK_HEADER + 2 * entries.len() as u64) % 8 != 0 {
                entries.push(0);
            }
        }
        self.out.extend_from_slice(&(page as u32).to_le_bytes());
        self.out.extend_from_slice(&((FIXUP_BLOCK_HEADER + 2 * entries.len() as u64) as u32).to_le_bytes());
        for e in entries {
            self.out.extend_from_slice(&e.to_le_bytes());
        }
    }

    fn add(&mut self, file: &str, kind: u16, addr: u64) -> Result<(), GrubError> {
        if let Some((page, _)) = &self.cur {
            if addr < *page || addr - *page >= 0x1000 {
                self.flush(false);
            }
        }
        let (page, entries) = self.cur.get_or_insert_with(|| (addr & !0xfff, Vec::new()));
        if entries.len() >= FIXUP_BLOCK_MAX_ENTRIES {
            return Err(elf_err(file, "too many fixup entries in one page"));
        }
        entries.push((kind << 12) | ((addr - *page) as u16 & 0xfff));
        Ok(())
    }
}

// AArch64 relocation types (ELF for the Arm 64-bit Architecture) that GRUB handles.
const R_AARCH64_ABS64: u32 = 257;
const R_AARCH64_PREL32: u32 = 261;
const R_AARCH64_ADR_PREL_PG_HI21: u32 = 275;
const R_AARCH64_ADD_ABS_LO12_NC: u32 = 277;
const R_AARCH64_JUMP26: u32 = 282;
const R_AARCH64_CALL26: u32 = 283;
const R_AARCH64_LDST64_ABS_LO12_NC: u32 = 286;
const R_AARCH64_ADR_GOT_PAGE: u32 = 311;
const R_AARCH64_LD64_GOT_LO12_NC: u32 = 312;
// x86-64 relocation types (System V AMD64 ABI).
const R_X86_64_NONE: u32 = 0;
const R_X86_64_64: u32 = 1;
const R_X86_64_PC32: u32 = 2;
const R_X86_64_PLT32: u32 = 4;
const R_X86_64_32: u32 = 10;
const R_X86_64_32S: u32 = 11;
const R_X86_64_PC64: u32 = 24;

/// Patches an AArch64 instruction word at `off`: keep the bits of `keep`, or in `val`.
fn patch32(file: &str, d: &mut [u8], off: u64, keep: u32, val: u32) -> Result<(), GrubError> {
    let w = rd::<4>(file, d, off)? as u32;
    wr(file, d, off, u64::from((w & keep) | (val & !keep)), 4)
}

fn set_hi21(file: &str, d: &mut [u8], off: u64, offset: i64) -> Result<(), GrubError> {
    let o = offset >> 12;
    let val = (((o & 3) << 29) | (((o >> 2) & 0x7ffff) << 5)) as u32;
    patch32(file, d, off, 0x9f00_001f, val)
}

/// An ELF relocation entry.
struct Rel {
    offset: u64,
    sym: usize,
    kind: u32,
    addend: i64,
}

fn rels(file: &str, data: &[u8], s: &Section) -> Result<Vec<Rel>, GrubError> {
    if s.entsize == 0 {
        return Err(elf_err(file, format!("relocation section {} has entry size 0", s.name)));
    }
    let n = s.size / s.entsize;
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    for j in 0..n {
        let o = s.offset + j * s.entsize;
        let info = rd::<8>(file, data, o + 8)?;
        let addend = if s.sh_type == SHT_RELA { rd::<8>(file, data, o + 16)? as i64 } else { 0 };
        out.push(Rel { offset: rd::<8>(file, data, o)?, sym: (info >> 32) as usize, kind: info as u32, addend });
    }
    Ok(out)
}

/// `is_kept_reloc_section`: a `.rela.X`/`.rel.X` section counts when section `X` is kept;
/// a relocation section with another name always counts.
fn is_kept_reloc(sections: &[Section], s: &Section) -> bool {
    let target = if let Some(t) = s.name.strip_prefix(".rela") {
        if !t.starts_with('.') { return true }
        t
    } else if let Some(t) = s.name.strip_prefix(".rel") {
        if !t.starts_with('.') { return true }
        t
    } else {
        return true;
    };
    sections.iter().find(|x| x.name == target).is_some_and(Section::is_kept)
}

/// Lays out and relocates `kernel.img` (`grub_mkimage_load_image64` for an EFI target):
/// returns the kernel's image bytes (`layout.kernel_size` long, bss zeroed) and its layout.
pub fn load_kernel(target: Target, file: &str, data: &[u8]) -> Result<(Vec<u8>, Layout), GrubError> {
    let elf = Elf::parse(file, data)?;
    if elf.machine != target.elf_machine() {
        return Err(GrubError::WrongTarget {
            file: file.to_string(),
            found: format!("ELF machine {}", elf.machine),
            target: target.name(),
        });
    }
    let secs = &elf.sections;
    let vo = EFI64_HEADER_SIZE;
    let n = secs.len();
    let mut addrs = vec![0u64; n];

    // locate_sections: .text, then .data from the next page, then .bss after the data.
    let put = |s: &Section, cur: u64| -> u64 {
        let align = u64::from(s.addralign as u32);
        if align != 0 { align_up(cur.wrapping_add(vo), align).wrapping_sub(vo) } else { cur }
    };
    let mut size = 0u64;
    for (i, s) in secs.iter().enumerate().filter(|(_, s)| s.is_text()) {
        size = put(s, size);
        addrs[i] = size;
        size = size.wrapping_add(s.size);
    }
    size = align_up(size.wrapping_add(vo), PE_ALIGN).wrapping_sub(vo);
    let exec_size = size;
    for (i, s) in secs.iter().enumerate().filter(|(_, s)| s.is_data()) {
        size = put(s, size);
        addrs[i] = size;
        size = size.wrapping_add(s.size);
    }
    let bss_start = size;
    let mut end = size;
    for (i, s) in secs.iter().enumerate().filter(|(_, s)| s.is_bss()) {
        end = put(s, end);
        addrs[i] = end;
        end = end.wrapping_add(s.size);
    }
    let vaddrs: Vec<u64> = addrs.iter().map(|a| a.wrapping_add(vo)).collect();
    end = align_up(end.wrapping_add(vo), PE_ALIGN).wrapping_sub(vo);
    size = end;

    let symtab = secs
        .iter()
        .find(|s| s.sh_type == SHT_SYMTAB)
        .ok_or_else(|| elf_err(file, "no symbol table"))?;

    // arm64: a GOT after the bss, one slot per ADR_GOT_PAGE (grub_arm64_dl_get_tramp_got_size).
    let (mut got_off, mut got_size) = (0u64, 0u64);
    if target == Target::Arm64Efi {
        size = align_up(size, 16);
        for s in secs.iter().filter(|s| s.is_reloc()) {
            got_size += 8 * rels(file, data, s)?.iter().filter(|r| r.kind == R_AARCH64_ADR_GOT_PAGE).count() as u64;
        }
        got_off = size;
        size = size.wrapping_add(align_up(got_size, 16));
    }
    let kernel_size = align_up(size, PE_ALIGN);
    // No GRUB kernel comes near this; it keeps a hostile layout from allocating wildly.
    if kernel_size > 64 << 20 || exec_size > kernel_size {
        return Err(elf_err(file, format!("implausible kernel layout ({kernel_size:#x} bytes)")));
    }
    let mut out = vec![0u8; kernel_size as usize];

    // relocate_symbols: symbol values become image RVAs.
    if symtab.entsize == 0 {
        return Err(elf_err(file, "symbol table has entry size 0"));
    }
    let strtab = secs
        .get(symtab.link as usize)
        .ok_or_else(|| elf_err(file, "symbol table's string table index is out of range"))?
        .offset;
    let nsyms = symtab.size / symtab.entsize;
    let mut values = Vec::with_capacity(nsyms.min(1 << 20) as usize);
    let mut start = None;
    for i in 0..nsyms {
        let o = symtab.offset + i * symtab.entsize;
        let name_off = rd::<4>(file, data, o)?;
        let shndx = rd::<2>(file, data, o + 6)? as u16;
        let mut value = rd::<8>(file, data, o + 8)?;
        let name = cstr(data, strtab.saturating_add(name_off))
            .ok_or_else(|| elf_err(file, format!("symbol {i}: name runs past the end")))?;
        if shndx == SHN_ABS {
            values.push(value);
            continue;
        } else if shndx == SHN_UNDEF {
            if name_off != 0 && name == "__bss_start" {
                value = bss_start;
            } else if name_off != 0 && name == "_end" {
                value = end;
            } else if name_off != 0 {
                return Err(elf_err(file, format!("undefined symbol {name}")));
            } else {
                values.push(value);
                continue;
            }
        } else if usize::from(shndx) >= n {
            return Err(elf_err(file, format!("symbol {name}: section {shndx} does not exist")));
        } else {
            value = value.wrapping_add(vaddrs[usize::from(shndx)]);
        }
        if start.is_none() && (name == "_start" || name == "start") {
            start = Some(value);
        }
        values.push(value);
    }
    let start_address = start.ok_or_else(|| elf_err(file, "start symbol is not defined"))?;

    // relocate_addrs: resolve what can be resolved at link address 0, in a private copy.
    let mut img = data.to_vec();
    let mut got_next = got_off;
    let mut unmatched_got = 0u32;
    for s in secs.iter().filter(|s| s.is_reloc()) {
        if !s.is_kept() && !is_kept_reloc(secs, s) {
            continue;
        }
        let ti = s.info as usize;
        let tsec = secs.get(ti).ok_or_else(|| elf_err(file, format!("{}: target section {ti} does not exist", s.name)))?;
        let tsa = addrs[ti];
        let list = rels(file, data, s)?;
        for (j, r) in list.iter().enumerate() {
            let at = tsec.offset.wrapping_add(r.offset);
            let sym = *values.get(r.sym).ok_or_else(|| elf_err(file, format!("{}: symbol {} does not exist", s.name, r.sym)))?;
            let add = r.addend as u64;
            let pc = tsa.wrapping_add(r.offset).wrapping_add(vo);
            let bad = |kind: u32| GrubError::Relocation { file: file.to_string(), section: s.name.clone(), kind };
            match target {
                Target::X86_64Efi => match r.kind {
                    R_X86_64_NONE => {}
                    R_X86_64_64 => {
                        let v = rd::<8>(file, &img, at)?.wrapping_add(add).wrapping_add(sym);
                        wr(file, &mut img, at, v, 8)?;
                    }
                    R_X86_64_PC32 | R_X86_64_PLT32 => {
                        let v = rd::<4>(file, &img, at)?.wrapping_add(add).wrapping_add(sym).wrapping_sub(pc);
                        wr(file, &mut img, at, v, 4)?;
                    }
                    R_X86_64_PC64 => {
                        let v = rd::<8>(file, &img, at)?.wrapping_add(add).wrapping_add(sym).wrapping_sub(pc);
                        wr(file, &mut img, at, v, 8)?;
                    }
                    R_X86_64_32 | R_X86_64_32S => {
                        let v = rd::<4>(file, &img, at)?.wrapping_add(add).wrapping_add(sym);
                        wr(file, &mut img, at, v, 4)?;
                    }
                    k => return Err(bad(k)),
                },
                Target::Arm64Efi => {
                    let sym = sym.wrapping_add(add);
                    match r.kind {
                        R_AARCH64_ABS64 => {
                            let v = rd::<8>(file, &img, at)?.wrapping_add(sym);
                            wr(file, &mut img, at, v, 8)?;
                        }
                        R_AARCH64_PREL32 => {
                            let v = rd::<4>(file, &img, at)?.wrapping_add(sym).wrapping_sub(pc);
                            wr(file, &mut img, at, v, 4)?;
                        }
                        R_AARCH64_ADD_ABS_LO12_NC => patch32(file, &mut img, at, 0xffc0_03ff, (sym << 10) as u32)?,
                        R_AARCH64_LDST64_ABS_LO12_NC => patch32(file, &mut img, at, 0xfff8_03ff, (sym << 7) as u32)?,
                        R_AARCH64_JUMP26 | R_AARCH64_CALL26 => {
                            let off = sym.wrapping_sub(pc) as i64;
                            if !(-(1 << 27)..(1 << 27)).contains(&off) {
                                return Err(elf_err(file, format!("{}: CALL26 relocation out of range", s.name)));
                            }
                            patch32(file, &mut img, at, 0xfc00_0000, (off >> 2) as u32)?;
                        }
                        R_AARCH64_ADR_GOT_PAGE => {
                            let gp = got_next;
                            let gpoffset = (((gp + vo) & !0xfff) as i64).wrapping_sub((pc & !0xfff) as i64);
                            wr(file, &mut out, gp, sym, 8)?;
                            unmatched_got += 1;
                            if gpoffset != i64::from(gpoffset as i32) {
                                return Err(elf_err(file, format!("{}: HI21 out of range", s.name)));
                            }
                            set_hi21(file, &mut img, at, gpoffset)?;
                            let m = list[j + 1..]
                                .iter()
                                .find(|q| q.sym == r.sym && q.addend == r.addend && q.kind == R_AARCH64_LD64_GOT_LO12_NC)
                                .ok_or_else(|| elf_err(file, format!("{}: ADR_GOT_PAGE without matching LD64_GOT_LO12_NC", s.name)))?;
                            let at2 = tsec.offset.wrapping_add(m.offset);
                            patch32(file, &mut img, at2, 0xfff8_03ff, ((gp + vo) << 7) as u32)?;
                            got_next += 8;
                        }
                        R_AARCH64_LD64_GOT_LO12_NC => {
                            if unmatched_got == 0 {
                                return Err(elf_err(file, format!("{}: LD64_GOT_LO12_NC without matching ADR_GOT_PAGE", s.name)));
                            }
                            unmatched_got -= 1;
                        }
                        R_AARCH64_ADR_PREL_PG_HI21 => {
                            let v = ((sym & !0xfff) as i64).wrapping_sub((pc & !0xfff) as i64);
                            if v != i64::from(v as i32) {
                                return Err(elf_err(file, format!("{}: ADR_PREL_PG_HI21 out of range", s.name)));
                            }
                            set_hi21(file, &mut img, at, v)?;
                        }
                        k => return Err(bad(k)),
                    }
                }
            }
        }
    }

    // make_reloc_section: base relocations for the absolute addresses.
    let mut fx = Fixups { out: Vec::new(), cur: None };
    for s in secs.iter().filter(|s| s.is_reloc()) {
        if !is_kept_reloc(secs, s) {
            continue;
        }
        let base = *vaddrs.get(s.info as usize).ok_or_else(|| elf_err(file, format!("{}: target section does not exist", s.name)))?;
        for r in rels(file, data, s)? {
            let addr = base.wrapping_add(r.offset);
            let bad = |kind: u32| GrubError::Relocation { file: file.to_string(), section: s.name.clone(), kind };
            match (target, r.kind) {
                (Target::X86_64Efi, R_X86_64_32 | R_X86_64_32S) => {
                    return Err(elf_err(file, format!("{}: can't add a fixup entry for R_X86_64_32(S)", s.name)))
                }
                (Target::X86_64Efi, R_X86_64_64) | (Target::Arm64Efi, R_AARCH64_ABS64) => {
                    fx.add(file, REL_BASED_DIR64, addr)?
                }
                (Target::X86_64Efi, _) => {}
                (
                    Target::Arm64Efi,
                    R_AARCH64_CALL26
                    | R_AARCH64_JUMP26
                    | R_AARCH64_PREL32
                    | R_AARCH64_ADR_PREL_PG_HI21
                    | R_AARCH64_ADD_ABS_LO12_NC
                    | R_AARCH64_LDST64_ABS_LO12_NC
                    | R_AARCH64_ADR_GOT_PAGE
                    | R_AARCH64_LD64_GOT_LO12_NC,
                ) => {}
                (Target::Arm64Efi, k) => return Err(bad(k)),
            }
        }
    }
    for i in 0..got_size / 8 {
        fx.add(file, REL_BASED_DIR64, got_off + vo + 8 * i)?;
    }
    fx.flush(true);

    // Copy the kept sections (relocated) into place; bss stays zero.
    for (i, s) in secs.iter().enumerate().filter(|(_, s)| s.is_kept()) {
        if s.sh_type == SHT_NOBITS {
            continue;
        }
        let src = range(&img, s.offset, s.size).ok_or_else(|| elf_err(file, format!("section {} runs past the end", s.name)))?;
        let dst = range(&out, addrs[i], s.size)
            .ok_or_else(|| elf_err(file, format!("section {} lands outside the image", s.name)))?;
        out[dst].copy_from_slice(&img[src]);
    }

    Ok((out, Layout { exec_size, kernel_size, start_address, reloc: fx.out }))
}

/// Writes one module object (`struct grub_module_header` + body padded to `padded`) at `off`.
fn object(pe: &mut [u8], off: &mut usize, kind: u32, body: &[u8], padded: u64) {
    put_u32(pe, *off, kind);
    put_u32(pe, *off + 4, (padded + MODULE_HEADER_SIZE) as u32);
    *off += MODULE_HEADER_SIZE as usize;
    pe[*off..*off + body.len()].copy_from_slice(body);
    *off += padded as usize;
}

/// Where the next section header goes and the next section's RVA and file offset.
struct SectionCursor {
    at: usize,
    vma: u64,
    raw: u64,
}

impl SectionCursor {
    /// `init_pe_section`: virtual size = raw size = `size`; both addresses advance to the
    /// next page.
    fn add(&mut self, pe: &mut [u8], name: &[u8], size: u64, flags: u32) {
        let sh = self.at;
        pe[sh..sh + name.len()].copy_from_slice(name);
        put_u32(pe, sh + 8, size as u32);
        put_u32(pe, sh + 12, self.vma as u32);
        put_u32(pe, sh + 16, size as u32);
        put_u32(pe, sh + 20, self.raw as u32);
        put_u32(pe, sh + 36, flags);
        self.vma = align_up(self.vma + size, PE_ALIGN);
        self.raw = align_up(self.raw + size, PE_ALIGN);
        self.at += SECTION_HEADER_SIZE;
    }
}

fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// The EFI image `grub-mkimage -O TARGET -d DIR [-c CONFIG] -p PREFIX MODULES...` writes.
pub fn write(input: &Input) -> Result<Vec<u8>, GrubError> {
    let order = resolve(input.dir, input.moddep, input.wanted)?;
    let mut mods = Vec::with_capacity(order.len());
    for m in &order {
        let bytes = input.modules.get(m).ok_or_else(|| GrubError::MissingModule {
            dir: input.dir.to_string(),
            module: m.clone(),
        })?;
        mods.push(bytes.as_slice());
    }

    // Module area: grub_module_info64, then (type, size) objects, each padded to 8 bytes.
    let config_size = input.config.map(|c| align_up(c.len() as u64 + 1, ADDR_ALIGN));
    let prefix_size = align_up(input.prefix.len() as u64 + 1, ADDR_ALIGN);
    let mut total = MODULE_INFO64_SIZE;
    for m in &mods {
        total += align_up(m.len() as u64, ADDR_ALIGN) + MODULE_HEADER_SIZE;
    }
    if let Some(c) = config_size {
        total += c + MODULE_HEADER_SIZE;
    }
    total += prefix_size + MODULE_HEADER_SIZE;

    let kfile = format!("{}/kernel.img", input.dir);
    let (kernel, layout) = load_kernel(input.target, &kfile, input.kernel_img)?;
    let core_size = layout.kernel_size + total;
    if core_size > u32::MAX as u64 / 2 {
        return Err(GrubError::TooLarge { size: core_size });
    }

    let hdr = EFI64_HEADER_SIZE;
    let reloc_size = layout.reloc.len() as u64;
    let pe_size = align_up(hdr + core_size, PE_ALIGN) + align_up(reloc_size, PE_ALIGN);
    let mut pe = vec![0u8; pe_size as usize];

    // Core: the kernel, then the module area.
    let core = hdr as usize;
    pe[core..core + kernel.len()].copy_from_slice(&kernel);
    let mut off = core + layout.kernel_size as usize;
    put_u32(&mut pe, off, MODULE_MAGIC);
    put_u64(&mut pe, off + 8, MODULE_INFO64_SIZE);
    put_u64(&mut pe, off + 16, total);
    off += MODULE_INFO64_SIZE as usize;
    for m in &mods {
        object(&mut pe, &mut off, OBJ_TYPE_ELF, m, align_up(m.len() as u64, ADDR_ALIGN));
    }
    if let (Some(c), Some(size)) = (input.config, config_size) {
        object(&mut pe, &mut off, OBJ_TYPE_CONFIG, c, size);
    }
    object(&mut pe, &mut off, OBJ_TYPE_PREFIX, input.prefix.as_bytes(), prefix_size);
    debug_assert_eq!(off as u64, hdr + core_size);

    // Headers: DOS stub, "PE\0\0", COFF header, PE32+ optional header, 4 section headers.
    pe[..MSDOS_STUB_SIZE].copy_from_slice(&MSDOS_STUB);
    pe[MSDOS_STUB_SIZE..MSDOS_STUB_SIZE + 4].copy_from_slice(b"PE\0\0");
    let c = MSDOS_STUB_SIZE + 4;
    put_u16(&mut pe, c, input.target.pe_machine());
    put_u16(&mut pe, c + 2, 4);
    put_u32(&mut pe, c + 4, STABLE_TIMESTAMP);
    put_u16(&mut pe, c + 16, PE64_OPTIONAL_HEADER_SIZE as u16);
    put_u16(&mut pe, c + 18, COFF_CHARACTERISTICS);
    let o = c + COFF_HEADER_SIZE;
    let data_size = align_up(layout.kernel_size - layout.exec_size, PE_ALIGN) + align_up(total, PE_ALIGN);
    put_u16(&mut pe, o, PE64_MAGIC);
    put_u32(&mut pe, o + 4, layout.exec_size as u32); // code_size
    put_u32(&mut pe, o + 8, data_size as u32);
    put_u32(&mut pe, o + 16, layout.start_address as u32); // entry_addr
    put_u32(&mut pe, o + 20, hdr as u32); // code_base
    put_u32(&mut pe, o + 32, PE_ALIGN as u32); // section_alignment
    put_u32(&mut pe, o + 36, PE_ALIGN as u32); // file_alignment
    put_u32(&mut pe, o + 56, pe_size as u32); // image_size
    put_u32(&mut pe, o + 60, hdr as u32); // header_size
    put_u16(&mut pe, o + 68, SUBSYSTEM_EFI_APPLICATION);
    for k in 0..4 {
        put_u64(&mut pe, o + 72 + 8 * k, STACK_HEAP_SIZE);
    }
    put_u32(&mut pe, o + 108, NUM_DATA_DIRECTORIES);

    // Sections (init_pe_section): virtual and file addresses advance in page steps.
    let mut st = SectionCursor { at: o + PE64_OPTIONAL_HEADER_SIZE, vma: hdr, raw: hdr };
    st.add(&mut pe, b".text", layout.exec_size, SCN_TEXT);
    st.add(&mut pe, b".data", align_up(layout.kernel_size - layout.exec_size, PE_ALIGN), SCN_DATA);
    let mods_size = pe_size - reloc_size - align_up(hdr + layout.kernel_size, PE_ALIGN);
    st.add(&mut pe, b"mods", mods_size, SCN_DATA);
    let (reloc_rva, reloc_raw) = (st.vma, st.raw);
    st.add(&mut pe, b".reloc", reloc_size, SCN_RELOC);
    let dd = o + 112 + 8 * DATA_DIR_BASE_RELOC;
    put_u32(&mut pe, dd, reloc_rva as u32);
    put_u32(&mut pe, dd + 4, reloc_size as u32);
    let r = reloc_raw as usize;
    pe[r..r + layout.reloc.len()].copy_from_slice(&layout.reloc);
    Ok(pe)
}
