//! The EFI system partition image: a FAT file system holding the UEFI boot chain
//! (`EFI/BOOT/BOOTX64.EFI`, the loader's config, kernel, initramfs), written with the `fatfs`
//! crate and made deterministic.
//!
//! `fatfs` picks the FAT type (12, 16 or 32) from the volume size; we give it everything it
//! would otherwise take from the host: the volume id (derived by the caller from a hash of
//! the inputs; the crate's default is a fixed 0x12345678), the volume label, and every
//! timestamp (a [`fatfs::TimeProvider`] that answers SOURCE_DATE_EPOCH instead of the wall
//! clock). Files are added in bytewise path order, parents first, so cluster allocation
//! follows from the inputs alone. The image is as small as the files need plus a little
//! slack: we format a size estimated from the contents and grow it (by a fixed rule) only if
//! the files do not fit.

use crate::error::{Error, IoContext, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Volume label of every ESP we write (11 bytes, space padded; FAT's rule).
pub const LABEL: [u8; 11] = *b"STAGEBOXESP";

/// Bytes added beyond what the files need: room for directory clusters and FAT rounding.
/// Changing it changes every ESP (and so every ISO) we build.
const SLACK: u64 = 256 << 10;

/// Where the bytes of an ESP file come from.
#[derive(Debug, Clone)]
pub enum EspSource {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl EspSource {
    fn len(&self) -> Result<u64> {
        match self {
            EspSource::Bytes(b) => Ok(b.len() as u64),
            EspSource::File(p) => Ok(std::fs::metadata(p).at(p)?.len()),
        }
    }
}

/// An ESP to write: files by path inside the FAT (`/`-separated, no leading `/`, e.g.
/// `EFI/BOOT/BOOTX64.EFI`).
#[derive(Debug, Clone)]
pub struct Esp {
    pub files: BTreeMap<String, EspSource>,
    /// SOURCE_DATE_EPOCH: the time of every entry (FAT dates start in 1980: earlier times
    /// are written as 1980-01-01 00:00:00, later ones past 2107 as the last FAT date).
    pub sde: u64,
    pub volume_id: u32,
}

/// A FAT date and time for a Unix time, in UTC (FAT has no time zone: we choose UTC so the
/// host's TZ never matters).
pub fn fat_time(unix: u64) -> fatfs::DateTime {
    let (year, month, day, hour, min, sec) = crate::date::utc(unix);
    let (month, day) = (month as u16, day as u16);
    let (date, time) = if year < 1980 {
        (fatfs::Date { year: 1980, month: 1, day: 1 }, fatfs::Time { hour: 0, min: 0, sec: 0, millis: 0 })
    } else if year > 2107 {
        (fatfs::Date { year: 2107, month: 12, day: 31 }, fatfs::Time { hour: 23, min: 59, sec: 58, millis: 0 })
    } else {
        (
            fatfs::Date { year: year as u16, month, day },
            fatfs::Time { hour: hour as u16, min: min as u16, sec: sec as u16, millis: 0 },
        )
    };
    fatfs::DateTime { date, time }
}

/// A time provider that always answers one instant.
#[derive(Debug)]
struct FixedTime(fatfs::DateTime);

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

/// `fatfs` 0.3 takes a `&'static` time provider: keep one per distinct SOURCE_DATE_EPOCH
/// (a build uses one, so this holds a handful at most).
fn provider(sde: u64) -> &'static FixedTime {
    static P: Mutex<BTreeMap<u64, &'static FixedTime>> = Mutex::new(BTreeMap::new());
    let mut m = P.lock().unwrap_or_else(|e| e.into_inner());
    m.entry(sde).or_insert_with(|| Box::leak(Box::new(FixedTime(fat_time(sde)))))
}

/// Every directory the files need, parents first (bytewise order puts `a` before `a/b`).
fn dirs(files: &BTreeMap<String, EspSource>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in files.keys() {
        let mut acc = String::new();
        let parts: Vec<&str> = p.split('/').collect();
        for d in &parts[..parts.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(d);
            out.insert(acc.clone());
        }
    }
    out
}

/// The first size we try: contents rounded to 4 KiB clusters, one cluster per directory,
/// the FATs for that many clusters, and [`SLACK`]; rounded up to 64 KiB.
fn estimate(esp: &Esp) -> Result<u64> {
    let mut data = 0u64;
    for s in esp.files.values() {
        data += s.len()?.div_ceil(4096) * 4096;
    }
    data += (dirs(&esp.files).len() as u64 + 1) * 4096;
    let fats = 2 * (data / 4096 + 16) * 4;
    Ok((data + fats + SLACK).div_ceil(64 << 10) * (64 << 10))
}

fn check_path(p: &str) -> Result<()> {
    let ok = !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= 255 && !c.contains(['\\', ':', '*', '?', '"', '<', '>', '|']));
    if ok { Ok(()) } else { Err(Error::other(format!("ESP path {p:?} is not a valid FAT path"))) }
}

/// Write the ESP image to `path` (created or truncated); returns its size in bytes.
pub fn write(esp: &Esp, path: &Path) -> Result<u64> {
    for p in esp.files.keys() {
        check_path(p)?;
    }
    let mut size = estimate(esp)?;
    // Grow by a fixed rule until the files fit: the result depends on the inputs only.
    for _ in 0..8 {
        match try_write(esp, path, size) {
            Ok(()) => return Ok(size),
            Err(TryError::Full) => size = (size + size / 4).div_ceil(64 << 10) * (64 << 10),
            Err(TryError::Other(e)) => return Err(e),
        }
    }
    Err(Error::other(format!("{}: the ESP files do not fit in {size} bytes", path.display())))
}

enum TryError {
    Full,
    Other(Error),
}

fn try_write(esp: &Esp, path: &Path, size: u64) -> Result<(), TryError> {
    let io = |e: std::io::Error| TryError::Other(Error::io(path, e));
    let full = |e: std::io::Error| {
        // fatfs reports a full volume as `Other` "No space left on device" (0.3) or
        // `UnexpectedEof`; treat any write failure of ours as "grow and retry" only for those.
        if matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::WriteZero) || e.to_string().contains("No space left") {
            TryError::Full
        } else {
            TryError::Other(Error::io(path, e))
        }
    };
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).map_err(io)?;
    file.set_len(size).map_err(io)?;
    let opts = fatfs::FormatVolumeOptions::new().volume_id(esp.volume_id).volume_label(LABEL);
    fatfs::format_volume(&file, opts).map_err(io)?;
    let fs = fatfs::FileSystem::new(&file, fatfs::FsOptions::new().time_provider(provider(esp.sde))).map_err(io)?;
    {
        let root = fs.root_dir();
        for d in dirs(&esp.files) {
            root.create_dir(&d).map_err(full)?;
        }
        let mut buf = vec![0u8; 1 << 20];
        for (p, src) in &esp.files {
            let mut f = root.create_file(p).map_err(full)?;
            match src {
                EspSource::Bytes(b) => f.write_all(b).map_err(full)?,
                EspSource::File(host) => {
                    let mut r = std::fs::File::open(host).map_err(|e| TryError::Other(Error::io(host, e)))?;
                    loop {
                        let n = r.read(&mut buf).map_err(|e| TryError::Other(Error::io(host, e)))?;
                        if n == 0 {
                            break;
                        }
                        f.write_all(&buf[..n]).map_err(full)?;
                    }
                }
            }
            f.flush().map_err(full)?;
        }
    }
    fs.unmount().map_err(io)?;
    drop_dot_lfns(&file).map_err(io)?;
    Ok(())
}

