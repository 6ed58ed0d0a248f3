//! ISO 9660 image → readable description, for `stagebox inspect` and tests: the volume
//! descriptors, the El Torito catalog, and the file tree as Rock Ridge shows it (names,
//! modes, owners, link counts, serial numbers, extents, symlink targets, devices).
//!
//! A strict, bounds-checked reader: malformed input is an error naming what is wrong,
//! never a panic; directory loops and absurd depths are refused, and so is an image whose
//! tree would pass the memory bounds below (docs/limits.md).

use super::format::{self as f, BLOCK};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

#[derive(Debug, Serialize)]
pub struct Volume {
    /// "primary", "boot record", "joliet", "supplementary", "terminator", "partition"
    #[serde(rename = "type")]
    pub kind: String,
    pub lba: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_lba: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog_lba: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct BootInfo {
    pub catalog_lba: u32,
    pub validation_platform: String,
    pub entries: Vec<BootRecord>,
}

#[derive(Debug, Serialize)]
pub struct BootRecord {
    pub platform: String,
    pub bootable: bool,
    pub media: String,
    pub load_sectors: u16,
    pub lba: u32,
}

#[derive(Debug, Serialize)]
pub struct FileEntry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub ino: u32,
    pub size: u64,
    pub lba: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdev: Option<(u32, u32)>,
}

#[derive(Debug, Serialize)]
pub struct Description {
    pub file: String,
    pub sha256: String,
    pub size: u64,
    pub volumes: Vec<Volume>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootInfo>,
    pub rock_ridge: bool,
    pub entries: Vec<FileEntry>,
}

/// True when `file` has an ISO 9660 volume descriptor at block 16.
pub fn is_iso(file: &File) -> bool {
    let mut b = [0u8; 6];
    file.read_exact_at(&mut b, 16 * BLOCK).is_ok() && &b[1..6] == f::STD_ID
}

struct Reader<'a> {
    file: &'a File,
    size: u64,
}

impl Reader<'_> {
    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>, String> {
        if at.checked_add(len as u64).is_none_or(|end| end > self.size) {
            return Err(format!("{len} bytes at offset {at} lie beyond the end of the image ({} bytes)", self.size));
        }
        let mut v = vec![0u8; len];
        self.file.read_exact_at(&mut v, at).map_err(|e| format!("reading at {at}: {e}"))?;
        Ok(v)
    }
}

/// Most files and directories listed, bytes of their paths and symlink targets, and bytes
/// of directory records read, in one image: with them a hostile image is refused in well
/// under 200 MiB (a listed entry costs ~250 bytes plus its path).
const MAX_ENTRIES: usize = 250_000;
const MAX_TEXT: usize = 32 << 20;
const MAX_DIR_BYTES: u64 = 32 << 20;

/// What a walk has used of the limits above.
#[derive(Default)]
struct Used {
    text: usize,
    dir_bytes: u64,
}

/// A parsed directory record.
struct Rec {
    extent: u32,
    len: u32,
    flags: u8,
    id: Vec<u8>,
    su: Vec<u8>,
}

fn parse_records(dir: &[u8]) -> Result<Vec<Rec>, String> {
    let mut v = Vec::new();
    let mut pos = 0;
    while pos < dir.len() {
        let len = dir[pos] as usize;
        if len == 0 {
            // rest of this block is padding
            pos = (pos / BLOCK as usize + 1) * BLOCK as usize;
            continue;
        }
        if len < f::DIR_RECORD_HEAD || pos + len > dir.len() {
            return Err(format!("directory record at offset {pos} has a bad length {len}"));
        }
        let r = &dir[pos..pos + len];
        let id_len = r[32] as usize;
        if f::DIR_RECORD_HEAD + id_len > len {
            return Err(format!("directory record at offset {pos}: identifier overruns the record"));
        }
        let su_start = f::dir_record_len(id_len, 0).min(len);
        v.push(Rec { extent: f::read_both32(&r[2..]), len: f::read_both32(&r[10..]), flags: r[25], id: r[33..33 + id_len].to_vec(), su: r[su_start..].to_vec() });
        pos += len;
    }
    Ok(v)
}

/// Rock Ridge fields of one record.
#[derive(Default)]
struct Rr {
    name: Option<Vec<u8>>,
    px: Option<(u32, u32, u32, u32, u32)>,
    link: Option<Vec<u8>>,
    dev: Option<(u32, u32)>,
    sp: bool,
}

