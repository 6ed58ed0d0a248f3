//! GRUB's BIOS (`i386-pc`) boot chain for a GPT disk, assembled from a platform directory
//! (`kernel.img`, `*.mod`, `moddep.lst`, `lzma_decompress.img`, `diskboot.img`, `boot.img`)
//! without running anything: the core image `grub-mkimage -O i386-pc` writes, placed as
//! `grub-bios-setup` places it in a BIOS boot partition, and the MBR boot code that loads it.
//!
//! Core image (GRUB 2.06 `util/mkimage.c` `grub_install_generate_image`, `util/grub-mkimagexx.c`
//! `grub_mkimage_load_image32` for a non-relocatable target): `kernel.img` is an ELF32
//! executable linked at 0x9000 ([`LINK_ADDR`]); its PROGBITS text and data sections are
//! copied to their link addresses minus 0x9000, then the module area follows (the 12-byte
//! `grub_module_info32`, then each module, the early config and the prefix as
//! `grub_module_header` objects padded to 4 bytes). That payload is LZMA-compressed
//! (raw LZMA1, lc=3 lp=0 pb=2, 64 KiB dictionary: the parameters `lzma_decompress.img`'s
//! decoder has built in; the encoder is liblzma's, so the compressed bytes differ from
//! grub-mkimage's while the payload is the same, which tests/it/disk_modules.rs checks by
//! decompressing both), appended to `lzma_decompress.img` with its compressed and
//! uncompressed sizes patched in (offsets 0x08 and 0x0c), behind `diskboot.img` whose
//! blocklist (the last 12 bytes: start sector u64, sector count u16, load segment u16)
//! names where the rest of the core image lies.
//!
//! MBR (`util/setup.c`): `boot.img`'s first 0x1b8 bytes, with the BIOS parameter block area
//! (0x03..0x5a) taken from the disk's own MBR (zero for ours), the core image's first sector
//! at 0x5c (u64), and the boot-drive check at 0x66 replaced by two NOPs (a hard disk: some
//! BIOSes pass a wrong drive number); the disk id, partition table and 0x55AA stay the
//! disk's. No Reed-Solomon redundancy is added (`grub-install --no-rs-codes`; the decoder
//! skips a redundancy of 0).

use super::GrubError;

/// `GRUB_KERNEL_I386_PC_LINK_ADDR`: where `kernel.img` is linked and the core is run.
pub const LINK_ADDR: u64 = 0x9000;
/// `GRUB_DECOMPRESSOR_I386_PC_COMPRESSED_SIZE`, `..._UNCOMPRESSED_SIZE`: u32 fields of
/// `lzma_decompress.img`.
const COMPRESSED_SIZE: usize = 0x08;
const UNCOMPRESSED_SIZE: usize = 0x0c;
/// `GRUB_KERNEL_I386_PC_NO_REED_SOLOMON_LENGTH`: a u16 the setup reads to check versions.
const NO_RS_LENGTH: usize = 0x14;
/// The decompressor must fit below the kernel (0x8200 .. 0x9000).
const MAX_DECOMPRESSOR: usize = 0x9000 - 0x8200;
/// The core image must end below 0x78000 once loaded at 0x8000... (mkimage's check).
const MAX_CORE_END: u64 = 0x78000;
/// `grub_module_info32` and `grub_module_header` sizes; the module magic ("mimg").
const MODULE_INFO32_SIZE: u64 = 12;
const MODULE_HEADER_SIZE: u64 = 8;
const MODULE_MAGIC: u32 = 0x676d_696d;
const OBJ_TYPE_ELF: u32 = 0;
const OBJ_TYPE_CONFIG: u32 = 2;
const OBJ_TYPE_PREFIX: u32 = 3;
/// `boot.img` (`include/grub/i386/pc/boot.h`): BPB area, kernel sector, drive check, and
/// where the disk's own bytes (disk id, partition table) start.
const BPB_START: usize = 0x03;
const BPB_END: usize = 0x5a;
const KERNEL_SECTOR: usize = 0x5c;
const DRIVE_CHECK: usize = 0x66;
const WINDOWS_NT_MAGIC: usize = 0x1b8;
/// The blocklist at the end of `diskboot.img` and the segment it must already name
/// (`GRUB_BOOT_I386_PC_KERNEL_SEG + 0x20`).
const BLOCKLIST: usize = 512 - 12;
const BLOCKLIST_SEGMENT: u16 = 0x820;

