//! Partition tables for images that boot as disks: an MBR (optionally isohybrid's, carrying
//! syslinux's `isohdpfx.bin` boot code) and a GUID partition table, primary and backup, with
//! every GUID and the MBR id derived from a hash of the inputs.
//!
//! Written by hand (about a page of little-endian structs and two CRC32s, UEFI 2.10 §5): the
//! `gpt` crate opens a whole device or file and owns it, writes random v4 GUIDs and its own
//! protective MBR; `gptman` reads and writes through `Read + Write + Seek` but also builds
//! its own MBR and aligns partitions itself. Our tables sit in a region of a file someone
//! else lays out (an ISO's system area, with the ESP where the ISO writer put it, and the
//! backup at the very end), beside an isohybrid MBR neither crate knows; so we place every
//! byte ourselves and check the result with `sgdisk -v` and `fdisk -l` in the tests.
//!
//! The hybrid layout (what `xorriso -isohybrid-gpt-basdat` aims at, without its overlapping
//! partitions that `sgdisk -v` rejects): MBR entry 1 is the GPT's protective 0xEE entry from
//! LBA 1 up to the ESP, entry 2 the ESP itself (type 0xEF, active) so BIOS-era tools see it
//! too; the GPT holds the ESP as an EFI System Partition. UEFI firmware (OVMF) reads the GPT
//! because an 0xEE entry starts at LBA 1; a BIOS runs the isohybrid code, which loads
//! `isolinux.bin` from the LBA at byte 432.

use crate::error::{Error, IoContext, Result};
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;
use std::os::unix::fs::FileExt;

/// Logical sector size of every table here.
pub const SECTOR: u64 = 512;
/// Partition entries in each GPT array (the minimum the UEFI spec allows, 16 KiB).
pub const ENTRIES: u32 = 128;
/// Bytes per partition entry.
pub const ENTRY_SIZE: u32 = 128;
/// Sectors one entry array takes (128 × 128 / 512).
pub const ARRAY_SECTORS: u64 = (ENTRIES as u64 * ENTRY_SIZE as u64) / SECTOR;
/// Sectors the backup GPT needs at the end of the disk (array + header).
pub const BACKUP_SECTORS: u64 = ARRAY_SECTORS + 1;
/// Bytes the isohybrid MBR takes from `isohdpfx.bin` (the rest is ours: LBA, id, table).
pub const MBR_CODE: usize = 432;
/// "EFI PART".
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Revision 1.0.
const REVISION: u32 = 0x0001_0000;
/// Header size (the rest of the sector is zero).
const HEADER_SIZE: u32 = 92;

/// A GUID in its on-disk (mixed-endian) byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parse the text form `C12A7328-F81F-11D2-BA4B-00A0C93EC93B` into disk byte order.
    pub const fn from_text(s: &str) -> Guid {
        let b = s.as_bytes();
        const fn hex(c: u8) -> u8 {
            match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => panic!("bad hex digit"),
            }
        }
        const fn byte(b: &[u8], i: usize) -> u8 {
            hex(b[i]) << 4 | hex(b[i + 1])
        }
        // Text positions of the 16 bytes in disk order: the first three groups little-endian.
        const POS: [usize; 16] = [6, 4, 2, 0, 11, 9, 16, 14, 19, 21, 24, 26, 28, 30, 32, 34];
        let mut out = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            out[i] = byte(b, POS[i]);
            i += 1;
        }
        Guid(out)
    }

    /// A version-4-shaped GUID from a hash of `seed` and `what` (never random: the same
    /// inputs give the same GUID).
    pub fn derive(seed: &[u8], what: &str) -> Guid {
        let h = Sha256::new().chain_update(b"stagebox-guid\0").chain_update(seed).chain_update(what.as_bytes()).finalize();
        let mut g = [0u8; 16];
        g.copy_from_slice(&h[..16]);
        g[7] = (g[7] & 0x0f) | 0x40; // version 4 (high nibble of the little-endian third group)
        g[8] = (g[8] & 0x3f) | 0x80; // RFC 4122 variant
        Guid(g)
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]]),
            g[8],
            g[9]
        )?;
        g[10..].iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

