//! `.rpm` v4 (what rpm 4.x installs): a 96-byte lead, the signature header (header SHA-1
//! and SHA-256, MD5 of header and payload, sizes), the main header (metadata, file list with
//! SHA-256 file digests, and the SHA-256 payload digest), then the payload: a zstd-compressed
//! newc cpio with `./`-prefixed names.
//!
//! Written by hand rather than with the `rpm` crate (0.x, rust 1.88): that crate builds the
//! whole package in memory from files on disk, and stamps the build host and time unless
//! each is overridden; here the payload streams from the tree into its place in the output
//! (its offset is known in advance because every header field has a fixed length whatever
//! the digests' values), and there is no host state to forget. Format reference: rpm's
//! `docs/manual/format_v4.md`, `lib/header.c` (region tags, alignment) and `lib/rpmtag.h`.
//! Both headers carry an immutable region (tag 62/63 with its trailer at the end of the
//! data store), which rpm >= 4.14 requires of package files.

use super::{is_config, is_doc, ItemKind, Meta, Payload, SYSTEM_DIRS};
use crate::emit::compress::Encoder;
use crate::emit::cpio::format::{self as cpio, Header as CpioHeader};
use crate::spec::Compression;
use md5::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const HEADER_MAGIC: [u8; 8] = [0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];
/// Lead `signature_type`: a header-style signature follows.
const RPMSIGTYPE_HEADERSIG: u16 = 5;

// Tag types (rpmtag.h `rpmTagType`).
const T_INT16: u32 = 3;
const T_INT32: u32 = 4;
const T_STRING: u32 = 6;
const T_BIN: u32 = 7;
const T_STRING_ARRAY: u32 = 8;
const T_I18NSTRING: u32 = 9;

// Region tags.
const RPMTAG_HEADERSIGNATURES: u32 = 62;
const RPMTAG_HEADERIMMUTABLE: u32 = 63;
// Signature tags.
const SIG_SHA1: u32 = 269;
const SIG_SHA256: u32 = 273;
const SIG_SIZE: u32 = 1000;
const SIG_MD5: u32 = 1004;
const SIG_PAYLOADSIZE: u32 = 1007;
// Main header tags.
const TAG_I18NTABLE: u32 = 100;
const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_SUMMARY: u32 = 1004;
const TAG_DESCRIPTION: u32 = 1005;
const TAG_BUILDTIME: u32 = 1006;
const TAG_BUILDHOST: u32 = 1007;
const TAG_SIZE: u32 = 1009;
const TAG_LICENSE: u32 = 1014;
const TAG_PACKAGER: u32 = 1015;
const TAG_GROUP: u32 = 1016;
const TAG_URL: u32 = 1020;
const TAG_OS: u32 = 1021;
const TAG_ARCH: u32 = 1022;
const TAG_FILESIZES: u32 = 1028;
const TAG_FILEMODES: u32 = 1030;
const TAG_FILERDEVS: u32 = 1033;
const TAG_FILEMTIMES: u32 = 1034;
const TAG_FILEDIGESTS: u32 = 1035;
const TAG_FILELINKTOS: u32 = 1036;
const TAG_FILEFLAGS: u32 = 1037;
const TAG_FILEUSERNAME: u32 = 1039;
const TAG_FILEGROUPNAME: u32 = 1040;
const TAG_SOURCERPM: u32 = 1044;
const TAG_FILEVERIFYFLAGS: u32 = 1045;
const TAG_PROVIDENAME: u32 = 1047;
const TAG_REQUIREFLAGS: u32 = 1048;
const TAG_REQUIRENAME: u32 = 1049;
const TAG_REQUIREVERSION: u32 = 1050;
const TAG_CONFLICTFLAGS: u32 = 1053;
const TAG_CONFLICTNAME: u32 = 1054;
const TAG_CONFLICTVERSION: u32 = 1055;
const TAG_FILEDEVICES: u32 = 1095;
const TAG_FILEINODES: u32 = 1096;
const TAG_FILELANGS: u32 = 1097;
const TAG_PROVIDEFLAGS: u32 = 1112;
const TAG_PROVIDEVERSION: u32 = 1113;
const TAG_DIRINDEXES: u32 = 1116;
const TAG_BASENAMES: u32 = 1117;
const TAG_DIRNAMES: u32 = 1118;
const TAG_PAYLOADFORMAT: u32 = 1124;
const TAG_PAYLOADCOMPRESSOR: u32 = 1125;
const TAG_PAYLOADFLAGS: u32 = 1126;
const TAG_FILEDIGESTALGO: u32 = 5011;
const TAG_ENCODING: u32 = 5062;
const TAG_PAYLOADDIGEST: u32 = 5092;
const TAG_PAYLOADDIGESTALGO: u32 = 5093;

