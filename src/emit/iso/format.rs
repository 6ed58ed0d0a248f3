//! On-disk structures of ISO 9660 (ECMA-119, 4th edition 2019), its Rock Ridge (SUSP 1.12 /
//! RRIP 1.12, IEEE P1281/P1282) and Joliet extensions, and El Torito 1.0: constants and
//! encoders that turn plain values into the exact bytes, with the section they come from.
//!
//! Nothing here knows about trees or layout; `writer` decides what goes where.

/// Logical sector and block size. ECMA-119 allows others; every reader expects 2048.
pub const BLOCK: u64 = 2048;
/// The system area (ECMA-119 6.2.1): 16 sectors the writer leaves zero (MBR/GPT go there).
pub const SYSTEM_AREA_BLOCKS: u32 = 16;
/// Standard identifier of every volume descriptor (ECMA-119 8.1.2).
pub const STD_ID: &[u8; 5] = b"CD001";

/// Volume descriptor types (ECMA-119 8.1.1).
pub const VD_BOOT: u8 = 0;
pub const VD_PRIMARY: u8 = 1;
pub const VD_SUPPLEMENTARY: u8 = 2;
pub const VD_TERMINATOR: u8 = 255;

/// Directory record flags (ECMA-119 9.1.6).
pub const FLAG_DIR: u8 = 0x02;
/// "This is not the final directory record for the file" (multi-extent files).
pub const FLAG_MULTI_EXTENT: u8 = 0x80;

/// Fixed part of a directory record before the file identifier (ECMA-119 9.1).
pub const DIR_RECORD_HEAD: usize = 33;
/// A directory record's length is one byte.
pub const DIR_RECORD_MAX: usize = 255;

/// Largest extent one directory record can describe: its data length is a 32-bit field and
/// the next extent must start on a block boundary, so 4 GiB minus one block (what xorriso
/// and the Linux kernel use). Larger files get several records (ECMA-119 level 3).
pub const MAX_EXTENT: u64 = 0xFFFF_F800;

/// Joliet escape sequence for UCS-2 level 3 (Joliet spec, 1995), in the SVD's escape field.
pub const JOLIET_ESCAPE: &[u8; 3] = b"%/E";
/// Longest Joliet name in UCS-2 characters (the Joliet spec's limit; genisoimage's default).
pub const JOLIET_MAX_NAME: usize = 64;

/// Longest ISO 9660 file identifier we write, before ";1" (ECMA-119 level 2 allows 30 for
/// name + "." + extension; Rock Ridge carries the real name).
pub const ISO_MAX_NAME: usize = 30;

/// SUSP/RRIP entry signatures and fixed lengths (SUSP 1.12 §5, RRIP 1.12 §4.1).
pub const SP_LEN: usize = 7;
pub const CE_LEN: usize = 28;
/// RRIP 1.12 PX: mode, links, uid, gid, serial number (inode): 5 both-endian u32 + 4.
pub const PX_LEN: usize = 44;
pub const PN_LEN: usize = 20;
/// TF with modify, access and attribute-change times in 7-byte form.
pub const TF_LEN: usize = 5 + 3 * 7;
/// TF flags: modify (bit 1), access (bit 2), attributes (bit 3).
pub const TF_FLAGS: u8 = 0x0E;
/// The largest SUSP entry (its length is one byte).
pub const SUSP_MAX: usize = 255;
/// NM and SL continue in the next entry when this flag is set.
pub const RR_CONTINUE: u8 = 0x01;
/// SL component flags (RRIP 4.1.3.1).
pub const SL_CURRENT: u8 = 0x02;
pub const SL_PARENT: u8 = 0x04;
pub const SL_ROOT: u8 = 0x08;

/// The extension reference for RRIP 1.12 (what libisofs writes for it).
pub const ER_ID: &[u8] = b"IEEE_1282";
pub const ER_DESC: &[u8] = b"THE IEEE 1282 PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS.";
pub const ER_SRC: &[u8] = b"PLEASE CONTACT THE IEEE STANDARDS DEPARTMENT, PISCATAWAY, NJ, USA FOR THE 1282 SPECIFICATION.";

/// POSIX file type bits for PX (RRIP 4.1.1).
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFIFO: u32 = 0o010000;