fn parse_su(r: &Reader, su: &[u8]) -> Result<Rr, String> {
    let mut rr = Rr::default();
    let mut area = su.to_vec();
    let mut name = Vec::new();
    let mut link: Vec<u8> = Vec::new();
    let mut link_cont = false;
    let mut have_link = false;
    let mut hops = 0;
    loop {
        let mut next = None;
        let mut p = 0;
        while p + 4 <= area.len() {
            let (sig, len) = (&area[p..p + 2], area[p + 2] as usize);
            if len < 4 || p + len > area.len() {
                break;
            }
            let e = &area[p..p + len];
            match sig {
                b"SP" => rr.sp = true,
                b"CE" if len >= f::CE_LEN => next = Some((f::read_both32(&e[4..]), f::read_both32(&e[12..]), f::read_both32(&e[20..]))),
                b"PX" if len >= 36 => {
                    let ino = if len >= f::PX_LEN { f::read_both32(&e[36..]) } else { 0 };
                    rr.px = Some((f::read_both32(&e[4..]), f::read_both32(&e[12..]), f::read_both32(&e[20..]), f::read_both32(&e[28..]), ino));
                }
                b"PN" if len >= f::PN_LEN => {
                    rr.dev = Some(f::major_minor(((f::read_both32(&e[4..]) as u64) << 32) | f::read_both32(&e[12..]) as u64))
                }
                b"NM" if len >= 5 => {
                    if e[4] & 0x06 != 0 {
                        // "." or ".." flags: nothing to append
                    } else {
                        name.extend_from_slice(&e[5..]);
                    }
                    rr.name = Some(name.clone());
                }
                b"SL" if len >= 5 => {
                    have_link = true;
                    let mut q = 5;
                    while q + 2 <= e.len() {
                        let (fl, n) = (e[q], e[q + 1] as usize);
                        let c = e.get(q + 2..q + 2 + n).ok_or("SL component overruns its entry")?;
                        if !link_cont && !link.is_empty() && link != b"/" {
                            link.push(b'/');
                        }
                        if fl & f::SL_ROOT != 0 {
                            link.push(b'/');
                        } else if fl & f::SL_CURRENT != 0 {
                            link.push(b'.');
                        } else if fl & f::SL_PARENT != 0 {
                            link.extend_from_slice(b"..");
                        }
                        link.extend_from_slice(c);
                        link_cont = fl & f::RR_CONTINUE != 0;
                        q += 2 + n;
                    }
                }
                b"ST" => break,
                _ => {}
            }
            p += len;
        }
        let Some((block, off, len)) = next else { break };
        hops += 1;
        if hops > 64 {
            return Err("more than 64 continuation areas for one record".into());
        }
        if len as u64 > BLOCK {
            return Err(format!("continuation area of {len} bytes (longer than a block)"));
        }
        area = r.read(block as u64 * BLOCK + off as u64, len as usize)?;
    }
    if have_link {
        rr.link = Some(link);
    }
    Ok(rr)
}

fn platform(p: u8) -> String {
    match p {
        f::PLATFORM_X86 => "bios".into(),
        f::PLATFORM_EFI => "efi".into(),
        0x01 => "powerpc".into(),
        0x02 => "mac".into(),
        x => format!("0x{x:02x}"),
    }
}

fn text(b: &[u8], joliet: bool) -> String {
    if joliet {
        let u: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        String::from_utf16_lossy(&u).trim_end().to_string()
    } else {
        String::from_utf8_lossy(b).trim_end().to_string()
    }
}