/// OpenPGP hash algorithm id of SHA-256 (file and payload digests).
const PGPHASHALGO_SHA256: u32 = 8;
// Dependency flags (rpmds.h).
const SENSE_LESS: u32 = 1 << 1;
const SENSE_GREATER: u32 = 1 << 2;
const SENSE_EQUAL: u32 = 1 << 3;
const SENSE_RPMLIB: u32 = 1 << 24;
// File flags (rpmfiles.h).
const FILE_CONFIG: u32 = 1 << 0;
const FILE_DOC: u32 = 1 << 1;
const FILE_NOREPLACE: u32 = 1 << 4;

/// rpm features the package relies on, as rpmbuild declares them.
const RPMLIB_REQUIRES: &[(&str, &str)] = &[
    ("rpmlib(CompressedFileNames)", "3.0.4-1"),
    ("rpmlib(FileDigests)", "4.6.0-1"),
    ("rpmlib(PayloadFilesHavePrefix)", "4.0-1"),
    ("rpmlib(PayloadIsZstd)", "5.4.18-1"),
];

/// One tag's value.
enum Val {
    I16(Vec<u16>),
    I32(Vec<u32>),
    Str(String),
    Bin(Vec<u8>),
    StrArr(Vec<String>),
    I18n(String),
}

/// A header under construction: tags in ascending order (which is also the data order).
#[derive(Default)]
struct Header(BTreeMap<u32, Val>);

impl Header {
    fn set(&mut self, tag: u32, v: Val) {
        self.0.insert(tag, v);
    }