/// El Torito 1.0 (Phoenix/IBM 1995).
pub const EL_TORITO_ID: &[u8] = b"EL TORITO SPECIFICATION";
/// Platform ids: 0 = 80x86 BIOS, 0xEF = UEFI.
pub const PLATFORM_X86: u8 = 0;
pub const PLATFORM_EFI: u8 = 0xEF;
/// Boot indicator of a bootable entry.
pub const BOOTABLE: u8 = 0x88;
/// Section header indicators: more headers follow / final header.
pub const SECTION_MORE: u8 = 0x90;
pub const SECTION_FINAL: u8 = 0x91;
/// Catalog entries are 32 bytes.
pub const CATALOG_ENTRY: usize = 32;
/// The boot info table (mkisofs `-boot-info-table`): 56 bytes at offset 8 of the boot file.
pub const BOOT_INFO_OFFSET: usize = 8;
pub const BOOT_INFO_LEN: usize = 56;
/// BIOS no-emulation load size: 4 virtual 512-byte sectors (one CD sector), what isolinux
/// expects; it loads the rest itself using the boot info table.
pub const BIOS_LOAD_SECTORS: u16 = 4;

/// Both-byte-order 16-bit field (ECMA-119 7.2.3).
pub fn both16(v: u16) -> [u8; 4] {
    let l = v.to_le_bytes();
    let b = v.to_be_bytes();
    [l[0], l[1], b[0], b[1]]
}

/// Both-byte-order 32-bit field (ECMA-119 7.3.3).
pub fn both32(v: u32) -> [u8; 8] {
    let l = v.to_le_bytes();
    let b = v.to_be_bytes();
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

/// Read a both-endian u32 (the little-endian half; readers use that).
pub fn read_both32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// (year, month, day, hour, minute, second) in UTC.
pub use crate::date::utc;

/// 7-byte directory record date (ECMA-119 9.1.5): years since 1900 (saturating at 255,
/// the year 2155), month, day, hour, minute, second, GMT offset 0.
pub fn date7(t: u64) -> [u8; 7] {
    let (y, mo, d, h, mi, s) = utc(t);
    [(y - 1900).clamp(0, 255) as u8, mo as u8, d as u8, h as u8, mi as u8, s as u8, 0]
}

/// 17-byte volume descriptor date (ECMA-119 8.4.26.1): "YYYYMMDDHHMMSScc" + GMT offset 0.
pub fn date17(t: u64) -> [u8; 17] {
    let (y, mo, d, h, mi, s) = utc(t);
    let mut out = [0u8; 17];
    out[..16].copy_from_slice(format!("{:04}{:02}{:02}{:02}{:02}{:02}00", y.clamp(0, 9999), mo, d, h, mi, s).as_bytes());
    out
}

/// The "not specified" 17-byte date: sixteen '0' digits and offset 0.
pub fn date17_unset() -> [u8; 17] {
    let mut out = [b'0'; 17];
    out[16] = 0;
    out
}

/// One directory record (ECMA-119 9.1). `id` is the file identifier as stored (d-characters
/// with ";1", UCS-2 for Joliet, or the single byte 0/1 for "." and ".."); `su` is the system
/// use area (Rock Ridge), which must fit: the caller splits it with CE.
pub fn dir_record(extent: u32, len: u32, date: [u8; 7], flags: u8, id: &[u8], su: &[u8]) -> Vec<u8> {
    let total = dir_record_len(id.len(), su.len());
    debug_assert!(total <= DIR_RECORD_MAX, "directory record of {total} bytes");
    let mut r = Vec::with_capacity(total);
    r.push(total as u8);
    r.push(0); // extended attribute record length
    r.extend_from_slice(&both32(extent));
    r.extend_from_slice(&both32(len));
    r.extend_from_slice(&date);
    r.push(flags);
    r.push(0); // file unit size (not interleaved)
    r.push(0); // interleave gap
    r.extend_from_slice(&both16(1)); // volume sequence number
    r.push(id.len() as u8);
    r.extend_from_slice(id);
    if id.len() % 2 == 0 {
        r.push(0); // padding field: the system use area starts at an even offset
    }
    r.extend_from_slice(su);
    debug_assert_eq!(r.len(), total);
    r
}

/// Length of a directory record with an identifier of `id_len` bytes and `su_len` bytes of
/// system use.
pub fn dir_record_len(id_len: usize, su_len: usize) -> usize {
    DIR_RECORD_HEAD + id_len + (id_len % 2 == 0) as usize + su_len
}

/// One path table record (ECMA-119 9.4), little-endian (`le`) for the L table or big-endian
/// for the M table.
pub fn path_record(id: &[u8], extent: u32, parent: u16, le: bool) -> Vec<u8> {
    let mut r = Vec::with_capacity(8 + id.len() + 1);
    r.push(id.len() as u8);
    r.push(0);
    r.extend_from_slice(&if le { extent.to_le_bytes() } else { extent.to_be_bytes() });
    r.extend_from_slice(&if le { parent.to_le_bytes() } else { parent.to_be_bytes() });
    r.extend_from_slice(id);
    if id.len() % 2 == 1 {
        r.push(0);
    }
    r
}

pub fn path_record_len(id_len: usize) -> usize {
    8 + id_len + id_len % 2
}

/// Fields of a primary or supplementary volume descriptor.
pub struct VolumeDescriptor<'a> {
    pub kind: u8,
    /// Already encoded (d-characters or UCS-2) and at most 32 bytes.
    pub volume_id: &'a [u8],
    pub system_id: &'a [u8],
    pub application_id: &'a [u8],
    /// Joliet: UCS-2 text fields and the escape sequence.
    pub joliet: bool,
    pub blocks: u32,
    pub path_table_size: u32,
    pub l_table: u32,
    pub m_table: u32,
    /// The root directory's 34-byte record.
    pub root: &'a [u8],
    pub date: u64,
}