/// Read the image at `file`. `name` and `sha256` are reported as given.
pub fn describe(file: &File, name: &str, sha256: &str) -> Result<Description, String> {
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let r = Reader { file, size };
    let mut volumes = Vec::new();
    let mut root = None;
    let mut boot = None;
    for lba in 16u32..16 + 64 {
        let b = r.read(lba as u64 * BLOCK, BLOCK as usize)?;
        if &b[1..6] != f::STD_ID {
            return Err(format!("block {lba}: no volume descriptor (no terminator before it)"));
        }
        let mut v = Volume { kind: String::new(), lba, volume_id: None, blocks: None, root_lba: None, created: None, catalog_lba: None };
        match b[0] {
            f::VD_PRIMARY | f::VD_SUPPLEMENTARY => {
                let joliet = b[0] == f::VD_SUPPLEMENTARY && b[88..90] == *b"%/";
                v.kind = match (b[0], joliet) {
                    (f::VD_PRIMARY, _) => "primary",
                    (_, true) => "joliet",
                    _ => "supplementary",
                }
                .into();
                v.volume_id = Some(text(&b[40..72], joliet));
                v.blocks = Some(f::read_both32(&b[80..]));
                let rootrec = &b[156..190];
                v.root_lba = Some(f::read_both32(&rootrec[2..]));
                v.created = Some(String::from_utf8_lossy(&b[813..829]).into_owned());
                if b[0] == f::VD_PRIMARY {
                    root = Some((f::read_both32(&rootrec[2..]), f::read_both32(&rootrec[10..])));
                }
            }
            f::VD_BOOT => {
                v.kind = "boot record".into();
                if b[7..7 + f::EL_TORITO_ID.len()] == *f::EL_TORITO_ID {
                    let cat = u32::from_le_bytes(b[0x47..0x4B].try_into().unwrap());
                    v.catalog_lba = Some(cat);
                    boot = Some(read_catalog(&r, cat)?);
                }
            }
            f::VD_TERMINATOR => {
                v.kind = "terminator".into();
                volumes.push(v);
                break;
            }
            x => v.kind = format!("type {x}"),
        }
        volumes.push(v);
    }
    let (root_lba, root_len) = root.ok_or("no primary volume descriptor")?;
    let root_dir = r.read(root_lba as u64 * BLOCK, root_len as usize)?;
    let recs = parse_records(&root_dir)?;
    let dot = recs.first().ok_or("the root directory is empty")?;
    let rock_ridge = parse_su(&r, &dot.su)?.sp;
    let mut entries = Vec::new();
    let mut seen = BTreeSet::new();
    walk(&r, root_lba, root_len, "", 0, &mut seen, &mut entries, &mut Used::default())?;
    Ok(Description { file: name.into(), sha256: sha256.into(), size, volumes, boot, rock_ridge, entries })
}

fn read_catalog(r: &Reader, lba: u32) -> Result<BootInfo, String> {
    let c = r.read(lba as u64 * BLOCK, BLOCK as usize)?;
    if c[0] != 1 || c[30..32] != [0x55, 0xAA] {
        return Err(format!("boot catalog at block {lba}: no validation entry"));
    }
    let sum = (0..16).map(|i| u16::from_le_bytes([c[2 * i], c[2 * i + 1]])).fold(0u16, |a, w| a.wrapping_add(w));
    if sum != 0 {
        return Err(format!("boot catalog at block {lba}: validation entry checksum does not sum to zero"));
    }
    let entry = |e: &[u8], plat: u8| BootRecord {
        platform: platform(plat),
        bootable: e[0] == f::BOOTABLE,
        media: match e[1] & 0x0F {
            0 => "no emulation".into(),
            1 => "1.2M floppy".into(),
            2 => "1.44M floppy".into(),
            3 => "2.88M floppy".into(),
            4 => "hard disk".into(),
            x => format!("media {x}"),
        },
        load_sectors: u16::from_le_bytes([e[6], e[7]]),
        lba: u32::from_le_bytes(e[8..12].try_into().unwrap()),
    };
    let mut entries = vec![entry(&c[32..64], c[1])];
    let mut pos = 64;
    while pos + 32 <= c.len() && (c[pos] == f::SECTION_MORE || c[pos] == f::SECTION_FINAL) {
        let (final_, plat, n) = (c[pos] == f::SECTION_FINAL, c[pos + 1], u16::from_le_bytes([c[pos + 2], c[pos + 3]]) as usize);
        pos += 32;
        for _ in 0..n {
            if pos + 32 > c.len() {
                return Err("boot catalog section overruns its block".into());
            }
            entries.push(entry(&c[pos..pos + 32], plat));
            pos += 32;
        }
        if final_ {
            break;
        }
    }
    Ok(BootInfo { catalog_lba: lba, validation_platform: platform(c[1]), entries })
}