/// Everything `grub-mkimage -O i386-pc -d DIR [-c CONFIG] -p PREFIX MODULES...` reads.
pub struct PcInput<'a> {
    /// How the platform directory is named in errors.
    pub dir: &'a str,
    pub kernel_img: &'a [u8],
    pub lzma_decompress: &'a [u8],
    pub diskboot: &'a [u8],
    /// `NAME.mod` by module name; only the needed ones are read.
    pub modules: &'a std::collections::BTreeMap<String, Vec<u8>>,
    pub moddep: &'a str,
    pub wanted: &'a [String],
    pub config: Option<&'a [u8]>,
    pub prefix: &'a str,
}

fn err(file: &str, message: impl Into<String>) -> GrubError {
    GrubError::Elf { file: file.to_string(), message: message.into() }
}

fn le(d: &[u8], off: usize, n: usize) -> Option<u64> {
    d.get(off..off.checked_add(n)?).map(|b| b.iter().rev().fold(0u64, |a, x| (a << 8) | u64::from(*x)))
}

/// `kernel.img` laid out at its link addresses (text, then data, PROGBITS only): the
/// uncompressed kernel part of the core, and the bss size after it.
pub fn load_kernel32(file: &str, d: &[u8]) -> Result<(Vec<u8>, u64), GrubError> {
    const SHT_PROGBITS: u64 = 1;
    const SHT_NOBITS: u64 = 8;
    const SHF_ALLOC: u64 = 2;
    const SHF_EXECINSTR: u64 = 4;
    if d.get(..5) != Some(&b"\x7fELF\x01"[..]) || d.get(5) != Some(&1) {
        return Err(err(file, "not a little-endian ELF32 file"));
    }
    if le(d, 18, 2) != Some(3) {
        return Err(GrubError::WrongTarget { file: file.to_string(), found: format!("ELF machine {}", le(d, 18, 2).unwrap_or(0)), target: "i386-pc" });
    }
    let bad = || err(file, "section header table runs past the end");
    let (shoff, shentsize, shnum) = (le(d, 0x20, 4).ok_or_else(bad)?, le(d, 0x2e, 2).ok_or_else(bad)?, le(d, 0x30, 2).ok_or_else(bad)?);
    if shentsize < 40 {
        return Err(err(file, "section headers are too small"));
    }
    struct S {
        kind: u64,
        flags: u64,
        addr: u64,
        offset: u64,
        size: u64,
    }
    let mut secs = Vec::new();
    for i in 0..shnum {
        let h = (shoff + i * shentsize) as usize;
        let f = |o: usize| le(d, h + o, 4).ok_or_else(bad);
        secs.push(S { kind: f(4)?, flags: f(8)?, addr: f(0xc)?, offset: f(0x10)?, size: f(0x14)? });
    }
    let text = |s: &S| s.kind == SHT_PROGBITS && s.flags & (SHF_EXECINSTR | SHF_ALLOC) == SHF_EXECINSTR | SHF_ALLOC;
    let data = |s: &S| s.kind == SHT_PROGBITS && s.flags & (SHF_EXECINSTR | SHF_ALLOC) == SHF_ALLOC;
    let mut size = 0u64;
    for s in secs.iter().filter(|s| text(s)) {
        if s.addr != LINK_ADDR {
            return Err(err(file, format!("a text section starts at {:#x}, not at the link address {LINK_ADDR:#x}", s.addr)));
        }
        size = s.addr - LINK_ADDR + s.size;
    }
    for s in secs.iter().filter(|s| data(s)) {
        size = s.addr.checked_sub(LINK_ADDR).ok_or_else(|| err(file, "a data section lies below the link address"))? + s.size;
    }
    if size > MAX_CORE_END {
        return Err(err(file, format!("implausible kernel size {size:#x}")));
    }
    let mut out = vec![0u8; size as usize];
    for s in secs.iter().filter(|s| text(s) || data(s)) {
        let at = (s.addr - LINK_ADDR) as usize;
        let src = d.get(s.offset as usize..(s.offset + s.size) as usize).ok_or_else(|| err(file, "a section runs past the end"))?;
        out.get_mut(at..at + src.len()).ok_or_else(|| err(file, "a section lies outside the kernel"))?.copy_from_slice(src);
    }
    let mut end = size;
    for s in secs.iter().filter(|s| s.kind == SHT_NOBITS) {
        end = end.max(s.addr.saturating_sub(LINK_ADDR) + s.size);
    }
    Ok((out, end - size))
}