/// A text field padded with spaces (ASCII for the PVD, UCS-2 for Joliet).
fn text_field(out: &mut [u8], text: &[u8], joliet: bool) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = if joliet && i % 2 == 0 { 0 } else { b' ' };
    }
    out[..text.len()].copy_from_slice(text);
}

/// A 2048-byte primary (ECMA-119 8.4) or supplementary (8.5) volume descriptor.
pub fn volume_descriptor(v: &VolumeDescriptor) -> [u8; 2048] {
    let mut b = [0u8; 2048];
    b[0] = v.kind;
    b[1..6].copy_from_slice(STD_ID);
    b[6] = 1;
    text_field(&mut b[8..40], v.system_id, v.joliet);
    text_field(&mut b[40..72], v.volume_id, v.joliet);
    b[80..88].copy_from_slice(&both32(v.blocks));
    if v.joliet {
        b[88..91].copy_from_slice(JOLIET_ESCAPE);
    }
    b[120..124].copy_from_slice(&both16(1)); // volume set size
    b[124..128].copy_from_slice(&both16(1)); // volume sequence number
    b[128..132].copy_from_slice(&both16(BLOCK as u16));
    b[132..140].copy_from_slice(&both32(v.path_table_size));
    b[140..144].copy_from_slice(&v.l_table.to_le_bytes());
    b[148..152].copy_from_slice(&v.m_table.to_be_bytes());
    b[156..190].copy_from_slice(v.root);
    text_field(&mut b[190..318], b"", v.joliet); // volume set
    text_field(&mut b[318..446], b"", v.joliet); // publisher
    text_field(&mut b[446..574], b"", v.joliet); // data preparer
    text_field(&mut b[574..702], v.application_id, v.joliet);
    text_field(&mut b[702..739], b"", v.joliet); // copyright file
    text_field(&mut b[739..776], b"", v.joliet); // abstract file
    text_field(&mut b[776..813], b"", v.joliet); // bibliographic file
    b[813..830].copy_from_slice(&date17(v.date)); // creation
    b[830..847].copy_from_slice(&date17(v.date)); // modification
    b[847..864].copy_from_slice(&date17_unset()); // expiration: none
    b[864..881].copy_from_slice(&date17(v.date)); // effective
    b[881] = 1; // file structure version
    b
}

/// The El Torito boot record volume descriptor (El Torito 2.0): points at the catalog.
pub fn boot_record(catalog_lba: u32) -> [u8; 2048] {
    let mut b = [0u8; 2048];
    b[0] = VD_BOOT;
    b[1..6].copy_from_slice(STD_ID);
    b[6] = 1;
    b[7..7 + EL_TORITO_ID.len()].copy_from_slice(EL_TORITO_ID);
    b[0x47..0x4B].copy_from_slice(&catalog_lba.to_le_bytes());
    b
}