/// `fatfs` 0.3 writes a long-name entry before every short entry, the `.` and `..` of each
/// new directory included; long names for those two are invalid (`fsck.vfat` flags every
/// directory, and Windows' chkdsk would "repair" them). Remove them: walk the directories
/// from the root and, where a directory starts with LFN, `.`, LFN, `..`, close the gaps.
fn drop_dot_lfns(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 512];
    file.read_exact_at(&mut b, 0)?;
    let u16at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u32at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as u64;
    let (bps, spc, reserved, nfats, root_entries) = (u16at(11), b[13] as u64, u16at(14), b[16] as u64, u16at(17));
    let total = if u16at(19) != 0 { u16at(19) } else { u32at(32) };
    let fat_size = if u16at(22) != 0 { u16at(22) } else { u32at(36) };
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let first_data = reserved + nfats * fat_size + root_sectors;
    let clusters = (total - first_data) / spc;
    let bits = if clusters < 4085 { 12 } else if clusters < 65525 { 16 } else { 32 };
    let fat_at = reserved * bps;
    let cluster_bytes = spc * bps;
    let next = |c: u64| -> std::io::Result<Option<u64>> {
        let (v, end) = match bits {
            12 => {
                let mut x = [0u8; 2];
                file.read_exact_at(&mut x, fat_at + c + c / 2)?;
                let v = u16::from_le_bytes(x) as u64;
                (if c % 2 == 1 { v >> 4 } else { v & 0xfff }, 0xff8)
            }
            16 => {
                let mut x = [0u8; 2];
                file.read_exact_at(&mut x, fat_at + 2 * c)?;
                (u16::from_le_bytes(x) as u64, 0xfff8)
            }
            _ => {
                let mut x = [0u8; 4];
                file.read_exact_at(&mut x, fat_at + 4 * c)?;
                (u32::from_le_bytes(x) as u64 & 0x0fff_ffff, 0x0fff_fff8)
            }
        };
        Ok(if v >= end || v < 2 { None } else { Some(v) })
    };
    // A directory's byte ranges: the fixed FAT12/16 root, or a cluster chain.
    let extents = |first: Option<u64>| -> std::io::Result<Vec<(u64, u64)>> {
        match first {
            None if bits != 32 => Ok(vec![((reserved + nfats * fat_size) * bps, root_sectors * bps)]),
            f => {
                let mut c = f.unwrap_or(u32at(44));
                let mut v = Vec::new();
                loop {
                    v.push(((first_data + (c - 2) * spc) * bps, cluster_bytes));
                    if v.len() as u64 > clusters {
                        return Err(std::io::Error::other("FAT directory chain loops"));
                    }
                    match next(c)? {
                        Some(n) => c = n,
                        None => return Ok(v),
                    }
                }
            }
        }
    };
    let mut queue = vec![None];
    while let Some(dir) = queue.pop() {
        let ext = extents(dir)?;
        let mut data = Vec::new();
        for (o, l) in &ext {
            let mut v = vec![0u8; *l as usize];
            file.read_exact_at(&mut v, *o)?;
            data.extend(v);
        }
        let slots: Vec<&[u8]> = data.chunks(32).take_while(|e| e[0] != 0).collect();
        for e in &slots {
            let is_dir = e[11] != 0x0f && e[11] & 0x18 == 0x10 && e[0] != 0xe5 && e[0] != b'.';
            if is_dir {
                let hi = if bits == 32 { u16::from_le_bytes([e[20], e[21]]) as u64 } else { 0 };
                queue.push(Some(hi << 16 | u16::from_le_bytes([e[26], e[27]]) as u64));
            }
        }
        let dot = |e: &[u8], n: &[u8; 11]| e[11] != 0x0f && &e[..11] == n;
        if slots.len() >= 4 && slots[0][11] == 0x0f && dot(slots[1], b".          ") && slots[2][11] == 0x0f && dot(slots[3], b"..         ") {
            let mut fixed: Vec<u8> = Vec::with_capacity(data.len());
            for (i, e) in slots.iter().enumerate() {
                if i != 0 && i != 2 {
                    fixed.extend_from_slice(e);
                }
            }
            fixed.resize(data.len(), 0);
            let mut at = 0usize;
            for (o, l) in &ext {
                file.write_all_at(&fixed[at..at + *l as usize], *o)?;
                at += *l as usize;
            }
        }
    }
    Ok(())
}