    /// The header's bytes: magic, counts, index, data store, with the immutable region
    /// `region` first in the index and its trailer last in the data.
    fn bytes(&self, region: u32) -> Vec<u8> {
        let mut index: Vec<[u32; 4]> = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        for (&tag, v) in &self.0 {
            let (ty, count, align) = match v {
                Val::I16(x) => (T_INT16, x.len(), 2),
                Val::I32(x) => (T_INT32, x.len(), 4),
                Val::Str(_) => (T_STRING, 1, 1),
                Val::Bin(b) => (T_BIN, b.len(), 1),
                Val::StrArr(x) => (T_STRING_ARRAY, x.len(), 1),
                Val::I18n(_) => (T_I18NSTRING, 1, 1),
            };
            while data.len() % align != 0 {
                data.push(0);
            }
            index.push([tag, ty, data.len() as u32, count as u32]);
            match v {
                Val::I16(x) => x.iter().for_each(|n| data.extend_from_slice(&n.to_be_bytes())),
                Val::I32(x) => x.iter().for_each(|n| data.extend_from_slice(&n.to_be_bytes())),
                Val::Str(s) | Val::I18n(s) => {
                    data.extend_from_slice(s.as_bytes());
                    data.push(0);
                }
                Val::Bin(b) => data.extend_from_slice(b),
                Val::StrArr(x) => x.iter().for_each(|s| {
                    data.extend_from_slice(s.as_bytes());
                    data.push(0);
                }),
            }
        }
        let il = index.len() as u32 + 1;
        let trailer_at = data.len() as u32;
        for n in [region, T_BIN, (-((il * 16) as i32)) as u32, 16] {
            data.extend_from_slice(&n.to_be_bytes());
        }
        let mut out = HEADER_MAGIC.to_vec();
        out.extend_from_slice(&il.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        for n in [region, T_BIN, trailer_at, 16] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        for e in index {
            e.iter().for_each(|n| out.extend_from_slice(&n.to_be_bytes()));
        }
        out.extend_from_slice(&data);
        out
    }
}

/// Append each relation of `list` (see [`relation`]) to the three parallel header arrays.
fn relations(list: &[String], names: &mut Vec<String>, flags: &mut Vec<u32>, versions: &mut Vec<String>) {
    for s in list {
        let (n, f, v) = relation(s);
        names.push(n);
        flags.push(f);
        versions.push(v);
    }
}

/// Split `name [op version]` into rpm's (name, flags, version).
fn relation(s: &str) -> (String, u32, String) {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if let [name, op, ver] = parts[..] {
        let flags = match op {
            "<" => SENSE_LESS,
            "<=" => SENSE_LESS | SENSE_EQUAL,
            "=" | "==" => SENSE_EQUAL,
            ">=" => SENSE_GREATER | SENSE_EQUAL,
            ">" => SENSE_GREATER,
            _ => return (s.to_string(), 0, String::new()),
        };
        return (name.to_string(), flags, ver.to_string());
    }
    (s.to_string(), 0, String::new())
}

fn file_type(kind: &ItemKind) -> u32 {
    match kind {
        ItemKind::Dir => cpio::S_IFDIR,
        ItemKind::File { .. } => cpio::S_IFREG,
        ItemKind::Symlink(_) => cpio::S_IFLNK,
        ItemKind::Fifo => cpio::S_IFIFO,
    }
}

/// The items the rpm lists: the payload minus the base system's directories.
fn listed<'a, 't>(p: &'a Payload<'t>) -> Vec<&'a super::Item<'t>> {
    p.items.iter().filter(|i| !(i.kind == ItemKind::Dir && SYSTEM_DIRS.iter().any(|d| d.as_bytes() == i.path))).collect()
}

/// The main header. `payload_digest` and the sizes have fixed lengths, so placeholders give
/// a header of the final length.
fn main_header(p: &Payload, m: &Meta, payload_digest: &str) -> Header {
    let items = listed(p);
    let mut h = Header::default();
    h.set(TAG_I18NTABLE, Val::StrArr(vec!["C".into()]));
    h.set(TAG_NAME, Val::Str(m.name.clone()));
    h.set(TAG_VERSION, Val::Str(m.version.clone()));
    h.set(TAG_RELEASE, Val::Str(m.release.to_string()));
    h.set(TAG_SUMMARY, Val::I18n(m.summary.clone()));
    h.set(TAG_DESCRIPTION, Val::I18n(m.description.clone()));
    h.set(TAG_BUILDTIME, Val::I32(vec![m.sde as u32]));
    h.set(TAG_BUILDHOST, Val::Str("stagebox".into()));
    h.set(TAG_SIZE, Val::I32(vec![p.installed_size().min(u32::MAX as u64) as u32]));
    if let Some(l) = &m.license {
        h.set(TAG_LICENSE, Val::Str(l.clone()));
    }
    if let Some(pk) = &m.maintainer {
        h.set(TAG_PACKAGER, Val::Str(pk.clone()));
    }
    h.set(TAG_GROUP, Val::I18n("Unspecified".into()));
    if let Some(u) = &m.url {
        h.set(TAG_URL, Val::Str(u.clone()));
    }
    h.set(TAG_OS, Val::Str("linux".into()));
    h.set(TAG_ARCH, Val::Str(m.arch.clone()));

    let mut inodes: HashMap<u64, u32> = HashMap::new();
    let mut dirs: Vec<String> = Vec::new();
    let mut dir_index: HashMap<String, u32> = HashMap::new();
    let (mut sizes, mut modes, mut digests, mut links, mut flags, mut inos, mut dindex, mut bases) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (n, it) in items.iter().enumerate() {
        let path = String::from_utf8_lossy(it.path).into_owned();
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (format!("/{d}/"), b.to_string()),
            None => ("/".to_string(), path.clone()),
        };
        let di = *dir_index.entry(dir.clone()).or_insert_with(|| {
            dirs.push(dir);
            dirs.len() as u32 - 1
        });
        dindex.push(di);
        bases.push(base);
        modes.push((file_type(&it.kind) | it.mode) as u16);
        let mut f = 0;
        if is_config(it) {
            f |= FILE_CONFIG | FILE_NOREPLACE;
        }
        if is_doc(it) && matches!(it.kind, ItemKind::File { .. }) {
            f |= FILE_DOC;
        }
        flags.push(f);
        match &it.kind {
            ItemKind::File { content, inode } => {
                sizes.push(content.len as u32);
                digests.push(super::hex(&p.sums(*inode).sha256));
                links.push(String::new());
                let next = inodes.len() as u32 + 1;
                inos.push(*inodes.entry(*inode).or_insert(next));
            }
            other => {
                let target = if let ItemKind::Symlink(t) = other { String::from_utf8_lossy(t).into_owned() } else { String::new() };
                sizes.push(target.len() as u32);
                digests.push(String::new());
                links.push(target);
                // inode numbers of non-files only have to differ from each other and from files
                inos.push(0x8000_0000 | n as u32);
            }
        }
    }
    let count = items.len();
    h.set(TAG_FILESIZES, Val::I32(sizes));
    h.set(TAG_FILEMODES, Val::I16(modes));
    h.set(TAG_FILERDEVS, Val::I16(vec![0; count]));
    h.set(TAG_FILEMTIMES, Val::I32(vec![m.sde as u32; count]));
    h.set(TAG_FILEDIGESTS, Val::StrArr(digests));
    h.set(TAG_FILELINKTOS, Val::StrArr(links));
    h.set(TAG_FILEFLAGS, Val::I32(flags));
    h.set(TAG_FILEUSERNAME, Val::StrArr(vec!["root".into(); count]));
    h.set(TAG_FILEGROUPNAME, Val::StrArr(vec!["root".into(); count]));
    h.set(TAG_SOURCERPM, Val::Str(format!("{}-{}-{}.src.rpm", m.name, m.version, m.release)));
    h.set(TAG_FILEVERIFYFLAGS, Val::I32(vec![u32::MAX; count]));