/// The volume descriptor set terminator (ECMA-119 8.3).
pub fn terminator() -> [u8; 2048] {
    let mut b = [0u8; 2048];
    b[0] = VD_TERMINATOR;
    b[1..6].copy_from_slice(STD_ID);
    b[6] = 1;
    b
}

/// One boot catalog entry to write.
pub struct CatalogEntry {
    pub platform: u8,
    /// Virtual 512-byte sectors to load.
    pub sectors: u16,
    pub lba: u32,
}

/// The boot catalog (El Torito 2.1-2.4) in one 2048-byte sector: the validation entry (its
/// platform is the first entry's), the first entry as the initial/default entry, then one
/// section (header + entry) per further entry, the last header marked final, as xorriso
/// lays it out.
pub fn boot_catalog(entries: &[CatalogEntry]) -> [u8; 2048] {
    let mut b = [0u8; 2048];
    let first = &entries[0];
    b[0] = 1; // header id
    b[1] = first.platform;
    b[0x1E] = 0x55;
    b[0x1F] = 0xAA;
    let sum = (0..16).map(|i| u16::from_le_bytes([b[2 * i], b[2 * i + 1]])).fold(0u16, |a, w| a.wrapping_add(w));
    b[0x1C..0x1E].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    let entry = |e: &CatalogEntry| {
        let mut x = [0u8; CATALOG_ENTRY];
        x[0] = BOOTABLE;
        x[1] = 0; // no emulation
        // load segment 0 = the traditional 0x7C0; system type 0
        x[6..8].copy_from_slice(&e.sectors.to_le_bytes());
        x[8..12].copy_from_slice(&e.lba.to_le_bytes());
        x
    };
    b[32..64].copy_from_slice(&entry(first));
    let mut pos = 64;
    for (i, e) in entries.iter().enumerate().skip(1) {
        b[pos] = if i + 1 == entries.len() { SECTION_FINAL } else { SECTION_MORE };
        b[pos + 1] = e.platform;
        b[pos + 2..pos + 4].copy_from_slice(&1u16.to_le_bytes());
        b[pos + 32..pos + 64].copy_from_slice(&entry(e));
        pos += 64;
    }
    b
}

/// SUSP CE: the rest of the system use entries are at `block`:`offset`, `len` bytes.
pub fn ce(block: u32, offset: u32, len: u32) -> Vec<u8> {
    let mut e = vec![b'C', b'E', CE_LEN as u8, 1];
    e.extend_from_slice(&both32(block));
    e.extend_from_slice(&both32(offset));
    e.extend_from_slice(&both32(len));
    e
}

/// SUSP SP: first entry of the root's "." record; no bytes skipped.
pub fn sp() -> Vec<u8> {
    vec![b'S', b'P', SP_LEN as u8, 1, 0xBE, 0xEF, 0]
}

/// SUSP ER for RRIP 1.12.
pub fn er() -> Vec<u8> {
    let mut e = vec![b'E', b'R', (8 + ER_ID.len() + ER_DESC.len() + ER_SRC.len()) as u8, 1];
    e.extend_from_slice(&[ER_ID.len() as u8, ER_DESC.len() as u8, ER_SRC.len() as u8, 1]);
    e.extend_from_slice(ER_ID);
    e.extend_from_slice(ER_DESC);
    e.extend_from_slice(ER_SRC);
    e
}

/// RRIP PX: mode with file type bits, link count, owner, serial number.
pub fn px(mode: u32, nlink: u32, uid: u32, gid: u32, ino: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', PX_LEN as u8, 1];
    for v in [mode, nlink, uid, gid, ino] {
        e.extend_from_slice(&both32(v));
    }
    e
}

/// RRIP PN: the device number as Linux/glibc encode a 64-bit `dev_t`, split in a high and a
/// low 32-bit half, as mkisofs and libisofs write it and libarchive reads it back. The Linux
/// kernel decodes `high == 0` with the old 8:8 split, which is right for majors and minors
/// below 256 (every common device node); larger minors are read wrongly by Linux only.
pub fn pn(major: u32, minor: u32) -> Vec<u8> {
    let dev = dev_t(major, minor);
    let mut e = vec![b'P', b'N', PN_LEN as u8, 1];
    e.extend_from_slice(&both32((dev >> 32) as u32));
    e.extend_from_slice(&both32(dev as u32));
    e
}

