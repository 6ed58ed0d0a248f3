//! A text listing of a GRUB EFI core image: PE sections, entry point, base relocation count
//! and the objects of the module area (each module by the name in its `.modname` section),
//! for tests and for reviewing what an image holds.

use std::fmt::Write as _;

use super::format::*;

/// Module name of a `.mod` file (its `.modname` section), if it parses.
fn modname(m: &[u8]) -> Option<String> {
    let elf = Elf::parse("module", m).ok()?;
    let s = elf.sections.iter().find(|s| s.name == ".modname")?;
    cstr(m, s.offset).map(str::to_string)
}

/// Describes `pe`, or says where it stops making sense.
pub fn dump(pe: &[u8]) -> String {
    let mut out = String::new();
    if let Err(e) = dump_into(pe, &mut out) {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

fn dump_into(pe: &[u8], out: &mut String) -> Result<(), String> {
    let r2 = |o: u64| le::<2>(pe, o).ok_or(format!("truncated at {o:#x}"));
    let r4 = |o: u64| le::<4>(pe, o).ok_or(format!("truncated at {o:#x}"));
    let r8 = |o: u64| le::<8>(pe, o).ok_or(format!("truncated at {o:#x}"));
    let lfanew = r4(0x3c)?;
    if pe.get(lfanew as usize..lfanew as usize + 4) != Some(b"PE\0\0") {
        return Err("no PE signature".into());
    }
    let c = lfanew + 4;
    let nsec = r2(c + 2)?;
    let o = c + COFF_HEADER_SIZE as u64;
    let _ = writeln!(out, "machine {:#06x} sections {nsec} entry {:#x} image {:#x}", r2(c)?, r4(o + 16)?, r4(o + 56)?);
    let mut mods = None;
    for i in 0..nsec {
        let sh = o + r2(c + 16)? + i * SECTION_HEADER_SIZE as u64;
        let name = pe.get(sh as usize..sh as usize + 8).ok_or("truncated section table")?;
        let name = String::from_utf8_lossy(name).trim_end_matches('\0').to_string();
        let (vsize, va, rsize, raw) = (r4(sh + 8)?, r4(sh + 12)?, r4(sh + 16)?, r4(sh + 20)?);
        let _ = writeln!(out, "section {name:8} va {va:#8x} vsize {vsize:#8x} raw {raw:#8x} size {rsize:#8x} flags {:#010x}", r4(sh + 36)?);
        if name == ".data" {
            mods = Some(raw + rsize);
        }
        if name == ".reloc" {
            let (mut p, end, mut n) = (raw, raw + rsize, 0);
            while p + 8 <= end {
                let size = r4(p + 4)?;
                if size < 8 {
                    break;
                }
                n += (size - 8) / 2;
                p += size;
            }
            let _ = writeln!(out, "  {n} fixup entries (with padding)");
        }
    }
    // The module area follows the kernel; find its magic from the end of .data on.
    let start = mods.ok_or("no .data section")?;
    let mut at = (start..pe.len() as u64)
        .step_by(8)
        .find(|&p| le::<4>(pe, p) == Some(u64::from(MODULE_MAGIC)))
        .ok_or("no module area")?;
    let total = r8(at + 16)?;
    let end = at.saturating_add(total);
    let _ = writeln!(out, "module area at {at:#x}, {total:#x} bytes");
    at = at.checked_add(r8(at + 8)?).ok_or("module area offset overflows")?;
    while at + 8 <= end {
        let (kind, size) = (r4(at)?, r4(at + 4)?);
        if size < 8 {
            return Err(format!("object at {at:#x} has size {size}"));
        }
        let body = pe.get((at + 8) as usize..(at + size) as usize).ok_or("object runs past the end")?;
        let what = match kind as u32 {
            OBJ_TYPE_ELF => format!("module {}", modname(body).unwrap_or_else(|| "?".into())),
            OBJ_TYPE_CONFIG => format!("config {:?}", String::from_utf8_lossy(body).trim_end_matches('\0')),
            OBJ_TYPE_PREFIX => format!("prefix {:?}", String::from_utf8_lossy(body).trim_end_matches('\0')),
            k => format!("object type {k}"),
        };
        let _ = writeln!(out, "  {what} ({} bytes)", size - 8);
        at += size;
    }
    Ok(())
}