    let evr = format!("{}-{}", m.version, m.release);
    let (mut pn, mut pf, mut pv) = (vec![m.name.clone()], vec![SENSE_EQUAL], vec![evr]);
    relations(&m.provides, &mut pn, &mut pf, &mut pv);
    h.set(TAG_PROVIDENAME, Val::StrArr(pn));
    h.set(TAG_PROVIDEFLAGS, Val::I32(pf));
    h.set(TAG_PROVIDEVERSION, Val::StrArr(pv));
    let (mut rn, mut rf, mut rv) = (vec![], vec![], vec![]);
    relations(&m.depends, &mut rn, &mut rf, &mut rv);
    for (n, v) in RPMLIB_REQUIRES {
        rn.push(n.to_string());
        rf.push(SENSE_RPMLIB | SENSE_LESS | SENSE_EQUAL);
        rv.push(v.to_string());
    }
    h.set(TAG_REQUIRENAME, Val::StrArr(rn));
    h.set(TAG_REQUIREFLAGS, Val::I32(rf));
    h.set(TAG_REQUIREVERSION, Val::StrArr(rv));
    if !m.conflicts.is_empty() {
        let (mut cn, mut cf, mut cv) = (vec![], vec![], vec![]);
        relations(&m.conflicts, &mut cn, &mut cf, &mut cv);
        h.set(TAG_CONFLICTNAME, Val::StrArr(cn));
        h.set(TAG_CONFLICTFLAGS, Val::I32(cf));
        h.set(TAG_CONFLICTVERSION, Val::StrArr(cv));
    }
    h.set(TAG_FILEDEVICES, Val::I32(vec![1; count]));
    h.set(TAG_FILEINODES, Val::I32(inos));
    h.set(TAG_FILELANGS, Val::StrArr(vec![String::new(); count]));
    h.set(TAG_DIRINDEXES, Val::I32(dindex));
    h.set(TAG_BASENAMES, Val::StrArr(bases));
    h.set(TAG_DIRNAMES, Val::StrArr(dirs));
    h.set(TAG_PAYLOADFORMAT, Val::Str("cpio".into()));
    h.set(TAG_PAYLOADCOMPRESSOR, Val::Str("zstd".into()));
    h.set(TAG_PAYLOADFLAGS, Val::Str(crate::emit::compress::ZSTD_LEVEL.to_string()));
    h.set(TAG_FILEDIGESTALGO, Val::I32(vec![PGPHASHALGO_SHA256]));
    h.set(TAG_ENCODING, Val::Str("utf-8".into()));
    h.set(TAG_PAYLOADDIGEST, Val::StrArr(vec![payload_digest.to_string()]));
    h.set(TAG_PAYLOADDIGESTALGO, Val::I32(vec![PGPHASHALGO_SHA256]));
    h
}