/// glibc's `makedev`.
pub fn dev_t(major: u32, minor: u32) -> u64 {
    let (ma, mi) = (major as u64, minor as u64);
    ((ma & 0xffff_f000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0xff)
}

/// glibc's `major`/`minor` of a `dev_t`.
pub fn major_minor(dev: u64) -> (u32, u32) {
    ((((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as u32, (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32)
}

/// RRIP TF: modify, access and attribute-change time, all `t`.
pub fn tf(t: u64) -> Vec<u8> {
    let mut e = vec![b'T', b'F', TF_LEN as u8, 1, TF_FLAGS];
    for _ in 0..3 {
        e.extend_from_slice(&date7(t));
    }
    e
}

/// RRIP NM entries for a name, split at 250 bytes with the CONTINUE flag.
pub fn nm(name: &[u8]) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = name.chunks(SUSP_MAX - 5).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut e = vec![b'N', b'M', (5 + c.len()) as u8, 1, if i + 1 < chunks.len() { RR_CONTINUE } else { 0 }];
            e.extend_from_slice(c);
            e
        })
        .collect()
}

/// RRIP SL entries for a symlink target: components (`.`, `..`, a leading `/` as root), a
/// long component split with the component CONTINUE flag, packed into entries of at most
/// 255 bytes, all but the last with the SL CONTINUE flag.
///
/// An entry never ends between two components: the last component of a continued entry
/// is always itself continued (split, or an empty continued piece). Linux reads either
/// form, but libarchive (3.6) adds no `/` between two SL entries, so this is the only
/// form both read alike.
pub fn sl(target: &[u8]) -> Vec<Vec<u8>> {
    // room for components in one entry, keeping 2 bytes for an empty continued piece
    const ROOM: usize = SUSP_MAX - 5 - 2;
    let mut comps: Vec<(u8, &[u8])> = Vec::new();
    let mut rest = target;
    if let Some(r) = rest.strip_prefix(b"/") {
        comps.push((SL_ROOT, b""));
        rest = r;
    }
    if !rest.is_empty() {
        for c in rest.split(|b| *b == b'/') {
            match c {
                b"." => comps.push((SL_CURRENT, b"")),
                b".." => comps.push((SL_PARENT, b"")),
                _ => comps.push((0, c)),
            }
        }
    }
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for (flags, mut c) in comps {
        loop {
            let room = ROOM - cur.len();
            if 2 + c.len() <= room {
                cur.extend_from_slice(&[flags, c.len() as u8]);
                cur.extend_from_slice(c);
                break;
            }
            if flags == 0 && room >= 3 {
                let (head, tail) = c.split_at(room - 2);
                cur.extend_from_slice(&[RR_CONTINUE, head.len() as u8]);
                cur.extend_from_slice(head);
                c = tail;
            } else {
                cur.extend_from_slice(&[RR_CONTINUE, 0]);
            }
            entries.push(std::mem::take(&mut cur));
        }
    }
    entries.push(cur);
    let n = entries.len();
    entries
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let mut e = vec![b'S', b'L', (5 + body.len()) as u8, 1, if i + 1 < n { RR_CONTINUE } else { 0 }];
            e.extend_from_slice(&body);
            e
        })
        .collect()
}