/// The volume id of an ESP: the first 4 bytes of `seed` (a hash of the inputs), little-endian.
pub fn volume_id(seed: &[u8; 32]) -> u32 {
    u32::from_le_bytes([seed[0], seed[1], seed[2], seed[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat_times() {
        let t = fat_time(1);
        assert_eq!((t.date.year, t.date.month, t.date.day, t.time.hour), (1980, 1, 1, 0));
        // 2024-02-29 12:34:56 UTC
        let t = fat_time(1_709_210_096);
        assert_eq!((t.date.year, t.date.month, t.date.day), (2024, 2, 29));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (12, 34, 56));
    }

    #[test]
    fn same_inputs_same_bytes_and_growth() {
        let d = tempfile::tempdir().unwrap();
        let mut files = BTreeMap::new();
        files.insert("EFI/BOOT/BOOTX64.EFI".to_string(), EspSource::Bytes(vec![7u8; 300_000]));
        files.insert("loader/loader.conf".to_string(), EspSource::Bytes(b"timeout 0\n".to_vec()));
        files.insert("loader/entries/a.conf".to_string(), EspSource::Bytes(b"title a\n".to_vec()));
        let esp = Esp { files, sde: 1_700_000_000, volume_id: 0xdead_beef };
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let n = write(&esp, &a).unwrap();
        write(&esp, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(n, std::fs::metadata(&a).unwrap().len());
        let f = std::fs::File::open(&a).unwrap();
        let fs = fatfs::FileSystem::new(&f, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_id(), 0xdead_beef);
        let mut s = String::new();
        fs.root_dir().open_file("loader/loader.conf").unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "timeout 0\n");
        let e = fs.root_dir().iter().find(|e| e.as_ref().unwrap().file_name() == "EFI").unwrap().unwrap();
        assert_eq!(e.modified().date, fatfs::Date { year: 2023, month: 11, day: 14 });
        assert!(check_path("../x").is_err() && check_path("/x").is_err());
    }
}