/// The signature header, padded to a multiple of 8 bytes.
fn signature(header: &[u8], payload_len: u64, archive_len: u64, md5: [u8; 16]) -> Vec<u8> {
    let mut s = Header::default();
    s.set(SIG_SHA1, Val::Str(hex::encode(sha1::Sha1::digest(header))));
    s.set(SIG_SHA256, Val::Str(hex::encode(sha2::Sha256::digest(header))));
    s.set(SIG_SIZE, Val::I32(vec![(header.len() as u64 + payload_len) as u32]));
    s.set(SIG_MD5, Val::Bin(md5.to_vec()));
    s.set(SIG_PAYLOADSIZE, Val::I32(vec![archive_len as u32]));
    let mut b = s.bytes(RPMTAG_HEADERSIGNATURES);
    while b.len() % 8 != 0 {
        b.push(0);
    }
    b
}

fn lead(m: &Meta) -> [u8; 96] {
    let mut l = [0u8; 96];
    l[..4].copy_from_slice(&LEAD_MAGIC);
    l[4] = 3; // major
    l[5] = 0; // minor
    // type 0 = binary (bytes 6..8)
    let archnum: u16 = match m.arch.as_str() {
        "x86_64" | "i686" | "i386" => 1,
        "aarch64" => 19,
        _ => 0,
    };
    l[8..10].copy_from_slice(&archnum.to_be_bytes());
    let name = format!("{}-{}-{}", m.name, m.version, m.release);
    let n = name.len().min(65);
    l[10..10 + n].copy_from_slice(&name.as_bytes()[..n]);
    l[76..78].copy_from_slice(&1u16.to_be_bytes()); // osnum: Linux
    l[78..80].copy_from_slice(&RPMSIGTYPE_HEADERSIG.to_be_bytes());
    l
}

/// The payload: a newc cpio of the listed items. A hardlinked file's data goes with its last
/// path (rpm's convention), earlier paths have size 0. Returns the uncompressed size.
fn write_cpio(p: &Payload, sde: u64, w: &mut impl Write) -> io::Result<u64> {
    let items = listed(p);
    let mut last: HashMap<u64, usize> = HashMap::new();
    for (n, it) in items.iter().enumerate() {
        if let ItemKind::File { inode, .. } = it.kind {
            last.insert(inode, n);
        }
    }
    let mut w = crate::emit::Counter { inner: w, n: 0 };
    let mut inodes: HashMap<u64, u32> = HashMap::new();
    for (n, it) in items.iter().enumerate() {
        let name = [b"./".as_slice(), it.path].concat();
        let mut h = CpioHeader { mode: file_type(&it.kind) | it.mode, mtime: sde as u32, nlink: 1, ..Default::default() };
        h.ino = 0x8000_0000 | n as u32;
        match &it.kind {
            ItemKind::Dir => {
                h.nlink = 2;
                cpio::write_header(&mut w, &h, &name)?;
            }
            ItemKind::Fifo => cpio::write_header(&mut w, &h, &name)?,
            ItemKind::Symlink(t) => {
                h.filesize = t.len() as u32;
                cpio::write_header(&mut w, &h, &name)?;
                w.write_all(t)?;
                w.write_all(&[0u8; 3][..cpio::pad4(t.len() as u64)])?;
            }
            ItemKind::File { content, inode } => {
                let next = inodes.len() as u32 + 1;
                h.ino = *inodes.entry(*inode).or_insert(next);
                h.nlink = p.links(*inode);
                let carries = last.get(inode) == Some(&n);
                h.filesize = if carries { content.len as u32 } else { 0 };
                cpio::write_header(&mut w, &h, &name)?;
                if carries {
                    p.copy(content, &mut w)?;
                    w.write_all(&[0u8; 3][..cpio::pad4(content.len)])?;
                }
            }
        }
    }
    cpio::write_trailer(&mut w)?;
    Ok(w.n)
}