#[allow(clippy::too_many_arguments)]
fn walk(r: &Reader, lba: u32, len: u32, prefix: &str, depth: usize, seen: &mut BTreeSet<u32>, out: &mut Vec<FileEntry>, used: &mut Used) -> Result<(), String> {
    if depth > 256 {
        return Err(format!("{prefix}: directories nested deeper than 256"));
    }
    if !seen.insert(lba) {
        return Err(format!("{prefix}: directory at block {lba} is reached twice (a loop)"));
    }
    used.dir_bytes += len as u64;
    if used.dir_bytes > MAX_DIR_BYTES {
        return Err(format!("{prefix}: directories hold more than {MAX_DIR_BYTES} bytes of records; refusing"));
    }
    let dir = r.read(lba as u64 * BLOCK, len as usize)?;
    let recs = parse_records(&dir)?;
    drop(dir);
    let mut i = 0;
    while i < recs.len() {
        let rec = &recs[i];
        // a multi-extent file: the following records with the same identifier add up
        let mut size = rec.len as u64;
        let mut j = i;
        while recs[j].flags & f::FLAG_MULTI_EXTENT != 0 && j + 1 < recs.len() {
            j += 1;
            size += recs[j].len as u64;
        }
        i = j + 1;
        if rec.id == [0] || rec.id == [1] {
            continue;
        }
        let rr = parse_su(r, &rec.su)?;
        let name = rr.name.clone().unwrap_or_else(|| {
            let id = rec.id.strip_suffix(b";1").unwrap_or(&rec.id);
            id.strip_suffix(b".").unwrap_or(id).to_vec()
        });
        let path = format!("{prefix}/{}", String::from_utf8_lossy(&name));
        let is_dir = rec.flags & f::FLAG_DIR != 0;
        let (mode, nlink, uid, gid, ino) = rr.px.unwrap_or((if is_dir { f::S_IFDIR | 0o555 } else { f::S_IFREG | 0o444 }, 1, 0, 0, 0));
        let kind = match mode & 0o170000 {
            f::S_IFDIR => "dir",
            f::S_IFREG => "file",
            f::S_IFLNK => "symlink",
            f::S_IFCHR => "char",
            f::S_IFBLK => "block",
            f::S_IFIFO => "fifo",
            _ => "other",
        };
        used.text += path.len() + rr.link.as_ref().map_or(0, |l| l.len());
        if out.len() >= MAX_ENTRIES || used.text > MAX_TEXT {
            return Err(format!("{path}: more than {MAX_ENTRIES} entries or {MAX_TEXT} bytes of paths and link targets; refusing"));
        }
        out.push(FileEntry {
            path: path.clone(),
            kind: kind.into(),
            mode: format!("{:04o}", mode & 0o7777),
            uid,
            gid,
            nlink,
            ino,
            size: if is_dir { 0 } else { size },
            lba: rec.extent,
            link: rr.link.as_ref().map(|l| String::from_utf8_lossy(l).into_owned()),
            rdev: rr.dev,
        });
        if is_dir {
            walk(r, rec.extent, rec.len, &path, depth + 1, seen, out, used)?;
        }
    }
    Ok(())
}

/// Human-readable text of a description.
pub fn dump(d: &Description) -> String {
    use std::fmt::Write as _;
    let mut s = format!("# {} (ISO 9660, {} bytes, sha256 {})\n", d.file, d.size, d.sha256);
    s += "volume descriptors\n";
    for v in &d.volumes {
        let _ = write!(s, "  {:>3}  {}", v.lba, v.kind);
        if let Some(id) = &v.volume_id {
            let _ = write!(s, "  id {id:?}  {} blocks  root at {}  created {}", v.blocks.unwrap_or(0), v.root_lba.unwrap_or(0), v.created.as_deref().unwrap_or(""));
        }
        if let Some(c) = v.catalog_lba {
            let _ = write!(s, "  El Torito catalog at {c}");
        }
        s.push('\n');
    }
    if let Some(b) = &d.boot {
        let _ = writeln!(s, "boot catalog at {} (validation platform {})", b.catalog_lba, b.validation_platform);
        for (i, e) in b.entries.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {}  {:<5} {} {}  load {} sectors  at block {}",
                i,
                e.platform,
                if e.bootable { "bootable" } else { "not bootable" },
                e.media,
                e.load_sectors,
                e.lba
            );
        }
    }
    let _ = writeln!(s, "files ({}, Rock Ridge {})", d.entries.len(), if d.rock_ridge { "yes" } else { "no" });
    for e in &d.entries {
        let extra = match (&e.link, e.rdev) {
            (Some(l), _) => format!(" -> {l}"),
            (_, Some((a, b))) => format!(" [{a},{b}]"),
            _ => String::new(),
        };
        let _ = writeln!(s, "  {:<7} {} {:>5}:{:<5} {:>3} {:>10} @{:<8} {}{}", e.kind, e.mode, e.uid, e.gid, e.nlink, e.size, e.lba, e.path, extra);
    }
    s
}