/// EFI System Partition.
pub const ESP_TYPE: Guid = Guid::from_text("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
/// Linux filesystem data.
pub const LINUX_TYPE: Guid = Guid::from_text("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
/// Microsoft basic data (what xorriso gives an ISO's partitions).
pub const BASIC_DATA_TYPE: Guid = Guid::from_text("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7");

/// One GPT partition: sectors `first..=last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub type_guid: Guid,
    pub guid: Guid,
    pub first: u64,
    pub last: u64,
    pub attributes: u64,
    /// At most 36 UTF-16 code units.
    pub name: String,
}

/// A GPT for a disk of `sectors` 512-byte sectors.
#[derive(Debug, Clone)]
pub struct Gpt {
    pub disk_guid: Guid,
    pub sectors: u64,
    pub partitions: Vec<Partition>,
}

impl Gpt {
    /// First sector a partition may use (after MBR, header and the primary array).
    pub fn first_usable(&self) -> u64 {
        2 + ARRAY_SECTORS
    }
    /// Last sector a partition may use (before the backup array and header).
    pub fn last_usable(&self) -> u64 {
        self.sectors - 1 - BACKUP_SECTORS
    }

    fn check(&self) -> Result<()> {
        if self.sectors < 2 * BACKUP_SECTORS + 2 {
            return Err(Error::other(format!("a GPT needs at least {} sectors, the disk has {}", 2 * BACKUP_SECTORS + 2, self.sectors)));
        }
        if self.partitions.len() > ENTRIES as usize {
            return Err(Error::other("more than 128 GPT partitions"));
        }
        let mut sorted: Vec<&Partition> = self.partitions.iter().collect();
        sorted.sort_by_key(|p| p.first);
        for (i, p) in sorted.iter().enumerate() {
            if p.first > p.last || p.first < self.first_usable() || p.last > self.last_usable() {
                return Err(Error::other(format!(
                    "GPT partition {:?} (sectors {}..={}) is outside the usable sectors {}..={}",
                    p.name,
                    p.first,
                    p.last,
                    self.first_usable(),
                    self.last_usable()
                )));
            }
            if p.name.encode_utf16().count() > 36 {
                return Err(Error::other(format!("GPT partition name {:?} is longer than 36 UTF-16 units", p.name)));
            }
            if let Some(n) = sorted.get(i + 1) {
                if n.first <= p.last {
                    return Err(Error::other(format!("GPT partitions {:?} and {:?} overlap", p.name, n.name)));
                }
            }
        }
        Ok(())
    }

    /// The partition entry array (128 entries, unused ones zero).
    pub fn array(&self) -> Vec<u8> {
        let mut a = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut a[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&p.type_guid.0);
            e[16..32].copy_from_slice(&p.guid.0);
            e[32..40].copy_from_slice(&p.first.to_le_bytes());
            e[40..48].copy_from_slice(&p.last.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (j, u) in p.name.encode_utf16().take(36).enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        a
    }

    /// A header sector: at `current`, naming `backup` as the other copy, array at `array_lba`.
    fn header(&self, current: u64, backup: u64, array_lba: u64, array_crc: u32) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        // 16..20 header CRC, filled last; 20..24 reserved.
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable().to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.0);
        h[72..80].copy_from_slice(&array_lba.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRIES.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Write the primary GPT (sectors 1..=33) and the backup (the last 33 sectors) into
    /// `out`, whose size must already be `sectors` × 512. Sector 0 (the MBR) is not touched.
    pub fn write(&self, out: &std::fs::File, path: &std::path::Path) -> Result<()> {
        self.check()?;
        let len = out.metadata().at(path)?.len();
        if len != self.sectors * SECTOR {
            return Err(Error::other(format!("{}: {} bytes, but the GPT is laid out for {} sectors", path.display(), len, self.sectors)));
        }
        let array = self.array();
        let crc = crc32fast::hash(&array);
        let last = self.sectors - 1;
        let backup_array = last - ARRAY_SECTORS;
        out.write_all_at(&self.header(1, last, 2, crc), SECTOR).at(path)?;
        out.write_all_at(&array, 2 * SECTOR).at(path)?;
        out.write_all_at(&array, backup_array * SECTOR).at(path)?;
        out.write_all_at(&self.header(last, 1, backup_array, crc), last * SECTOR).at(path)?;
        Ok(())
    }
}

/// One MBR partition entry (LBA fields; CHS is computed from them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrEntry {
    pub active: bool,
    pub kind: u8,
    pub first: u32,
    pub sectors: u32,
}

/// CHS of `lba` for the 255-head, 63-sector geometry, or the "beyond CHS" marker.
fn chs(lba: u64) -> [u8; 3] {
    const H: u64 = 255;
    const S: u64 = 63;
    if lba >= 1024 * H * S {
        return [0xfe, 0xff, 0xff];
    }
    let c = lba / (H * S);
    let h = (lba / S) % H;
    let s = lba % S + 1;
    [h as u8, (s as u8) | ((c >> 2) as u8 & 0xc0), c as u8]
}

/// An MBR sector: `code` (up to 432 bytes of boot code, e.g. `isohdpfx.bin`), the isohybrid
/// boot-file LBA at byte 432 (u32, 512-byte sectors; bytes 436..440 zero), the disk id at
/// 440, the four entries at 446 and 0x55AA at 510.
pub fn mbr(code: &[u8], boot_lba: Option<u32>, disk_id: u32, entries: &[MbrEntry]) -> Result<[u8; 512]> {
    if entries.len() > 4 {
        return Err(Error::other("an MBR holds at most 4 partitions"));
    }
    let mut m = [0u8; 512];
    let n = code.len().min(MBR_CODE);
    m[..n].copy_from_slice(&code[..n]);
    if let Some(l) = boot_lba {
        m[432..436].copy_from_slice(&l.to_le_bytes());
    }
    m[440..444].copy_from_slice(&disk_id.to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        let o = 446 + 16 * i;
        m[o] = if e.active { 0x80 } else { 0 };
        m[o + 1..o + 4].copy_from_slice(&chs(e.first.into()));
        m[o + 4] = e.kind;
        let end = u64::from(e.first) + u64::from(e.sectors).max(1) - 1;
        m[o + 5..o + 8].copy_from_slice(&chs(end));
        m[o + 8..o + 12].copy_from_slice(&e.first.to_le_bytes());
        m[o + 12..o + 16].copy_from_slice(&e.sectors.to_le_bytes());
    }
    m[510] = 0x55;
    m[511] = 0xaa;
    Ok(m)
}

/// The MBR id of a disk: 4 bytes of a hash of `seed` (never zero: tools treat 0 as unset).
pub fn disk_id(seed: &[u8]) -> u32 {
    let h = Sha256::new().chain_update(b"stagebox-mbr-id\0").chain_update(seed).finalize();
    u32::from_le_bytes([h[0], h[1], h[2], h[3]]).max(1)
}

/// Read a disk image's MBR and GPT (primary, checked against the backup) into text, for
/// `inspect`. Returns `None` when sector 0 carries no 0x55AA signature.
pub fn dump(file: &std::fs::File, path: &std::path::Path) -> Result<Option<String>> {
    let len = file.metadata().at(path)?.len();
    if len < 2 * SECTOR {
        return Ok(None);
    }
    let mut m = [0u8; 512];
    file.read_exact_at(&mut m, 0).at(path)?;
    if m[510..512] != [0x55, 0xaa] {
        return Ok(None);
    }
    let mut s = String::new();
    let le32 = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
    let _ = writeln!(s, "MBR: disk id 0x{:08x}, boot code {}", le32(&m[440..]), if m[..MBR_CODE].iter().all(|b| *b == 0) { "none" } else { "present" });
    let boot_lba = le32(&m[432..]);
    if boot_lba != 0 {
        let _ = writeln!(s, "  isohybrid boot file at sector {boot_lba} (2048-byte block {})", boot_lba / 4);
    }
    for i in 0..4 {
        let e = &m[446 + 16 * i..462 + 16 * i];
        if e[4] == 0 && le32(&e[12..]) == 0 {
            continue;
        }
        let _ = writeln!(
            s,
            "  partition {}: type 0x{:02x}{} start {} sectors {}",
            i + 1,
            e[4],
            if e[0] == 0x80 { " active" } else { "" },
            le32(&e[8..]),
            le32(&e[12..])
        );
    }
    let Some(t) = read(file, path)? else {
        let _ = writeln!(s, "GPT: none");
        return Ok(Some(s));
    };
    let ok = |b: bool| if b { "ok" } else { "BAD" };
    let _ = writeln!(
        s,
        "GPT: disk GUID {}, usable sectors {}..={}, {} entries of {} bytes at sector {}, header CRC {}, array CRC {}",
        t.disk_guid,
        t.first_usable,
        t.last_usable,
        t.entries,
        t.entry_size,
        t.array_lba,
        ok(t.header_ok),
        ok(t.array_ok)
    );
    let backup = match t.backup {
        Some(good) => format!("at sector {}, {}", t.backup_lba, ok(good)),
        None => format!("missing at sector {}", t.backup_lba),
    };
    let _ = writeln!(s, "  backup header {backup}");
    for (i, p) in &t.partitions {
        let tyname = match p.type_guid {
            t if t == ESP_TYPE => " (EFI System)",
            t if t == LINUX_TYPE => " (Linux filesystem)",
            t if t == BASIC_DATA_TYPE => " (basic data)",
            _ => "",
        };
        let _ = writeln!(
            s,
            "  partition {i}: {:?} type {}{tyname} GUID {} sectors {}..={} attributes 0x{:x}",
            p.name, p.type_guid, p.guid, p.first, p.last, p.attributes
        );
    }
    Ok(Some(s))
}

/// [`dump`] of the file at `path`, for `inspect`'s text output: empty when it has no MBR,
/// the error as a line when it cannot be read.
pub fn dump_path(path: &std::path::Path) -> String {
    match std::fs::File::open(path).at(path).and_then(|f| dump(&f, path)) {
        Ok(Some(s)) => format!("partition tables\n{s}"),
        Ok(None) => String::new(),
        Err(e) => format!("partition tables: {e}\n"),
    }
}

/// A GPT as read back from an image: the primary header at LBA 1 and its partition array,
/// with what checks out (CRCs, the backup header). The one GPT reader: [`dump`] prints it,
/// inspect and diff walk its partitions ([`partition_spans`]).
#[derive(Debug, Clone)]
pub struct Table {
    pub disk_guid: Guid,
    pub first_usable: u64,
    pub last_usable: u64,
    /// Entries in the array and bytes per entry, as the header gives them.
    pub entries: u64,
    pub entry_size: u64,
    pub array_lba: u64,
    pub backup_lba: u64,
    pub header_ok: bool,
    /// The CRC of the array as read (at most 1 MiB of it).
    pub array_ok: bool,
    /// The backup header: `None` when missing (or out of the file), else whether it matches
    /// (CRC, disk GUID, pointing back at LBA 1).
    pub backup: Option<bool>,
    /// The used entries (type GUID not zero), each with its 1-based number in the array.
    pub partitions: Vec<(usize, Partition)>,
}

/// Read the GPT of a disk image (512-byte sectors). `None` when LBA 1 holds no `EFI PART`
/// header; values come from the image as they are (a huge sector number does not overflow).
pub fn read(file: &std::fs::File, path: &std::path::Path) -> Result<Option<Table>> {
    let len = file.metadata().at(path)?.len();
    let mut h = [0u8; 512];
    if len < 2 * SECTOR {
        return Ok(None);
    }
    file.read_exact_at(&mut h, SECTOR).at(path)?;
    if &h[0..8] != SIGNATURE {
        return Ok(None);
    }
    let le32 = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
    let le64 = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    let mut hc = h;
    hc[16..20].fill(0);
    let hsize = (le32(&h[12..]) as usize).min(512);
    let header_ok = crc32fast::hash(&hc[..hsize]) == le32(&h[16..]);
    let (n, esize) = (le32(&h[80..]) as u64, le32(&h[84..]) as u64);
    let array_lba = le64(&h[72..]);
    let backup_lba = le64(&h[32..]);
    let mut array = vec![0u8; (n * esize).min(1 << 20) as usize];
    file.read_exact_at(&mut array, array_lba.saturating_mul(SECTOR)).at(path)?;
    let array_ok = crc32fast::hash(&array) == le32(&h[88..]);
    let guid = |b: &[u8]| Guid(b[..16].try_into().expect("16 bytes"));
    let mut b = [0u8; 512];
    let at = backup_lba.checked_mul(SECTOR).filter(|at| at.checked_add(SECTOR).is_some_and(|end| end <= len));
    let backup = if at.is_some_and(|at| file.read_exact_at(&mut b, at).is_ok() && &b[0..8] == SIGNATURE) {
        let mut bc = b;
        bc[16..20].fill(0);
        Some(crc32fast::hash(&bc[..hsize]) == le32(&b[16..]) && b[56..72] == h[56..72] && le64(&b[32..]) == 1)
    } else {
        None
    };
    let mut partitions = Vec::new();
    for (i, e) in array.chunks(esize.max(1) as usize).enumerate() {
        if e.len() < 128 || e[..16].iter().all(|b| *b == 0) {
            continue;
        }
        let name: Vec<u16> = e[56..128].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|u| *u != 0).collect();
        partitions.push((
            i + 1,
            Partition {
                type_guid: guid(&e[0..]),
                guid: guid(&e[16..]),
                first: le64(&e[32..]),
                last: le64(&e[40..]),
                attributes: le64(&e[48..]),
                name: String::from_utf16_lossy(&name),
            },
        ));
    }
    Ok(Some(Table {
        disk_guid: guid(&h[56..]),
        first_usable: le64(&h[40..]),
        last_usable: le64(&h[48..]),
        entries: n,
        entry_size: esize,
        array_lba,
        backup_lba,
        header_ok,
        array_ok,
        backup,
        partitions,
    }))
}