/// The uncompressed payload of the core image: the kernel, then the module area.
pub fn payload(input: &PcInput) -> Result<Vec<u8>, GrubError> {
    let order = super::resolve(input.dir, input.moddep, input.wanted)?;
    let align = |n: u64| n.next_multiple_of(4);
    let mut mods = Vec::new();
    for m in &order {
        mods.push(input.modules.get(m).ok_or_else(|| GrubError::MissingModule { dir: input.dir.to_string(), module: m.clone() })?.as_slice());
    }
    let kfile = format!("{}/kernel.img", input.dir);
    let (mut out, bss) = load_kernel32(&kfile, input.kernel_img)?;
    let kernel_size = out.len() as u64;
    let mut total = MODULE_INFO32_SIZE;
    for m in &mods {
        total += align(m.len() as u64) + MODULE_HEADER_SIZE;
    }
    let config_size = input.config.map(|c| align(c.len() as u64 + 1));
    if let Some(c) = config_size {
        total += c + MODULE_HEADER_SIZE;
    }
    let prefix_size = align(input.prefix.len() as u64 + 1);
    total += prefix_size + MODULE_HEADER_SIZE;
    if kernel_size + bss + LINK_ADDR > 0x68000 {
        return Err(GrubError::TooLarge { size: kernel_size + bss });
    }
    let put32 = |o: &mut Vec<u8>, v: u32| o.extend_from_slice(&v.to_le_bytes());
    put32(&mut out, MODULE_MAGIC);
    put32(&mut out, MODULE_INFO32_SIZE as u32);
    put32(&mut out, total as u32);
    let object = |o: &mut Vec<u8>, kind: u32, body: &[u8], padded: u64| {
        put32(o, kind);
        put32(o, (padded + MODULE_HEADER_SIZE) as u32);
        let start = o.len();
        o.extend_from_slice(body);
        o.resize(start + padded as usize, 0);
    };
    for m in &mods {
        object(&mut out, OBJ_TYPE_ELF, m, align(m.len() as u64));
    }
    if let (Some(c), Some(size)) = (input.config, config_size) {
        object(&mut out, OBJ_TYPE_CONFIG, c, size);
    }
    object(&mut out, OBJ_TYPE_PREFIX, input.prefix.as_bytes(), prefix_size);
    debug_assert_eq!(out.len() as u64, kernel_size + total);
    Ok(out)
}

/// Raw LZMA1 with the parameters GRUB's i386-pc decoder assumes (lc=3, lp=0, pb=2, 64 KiB
/// dictionary). liblzma ends the stream with an end marker, which the decoder, stopping at
/// the uncompressed size, never reads.
fn lzma(data: &[u8]) -> Result<Vec<u8>, GrubError> {
    use liblzma::stream::{Action, Filters, LzmaOptions, Status, Stream};
    let tl = |e: liblzma::stream::Error| GrubError::Elf { file: "core image".into(), message: format!("LZMA compression failed: {e}") };
    let mut opts = LzmaOptions::new_preset(9).map_err(tl)?;
    opts.dict_size(1 << 16).literal_context_bits(3).literal_position_bits(0).position_bits(2);
    let mut f = Filters::new();
    f.lzma1(&opts);
    let mut s = Stream::new_raw_encoder(&f).map_err(tl)?;
    let mut out = Vec::with_capacity(data.len() + 1024);
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(1 << 16);
        }
        let before = s.total_in();
        let st = s.process_vec(input, &mut out, Action::Finish).map_err(tl)?;
        input = &input[(s.total_in() - before) as usize..];
        if st == Status::StreamEnd {
            return Ok(out);
        }
    }
}