/// The directory records of one file, `len` bytes from block `lba`: one per extent of at
/// most [`MAX_EXTENT`] bytes, contiguous, every record but the last flagged multi-extent
/// (ECMA-119 level 3). Returns (extent, length, flags) per record.
pub fn file_extents(lba: u32, len: u64) -> Vec<(u32, u32, u8)> {
    if len <= MAX_EXTENT {
        return vec![(lba, len as u32, 0)];
    }
    let mut v = Vec::new();
    let mut left = len;
    let mut at = lba;
    while left > 0 {
        let n = left.min(MAX_EXTENT);
        left -= n;
        v.push((at, n as u32, if left > 0 { FLAG_MULTI_EXTENT } else { 0 }));
        at += (MAX_EXTENT / BLOCK) as u32;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_follow_ecma_119() {
        // 2023-11-14 22:13:20 UTC
        assert_eq!(date7(1_700_000_000), [123, 11, 14, 22, 13, 20, 0]);
        assert_eq!(&date17(1_700_000_000)[..16], b"2023111422132000");
        assert_eq!(&date17(1)[..16], b"1970010100000100");
        assert_eq!(date7(0), [70, 1, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn files_over_4_gib_get_contiguous_multi_extent_records() {
        assert_eq!(file_extents(100, 5), vec![(100, 5, 0)]);
        assert_eq!(file_extents(100, MAX_EXTENT), vec![(100, MAX_EXTENT as u32, 0)]);
        let ten_gib = 10u64 << 30;
        let r = file_extents(100, ten_gib);
        assert_eq!(r.len(), 3);
        let step = (MAX_EXTENT / BLOCK) as u32;
        assert_eq!(r[0], (100, MAX_EXTENT as u32, FLAG_MULTI_EXTENT));
        assert_eq!(r[1], (100 + step, MAX_EXTENT as u32, FLAG_MULTI_EXTENT));
        assert_eq!(r[2], (100 + 2 * step, (ten_gib - 2 * MAX_EXTENT) as u32, 0));
        // the extents tile the file's blocks exactly
        assert_eq!(r.iter().map(|x| x.1 as u64).sum::<u64>(), ten_gib);
    }

    #[test]
    fn device_numbers_round_trip_through_dev_t() {
        for (ma, mi) in [(1, 3), (4, 1), (7, 0), (259, 65536), (4095, 255), (0x12345, 0x678)] {
            assert_eq!(major_minor(dev_t(ma, mi)), (ma, mi));
        }
        // small numbers keep the old 8:8 form in the low half (what Linux decodes)
        let e = pn(1, 3);
        assert_eq!((read_both32(&e[4..]), read_both32(&e[12..])), (0, 0x0103));
    }

    #[test]
    fn catalog_validation_entry_sums_to_zero() {
        let c = boot_catalog(&[CatalogEntry { platform: 0, sectors: 4, lba: 40 }, CatalogEntry { platform: 0xEF, sectors: 2880, lba: 41 }]);
        let sum = (0..16).map(|i| u16::from_le_bytes([c[2 * i], c[2 * i + 1]])).fold(0u16, |a, w| a.wrapping_add(w));
        assert_eq!(sum, 0);
        assert_eq!(&c[30..32], &[0x55, 0xAA]);
        assert_eq!(c[32], BOOTABLE);
        assert_eq!(u32::from_le_bytes(c[40..44].try_into().unwrap()), 40);
        assert_eq!((c[64], c[65]), (SECTION_FINAL, PLATFORM_EFI));
        assert_eq!(u16::from_le_bytes(c[102..104].try_into().unwrap()), 2880);
    }

    #[test]
    fn long_symlink_targets_split_into_continued_entries() {
        let long = "x".repeat(600);
        let many: Vec<String> = (0..60).map(|i| format!("d{i:02}xxxx")).collect();
        let target = format!("/a/../{long}/./b/{}/../..", many.join("/"));
        let es = sl(target.as_bytes());
        assert!(es.iter().all(|e| e.len() <= SUSP_MAX && e[2] as usize == e.len()));
        assert!(es[..es.len() - 1].iter().all(|e| e[4] == RR_CONTINUE));
        assert_eq!(es.last().unwrap()[4], 0);
        // decode the components back
        let mut out = Vec::new();
        let mut cont = false;
        for e in &es {
            let mut p = 5;
            while p < e.len() {
                let (f, n) = (e[p], e[p + 1] as usize);
                let c = &e[p + 2..p + 2 + n];
                if !cont && !out.is_empty() && out != b"/" {
                    out.push(b'/');
                }
                if f & SL_ROOT != 0 {
                    out.push(b'/');
                } else if f & SL_CURRENT != 0 {
                    out.push(b'.');
                } else if f & SL_PARENT != 0 {
                    out.extend_from_slice(b"..");
                }
                out.extend_from_slice(c);
                cont = f & RR_CONTINUE != 0;
                p += 2 + n;
            }
        }
        assert_eq!(String::from_utf8(out).unwrap(), target);
        // no entry but the last ends with a component that is not continued
        for e in &es[..es.len() - 1] {
            let mut p = 5;
            let mut last = 0;
            while p < e.len() {
                last = e[p];
                p += 2 + e[p + 1] as usize;
            }
            assert_eq!(last & RR_CONTINUE, RR_CONTINUE);
        }
    }
}