impl Table {
    /// (byte offset, byte length) of each used partition, in table order; a partition whose
    /// sectors run backwards or overflow is left out.
    pub fn spans(&self) -> Vec<(u64, u64)> {
        self.partitions
            .iter()
            .filter_map(|(_, p)| {
                let at = p.first.checked_mul(SECTOR)?;
                let len = (p.last >= p.first).then(|| p.last - p.first)?.checked_add(1)?.checked_mul(SECTOR)?;
                Some((at, len))
            })
            .collect()
    }
}

/// [`Table::spans`] of `file`'s GPT; empty when it has none or it cannot be read (inspect and
/// diff then treat the image as having no partitions).
pub fn partition_spans(file: &std::fs::File) -> Vec<(u64, u64)> {
    read(file, std::path::Path::new("image")).ok().flatten().map(|t| t.spans()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_and_bytes() {
        assert_eq!(ESP_TYPE.0[..4], [0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(ESP_TYPE.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        let a = Guid::derive(b"seed", "disk");
        assert_eq!(a, Guid::derive(b"seed", "disk"));
        assert_ne!(a, Guid::derive(b"seed", "esp"));
        assert_eq!(a.to_string().as_bytes()[14], b'4');
    }

    #[test]
    fn tables_round_trip_through_dump() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk");
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
        let sectors = 4096;
        f.set_len(sectors * SECTOR).unwrap();
        let esp = Partition { type_guid: ESP_TYPE, guid: Guid::derive(b"x", "esp"), first: 100, last: 199, attributes: 0, name: "ESP".into() };
        let gpt = Gpt { disk_guid: Guid::derive(b"x", "disk"), sectors, partitions: vec![esp] };
        gpt.write(&f, &p).unwrap();
        let m = mbr(&[0xfa; 440], Some(64), disk_id(b"x"), &[MbrEntry { active: false, kind: 0xee, first: 1, sectors: 99 }, MbrEntry { active: true, kind: 0xef, first: 100, sectors: 100 }]).unwrap();
        f.write_all_at(&m, 0).unwrap();
        let text = dump(&f, &p).unwrap().unwrap();
        assert!(text.contains("header CRC ok, array CRC ok"), "{text}");
        assert!(text.contains("backup header at sector 4095, ok"), "{text}");
        assert!(text.contains("\"ESP\" type C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI System)"), "{text}");
        assert!(text.contains("isohybrid boot file at sector 64"), "{text}");
        assert!(text.contains("partition 2: type 0xef active start 100 sectors 100"), "{text}");
        // The bytes for these fixed inputs: update if intentional.
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::open(&p).unwrap(), &mut all).unwrap();
        let d = hex::encode(Sha256::digest(&all));
        assert_eq!(d, "e3cc02d9d0a32713978125cea0e93b40b297cfa74bcd5643f9652a096877f44f", "MBR/GPT bytes changed: update the pin if intentional");
        let overlap = Partition { name: "B".into(), first: 150, last: 300, ..gpt.partitions[0].clone() };
        let bad = Gpt { partitions: vec![gpt.partitions[0].clone(), overlap], ..gpt.clone() };
        assert!(bad.write(&f, &p).unwrap_err().to_string().contains("overlap"));
    }
}