/// The core image `grub-mkimage -O i386-pc` writes (diskboot.img, the patched decompressor,
/// the compressed payload), with the blocklist naming `first_sector + 1` as where the
/// sectors after diskboot.img are (what `grub-bios-setup` writes when it embeds the core at
/// `first_sector`).
pub fn core_image(input: &PcInput, first_sector: u64) -> Result<Vec<u8>, GrubError> {
    let dec = |m: &str| err(&format!("{}/lzma_decompress.img", input.dir), m.to_string());
    if input.lzma_decompress.len() > MAX_DECOMPRESSOR || input.lzma_decompress.len() < NO_RS_LENGTH + 2 {
        return Err(dec("not a GRUB i386-pc decompressor (wrong size)"));
    }
    if input.diskboot.len() != 512 || le(input.diskboot, BLOCKLIST + 10, 2) != Some(u64::from(BLOCKLIST_SEGMENT)) {
        return Err(err(&format!("{}/diskboot.img", input.dir), "not GRUB's diskboot.img (512 bytes, load segment 0x820 in its blocklist)"));
    }
    if le(input.lzma_decompress, NO_RS_LENGTH, 2) == Some(0xffff) {
        return Err(dec("version mismatch (no Reed-Solomon length)"));
    }
    let payload = payload(input)?;
    let packed = lzma(&payload)?;
    let mut dcomp = input.lzma_decompress.to_vec();
    dcomp[COMPRESSED_SIZE..COMPRESSED_SIZE + 4].copy_from_slice(&(packed.len() as u32).to_le_bytes());
    dcomp[UNCOMPRESSED_SIZE..UNCOMPRESSED_SIZE + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let rest = dcomp.len() + packed.len();
    if LINK_ADDR + rest as u64 > MAX_CORE_END {
        return Err(GrubError::TooLarge { size: rest as u64 });
    }
    let sectors = rest.div_ceil(512) as u16;
    let mut core = input.diskboot.to_vec();
    core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(first_sector + 1).to_le_bytes());
    core[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&sectors.to_le_bytes());
    core.extend_from_slice(&dcomp);
    core.extend_from_slice(&packed);
    core.resize(core.len().next_multiple_of(512), 0);
    Ok(core)
}

/// The MBR: `boot.img` set up to load the core image at `core_sector`, over the disk's own
/// MBR `disk` (whose disk id and partition table stay).
pub fn mbr(boot_img: &[u8], dir: &str, disk: &[u8; 512], core_sector: u64) -> Result<[u8; 512], GrubError> {
    if boot_img.len() != 512 || boot_img[510..] != [0x55, 0xaa] {
        return Err(err(&format!("{dir}/boot.img"), "not GRUB's boot.img (512 bytes ending in 55 AA)"));
    }
    let mut m = *disk;
    m[..WINDOWS_NT_MAGIC].copy_from_slice(&boot_img[..WINDOWS_NT_MAGIC]);
    m[BPB_START..BPB_END].copy_from_slice(&disk[BPB_START..BPB_END]);
    m[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_sector.to_le_bytes());
    m[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lzma_round_trips_with_grub_parameters() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 97) as u8 ^ (i / 1000) as u8).collect();
        let packed = lzma(&data).unwrap();
        assert!(packed.len() < data.len() / 4);
        let mut opts = liblzma::stream::LzmaOptions::new_preset(0).unwrap();
        opts.dict_size(1 << 16).literal_context_bits(3).literal_position_bits(0).position_bits(2);
        let mut f = liblzma::stream::Filters::new();
        f.lzma1(&opts);
        let mut s = liblzma::stream::Stream::new_raw_decoder(&f).unwrap();
        let mut out = Vec::with_capacity(data.len() + 16);
        s.process_vec(&packed, &mut out, liblzma::stream::Action::Finish).unwrap();
        assert_eq!(out, data);
        assert_eq!(lzma(&data).unwrap(), packed, "not deterministic");
    }

    #[test]
    fn refuses_what_is_not_grub() {
        assert!(load_kernel32("k", b"\x7fELF\x02\x01").is_err());
        let disk = [0u8; 512];
        assert!(mbr(&[0u8; 512], "d", &disk, 34).is_err());
    }
}