/// Write the package into `out` (from its start).
pub fn write(p: &Payload, m: &Meta, threads: usize, out: &mut File) -> io::Result<()> {
    let placeholder = "0".repeat(64);
    let header_len = main_header(p, m, &placeholder).bytes(RPMTAG_HEADERIMMUTABLE).len() as u64;
    let sig_len = signature(&[], 0, 0, [0; 16]).len() as u64;
    let payload_at = 96 + sig_len + header_len;

    out.seek(SeekFrom::Start(payload_at))?;
    let (digest, payload_len, archive_len) = {
        let hw = crate::digest::HashWriter::new(io::BufWriter::with_capacity(1 << 20, &mut *out));
        let mut enc = Encoder::with_threads(Compression::Zstd, threads, hw)?;
        let archive_len = write_cpio(p, m.sde, &mut enc)?;
        let (d, n, mut bw) = enc.finish()?.finish_with_inner();
        bw.flush()?;
        (d, n, archive_len)
    };
    if archive_len > u32::MAX as u64 || header_len + payload_len > u32::MAX as u64 {
        return Err(io::Error::other("the .rpm payload would exceed 4 GiB, which this writer does not support"));
    }
    let header = main_header(p, m, digest.hex()).bytes(RPMTAG_HEADERIMMUTABLE);
    if header.len() as u64 != header_len {
        return Err(io::Error::other("rpm header length changed between layout and write"));
    }
    // MD5 of header + payload (legacy digest older rpm versions check): read the payload back.
    let mut md5 = md5::Md5::new();
    md5.update(&header);
    out.seek(SeekFrom::Start(payload_at))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = payload_len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = out.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "rpm payload shorter than written"));
        }
        md5.update(&buf[..n]);
        left -= n as u64;
    }
    let sig = signature(&header, payload_len, archive_len, md5.finalize().into());
    debug_assert_eq!(sig.len() as u64, sig_len);
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&lead(m))?;
    out.write_all(&sig)?;
    out.write_all(&header)?;
    out.seek(SeekFrom::End(0))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_split_operators() {
        assert_eq!(relation("glibc >= 2.28"), ("glibc".into(), SENSE_GREATER | SENSE_EQUAL, "2.28".into()));
        assert_eq!(relation("bash"), ("bash".into(), 0, String::new()));
    }

    #[test]
    fn header_region_trailer_points_back_over_the_index() {
        let mut h = Header::default();
        h.set(TAG_NAME, Val::Str("x".into()));
        h.set(TAG_BUILDTIME, Val::I32(vec![1]));
        let b = h.bytes(RPMTAG_HEADERIMMUTABLE);
        let il = u32::from_be_bytes(b[8..12].try_into().unwrap());
        let dl = u32::from_be_bytes(b[12..16].try_into().unwrap()) as usize;
        assert_eq!(il, 3);
        let data = &b[16 + il as usize * 16..];
        assert_eq!(data.len(), dl);
        let trailer = &data[dl - 16..];
        assert_eq!(i32::from_be_bytes(trailer[8..12].try_into().unwrap()), -48);
        // BUILDTIME (int32) aligned to 4 after "x\0"
        assert_eq!(u32::from_be_bytes(b[16 + 16 + 8..16 + 16 + 12].try_into().unwrap()) % 4, 0);
    }
}
