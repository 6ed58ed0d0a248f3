//! Reading a layer's tar stream entry by entry: every header format the world writes (V7,
//! ustar, star, old GNU, GNU, PAX), GNU sparse files in all their forms, and the legacy quirks
//! other readers accept, with each entry's data left in the stream for the caller to copy.
//!
//! Written here rather than taken from the `tar` crate, which stagebox used before: that crate
//! skips `size` bytes after directories, links and devices (an old directory entry of size 1
//! swallows the next header; Go, bsdtar and Python read none), refuses blank numeric fields
//! (GNU tar and bsdtar read 0), and hands PAX-format sparse files over as a
//! `GNUSparseFile.N/` path holding the raw map. The rules below follow Go's `archive/tar` and
//! libarchive (bsdtar), the two readers layers are most often checked against:
//!
//! - A regular entry (`0`, NUL, `7`) whose name ends in `/` is an old-style directory.
//! - Directories, links, devices and fifos never carry data, whatever their size field says.
//! - Numeric fields: octal with leading/trailing spaces and NULs; all blank reads 0; GNU
//!   base-256 for large (and, for times, negative) values. Times clamp to `i64`.
//! - GNU long names/links (`L`/`K`): the last of repeated ones wins. A volume label (`V`) is
//!   skipped; an incremental-dump directory (`D`) is a directory whose data (the dump list) is
//!   skipped. PAX global headers (`g`) are skipped, as Go does for the entries that follow.
//! - Extended attributes: `SCHILY.xattr.NAME` (raw value) and `LIBARCHIVE.xattr.NAME`
//!   (URL-encoded name, base64 value); a name with a NUL byte, or empty, is refused.
//! - GNU sparse: old-style (`S`, map in the header and extension blocks) and PAX 0.0, 0.1 and
//!   1.0 (map in the data). The entry carries its real name and logical size; the map is
//!   checked (ordered, in range, covering exactly the stored bytes).
//!
//! Refused with a reason: multi-volume continuations (`M`), old GNU long-name (`N`) entries,
//! Solaris ACLs (`A`) and other unknown types, bad checksums, truncated streams.
//! Memory: one header block, plus PAX records and GNU long names of at most the caller's
//! `max_meta` bytes each, plus a sparse map of at most `max_meta / 24` chunks.

use std::collections::BTreeMap;
use std::io::{self, Read};

pub const BLOCK: u64 = 512;

/// What an entry is, after the legacy forms are mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// One archive member.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Kind,
    /// Type flag as found in the header (`S` for an old GNU sparse file).
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub dev: (u64, u64),
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Logical size of a file's content (a sparse file's real size); 0 for the rest.
    pub size: u64,
    /// Offset in the stream of the entry's stored data.
    pub data_pos: u64,
    /// Bytes of stored data (less than `size` for a sparse file).
    pub stored: u64,
    /// For a sparse file: the stored chunks (offset in the file, length), in order.
    pub sparse: Option<Vec<(u64, u64)>>,
}

/// A problem with one entry (`path` as far as it is known) or with the stream.
#[derive(Debug)]
pub struct TarError {
    pub path: Vec<u8>,
    pub message: String,
}

impl TarError {
    fn new(path: &[u8], message: impl Into<String>) -> Self {
        TarError { path: path.to_vec(), message: message.into() }
    }
}

type Res<T> = std::result::Result<T, TarError>;

/// Reads entries; between two calls to [`Reader::next`] the caller may read the current
/// entry's stored data with [`Reader::read_data`] (what it leaves is skipped).
pub struct Reader<R> {
    r: R,
    pos: u64,
    /// Stored data of the current entry not yet read, then its padding.
    left: u64,
    pad: u64,
    max_meta: u64,
    done: bool,
}

fn io_err(path: &[u8], what: &str, e: io::Error) -> TarError {
    TarError::new(path, format!("{what}: {e}"))
}

/// Trim the NULs and spaces around a numeric field.
fn trim(f: &[u8]) -> &[u8] {
    let s = f.iter().position(|b| *b != b' ' && *b != 0).unwrap_or(f.len());
    let e = f.iter().rposition(|b| *b != b' ' && *b != 0).map(|i| i + 1).unwrap_or(s);
    &f[s..e.max(s)]
}

/// A numeric header field: octal (blank is 0) or GNU base-256. Returned as i128 so both
/// negative times and full 64-bit values fit; the caller range-checks.
fn number(f: &[u8]) -> Option<i128> {
    if let Some(&first) = f.first() {
        if first & 0x80 != 0 {
            // Base-256, big-endian two's complement over the field minus the marker bit:
            // 0x80 marks a positive value, 0xff a negative one. Fields are at most 12 bytes.
            let mut u: u128 = 0;
            for (i, &b) in f.iter().enumerate() {
                u = (u << 8) | if i == 0 && first != 0xff { (b & 0x7f) as u128 } else { b as u128 };
            }
            return Some(if first == 0xff { u as i128 - (1i128 << (8 * f.len())) } else { u as i128 });
        }
    }
    let t = trim(f);
    if t.is_empty() {
        return Some(0);
    }
    let mut v: i128 = 0;
    for &b in t {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v * 8 + (b - b'0') as i128;
        if v > u64::MAX as i128 {
            return None;
        }
    }
    Some(v)
}

fn unsigned(f: &[u8], path: &[u8], what: &str) -> Res<u64> {
    match number(f) {
        Some(v) if (0..=u64::MAX as i128).contains(&v) => Ok(v as u64),
        _ => Err(TarError::new(path, format!("bad {what} field {:?}", String::from_utf8_lossy(f).escape_debug().to_string()))),
    }
}

fn cstr(f: &[u8]) -> &[u8] {
    &f[..f.iter().position(|b| *b == 0).unwrap_or(f.len())]
}

/// Header checksum: unsigned sum with the field as spaces (signed, as old Sun tar wrote, also
/// accepted, as GNU tar, Go and bsdtar do).
fn checksum_ok(b: &[u8; 512]) -> bool {
    let Some(want) = number(&b[148..156]) else { return false };
    let mut u: i64 = 0;
    let mut s: i64 = 0;
    for (i, &x) in b.iter().enumerate() {
        let x = if (148..156).contains(&i) { b' ' } else { x };
        u += x as i64;
        s += x as i8 as i64;
    }
    want == u as i128 || want == s as i128
}

/// One PAX record set, in order.
fn pax_records(data: &[u8], path: &[u8]) -> Res<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // Trailing NUL padding some writers leave is the end.
        if rest.iter().all(|b| *b == 0) {
            break;
        }
        let sp = rest.iter().position(|b| *b == b' ').ok_or_else(|| TarError::new(path, "bad PAX record: no length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|n| *n > sp + 1 && *n <= rest.len())
            .ok_or_else(|| TarError::new(path, "bad PAX record: bad length"))?;
        let rec = &rest[sp + 1..len];
        if rec.last() != Some(&b'\n') {
            return Err(TarError::new(path, "bad PAX record: not ended by a newline"));
        }
        let rec = &rec[..rec.len() - 1];
        let eq = rec.iter().position(|b| *b == b'=').ok_or_else(|| TarError::new(path, "bad PAX record: no '='"))?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

/// A PAX decimal number (times may carry a fraction and a sign): the integer part.
fn pax_int(v: &[u8]) -> Option<i128> {
    let s = std::str::from_utf8(v).ok()?;
    let int = s.split('.').next()?;
    if int.is_empty() || int == "-" {
        return Some(0);
    }
    if int.len() > 30 {
        // Clamp absurd times rather than refuse, as GNU tar and bsdtar do.
        return Some(if int.starts_with('-') { i128::from(i64::MIN) } else { i128::from(i64::MAX) });
    }
    int.parse::<i128>().ok()
}

fn pct_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let Ok(v) = u8::from_str_radix(std::str::from_utf8(&s[i + 1..i + 3]).unwrap_or("zz"), 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn xattr_name(raw: &[u8], path: &[u8]) -> Res<String> {
    if raw.is_empty() || raw.contains(&0) {
        return Err(TarError::new(path, "extended attribute name is empty or contains a NUL byte"));
    }
    String::from_utf8(raw.to_vec()).map_err(|_| TarError::new(path, "extended attribute name is not UTF-8"))
}

/// Check a sparse map against the logical size and the stored bytes.
fn check_map(map: &[(u64, u64)], size: u64, stored: u64, path: &[u8]) -> Res<()> {
    let mut end = 0u64;
    let mut sum = 0u64;
    for &(off, len) in map {
        let e = off.checked_add(len).filter(|e| *e <= size);
        match e {
            Some(e) if off >= end => {
                end = e;
                sum += len;
            }
            _ => return Err(TarError::new(path, "bad GNU sparse map: chunks overlap, are out of order or lie past the file's size")),
        }
    }
    if sum != stored {
        return Err(TarError::new(path, format!("bad GNU sparse map: chunks hold {sum} bytes, the entry stores {stored}")));
    }
    Ok(())
}

impl<R: Read> Reader<R> {
    /// `max_meta`: most bytes one PAX header, GNU long name or sparse map may take.
    pub fn new(r: R, max_meta: u64) -> Self {
        Reader { r, pos: 0, left: 0, pad: 0, max_meta, done: false }
    }

    /// Bytes the next call to [`Reader::next`] skips before the next header (what is left
    /// of the current entry's data and its padding).
    pub fn pending(&self) -> u64 {
        self.left + self.pad
    }

    /// Bytes of the stream consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn into_inner(self) -> R {
        self.r
    }

    /// Read up to `buf.len()` bytes of the current entry's stored data; 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends inside an entry's data"));
        }
        self.pos += n as u64;
        self.left -= n as u64;
        Ok(n)
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let got = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
        self.pos += got;
        if got != n {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends inside an entry's data"));
        }
        Ok(())
    }

    fn exact(&mut self, buf: &mut [u8], path: &[u8]) -> Res<()> {
        self.r.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                TarError::new(path, "not a readable tar stream: it ends inside a header or record (truncated)")
            } else {
                io_err(path, "reading the archive", e)
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// A header block, or `None` at a clean end (EOF on a block boundary, or a zero block).
    fn block(&mut self, path: &[u8]) -> Res<Option<[u8; 512]>> {
        let mut b = [0u8; 512];
        let mut n = 0;
        while n < 512 {
            match self.r.read(&mut b[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(path, "reading the archive", e)),
            }
        }
        self.pos += n as u64;
        if n == 0 {
            return Ok(None);
        }
        if n < 512 {
            return Err(TarError::new(path, "not a readable tar stream: it ends inside a header (truncated)"));
        }
        if b.iter().all(|x| *x == 0) {
            return Ok(None);
        }
        if !checksum_ok(&b) {
            return Err(TarError::new(path, "not a readable tar stream: header checksum mismatch (damaged, or not tar)"));
        }
        Ok(Some(b))
    }

    /// The data of a metadata entry (PAX header, long name), at most `max_meta` bytes.
    fn meta_data(&mut self, size: u64, path: &[u8], what: &str) -> Res<Vec<u8>> {
        if size > self.max_meta {
            return Err(TarError::new(path, format!("{what} of {size} bytes is more tar metadata than the {} bytes allowed; refusing (possible archive bomb)", self.max_meta)));
        }
        let mut v = vec![0u8; size as usize];
        self.exact(&mut v, path)?;
        let pad = (BLOCK - size % BLOCK) % BLOCK;
        self.skip(pad).map_err(|e| io_err(path, "reading the archive", e))?;
        Ok(v)
    }

    /// The next entry, or `None` at the end of the archive.
    // Not `Iterator::next`: an entry's data is read from this reader before the next call.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Res<Option<Entry>> {
        if self.done {
            return Ok(None);
        }
        // Skip what the caller left of the previous entry.
        let rest = self.left + self.pad;
        self.left = 0;
        self.pad = 0;
        self.skip(rest).map_err(|e| io_err(b"", "reading the archive", e))?;

        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut first = true;
        loop {
            let ctx: &[u8] = long_name.as_deref().unwrap_or(b"");
            let Some(b) = self.block(ctx)? else {
                if !first {
                    return Err(TarError::new(ctx, "the archive ends after an extended header, without its entry"));
                }
                self.done = true;
                return Ok(None);
            };
            first = false;
            let typeflag = b[156];
            let hname = cstr(&b[0..100]).to_vec();
            let size = unsigned(&b[124..136], &hname, "size")?;
            match typeflag {
                b'x' | b'X' => {
                    let data = self.meta_data(size, &hname, "PAX header")?;
                    pax.extend(pax_records(&data, &hname)?);
                    continue;
                }
                b'g' => {
                    self.meta_data(size, &hname, "PAX global header")?;
                    continue;
                }
                b'L' | b'K' => {
                    let data = self.meta_data(size, &hname, "GNU long name")?;
                    let v = cstr(&data).to_vec();
                    if typeflag == b'L' {
                        long_name = Some(v);
                    } else {
                        long_link = Some(v);
                    }
                    continue;
                }
                b'V' => {
                    // A GNU volume label: no file. Its size field may describe the volume.
                    continue;
                }
                _ => {}
            }
            return self.entry(b, size, long_name, long_link, pax).map(Some);
        }
    }

    fn entry(&mut self, b: [u8; 512], size_field: u64, long_name: Option<Vec<u8>>, long_link: Option<Vec<u8>>, pax: Vec<(Vec<u8>, Vec<u8>)>) -> Res<Entry> {
        let typeflag = b[156];
        let magic = &b[257..265];
        let gnu = magic == b"ustar  \0";
        let ustar = &magic[..6] == b"ustar\0";
        let star = ustar && &b[508..512] == b"tar\0";
        let mut path = cstr(&b[0..100]).to_vec();
        if ustar {
            let prefix = cstr(if star { &b[345..476] } else { &b[345..500] });
            if !prefix.is_empty() {
                path = [prefix, b"/", &path].concat();
            }
        }
        let mut link = cstr(&b[157..257]).to_vec();
        if let Some(n) = long_name {
            path = n;
        }
        if let Some(l) = long_link {
            link = l;
        }
        let p = path.clone();
        let mode = (unsigned(&b[100..108], &p, "mode")? & 0o7777) as u32;
        let mut uid = unsigned(&b[108..116], &p, "uid")?;
        let mut gid = unsigned(&b[116..124], &p, "gid")?;
        let clamp = |v: i128| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        let mut mtime = number(&b[136..148]).map(clamp).ok_or_else(|| TarError::new(&p, "bad mtime field"))?;
        let mut dev = (0, 0);
        if ustar || gnu {
            dev = (unsigned(&b[329..337], &p, "device major")?, unsigned(&b[337..345], &p, "device minor")?);
        }
        let mut size = size_field;
        let mut xattrs = BTreeMap::new();
        // GNU sparse from PAX records.
        let mut sp_major: Option<i128> = None;
        let mut sp_minor: Option<i128> = None;
        let mut sp_name: Option<Vec<u8>> = None;
        let mut sp_real: Option<u64> = None;
        let mut sp_offsets: Vec<u64> = Vec::new();
        let mut sp_numbytes: Vec<u64> = Vec::new();
        let mut sp_map: Option<Vec<u8>> = None;
        let mut sp_seen = false;
        let bad = |k: &[u8]| TarError::new(&p, format!("bad PAX record {}", String::from_utf8_lossy(k)));
        for (k, v) in &pax {
            let uint = || pax_int(v).filter(|n| (0..=u64::MAX as i128).contains(n)).map(|n| n as u64).ok_or_else(|| bad(k));
            match k.as_slice() {
                b"path" => path = v.clone(),
                b"linkpath" => link = v.clone(),
                b"size" => size = uint()?,
                b"uid" => uid = uint()?,
                b"gid" => gid = uint()?,
                b"mtime" => mtime = clamp(pax_int(v).ok_or_else(|| bad(k))?),
                b"SCHILY.devmajor" => dev.0 = uint()?,
                b"SCHILY.devminor" => dev.1 = uint()?,
                b"GNU.sparse.major" => {
                    sp_seen = true;
                    sp_major = Some(pax_int(v).ok_or_else(|| bad(k))?)
                }
                b"GNU.sparse.minor" => {
                    sp_seen = true;
                    sp_minor = Some(pax_int(v).ok_or_else(|| bad(k))?)
                }
                b"GNU.sparse.name" => {
                    sp_seen = true;
                    sp_name = Some(v.clone())
                }
                b"GNU.sparse.size" | b"GNU.sparse.realsize" => {
                    sp_seen = true;
                    sp_real = Some(uint()?)
                }
                b"GNU.sparse.numblocks" => sp_seen = true,
                b"GNU.sparse.offset" => {
                    sp_seen = true;
                    sp_offsets.push(uint()?)
                }
                b"GNU.sparse.numbytes" => {
                    sp_seen = true;
                    sp_numbytes.push(uint()?)
                }
                b"GNU.sparse.map" => {
                    sp_seen = true;
                    sp_map = Some(v.clone())
                }
                _ => {
                    if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                        let name = xattr_name(name, &p)?;
                        // An empty value deletes the keyword (POSIX pax); Go sets no xattr.
                        if v.is_empty() {
                            xattrs.remove(&name);
                        } else {
                            xattrs.insert(name, v.clone());
                        }
                    } else if let Some(name) = k.strip_prefix(b"LIBARCHIVE.xattr.") {
                        let name = xattr_name(&pct_decode(name), &p)?;
                        use base64::Engine;
                        let s: Vec<u8> = v.iter().copied().filter(|c| *c != b'=').collect();
                        let val = base64::engine::general_purpose::STANDARD_NO_PAD.decode(&s).map_err(|_| bad(k))?;
                        xattrs.insert(name, val);
                    }
                }
            }
        }
        if let Some(n) = &sp_name {
            path = n.clone();
        }
        let p = path.clone();

        let kind = match typeflag {
            b'0' | 0 | b'7' if path.ends_with(b"/") => Kind::Dir,
            b'0' | 0 | b'7' | b'S' => Kind::File,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' | b'D' => Kind::Dir,
            b'6' => Kind::Fifo,
            b'A' => return Err(TarError::new(&p, "Solaris ACL entry (type 'A') is not supported; refusing rather than dropping the ACL")),
            b'M' => return Err(TarError::new(&p, "GNU multi-volume continuation (type 'M'): the file starts in another volume; refusing")),
            b'N' => return Err(TarError::new(&p, "old GNU long-name entry (type 'N') is not supported")),
            t => return Err(TarError::new(&p, format!("unsupported tar entry type {:?}", t as char))),
        };

        // Data: the stored bytes that follow the header. Entries that carry none never
        // consume any, whatever their size field says; `D` stores its dump list.
        let stored = match kind {
            Kind::File => size,
            _ if typeflag == b'D' => size,
            _ => 0,
        };
        let mut sparse = None;
        let mut logical = size;
        // PAX 1.0 keeps the map at the start of the data: bytes it takes, bytes left.
        let mut map_consumed = 0u64;
        let mut map_stored = size;
        if typeflag == b'S' {
            if !gnu {
                return Err(TarError::new(&p, "GNU sparse entry (type 'S') without a GNU header"));
            }
            let mut map = Vec::new();
            let push = |map: &mut Vec<(u64, u64)>, e: &[u8]| -> Res<()> {
                let off = unsigned(&e[0..12], &p, "sparse offset")?;
                let len = unsigned(&e[12..24], &p, "sparse length")?;
                if off == 0 && len == 0 && trim(e).is_empty() {
                    return Ok(());
                }
                map.push((off, len));
                Ok(())
            };
            for i in 0..4 {
                push(&mut map, &b[386 + i * 24..386 + (i + 1) * 24])?;
            }
            let real = unsigned(&b[483..495], &p, "sparse real size")?;
            let mut ext = b[482] != 0;
            while ext {
                if map.len() as u64 * 24 > self.max_meta {
                    return Err(TarError::new(&p, "GNU sparse map is too long; refusing (possible archive bomb)"));
                }
                let mut e = [0u8; 512];
                self.exact(&mut e, &p)?;
                for i in 0..21 {
                    push(&mut map, &e[i * 24..(i + 1) * 24])?;
                }
                ext = e[504] != 0;
            }
            check_map(&map, real, size, &p)?;
            logical = real;
            sparse = Some(map);
        } else if sp_seen && kind == Kind::File {
            let real = sp_real.ok_or_else(|| TarError::new(&p, "GNU sparse PAX records without GNU.sparse.size or GNU.sparse.realsize"))?;
            let map = match (sp_major, sp_minor) {
                (Some(1), Some(0)) => {
                    let (map, consumed) = self.sparse_1_0(size, &p)?;
                    map_consumed = consumed;
                    map_stored = size - consumed;
                    map
                }
                (None, _) | (Some(0), _) => {
                    if let Some(m) = &sp_map {
                        // 0.1: "off,len,off,len,..."
                        let nums: Vec<u64> = if m.is_empty() {
                            Vec::new()
                        } else {
                            m.split(|c| *c == b',').map(|n| pax_int(n).filter(|x| *x >= 0).map(|x| x as u64)).collect::<Option<_>>().ok_or_else(|| bad(b"GNU.sparse.map"))?
                        };
                        if nums.len() % 2 != 0 {
                            return Err(bad(b"GNU.sparse.map"));
                        }
                        nums.chunks(2).map(|c| (c[0], c[1])).collect()
                    } else {
                        // 0.0: repeated offset/numbytes pairs.
                        if sp_offsets.len() != sp_numbytes.len() {
                            return Err(bad(b"GNU.sparse.offset"));
                        }
                        sp_offsets.iter().copied().zip(sp_numbytes.iter().copied()).collect()
                    }
                }
                (Some(a), b) => return Err(TarError::new(&p, format!("unknown GNU sparse format {a}.{}", b.unwrap_or(0)))),
            };
            check_map(&map, real, map_stored, &p)?;
            logical = real;
            sparse = Some(map);
        }
        let data_pos = self.pos;
        self.left = stored - map_consumed.min(stored);
        if sparse.is_some() && self.left != map_stored && typeflag != b'S' {
            return Err(TarError::new(&p, "bad GNU sparse map: it does not fit the entry's data"));
        }
        // Padding after the data, counted from the data's start as written.
        self.pad = (BLOCK - stored % BLOCK) % BLOCK;
        if typeflag == b'D' {
            // The dump list is not content; skip it now.
            let n = self.left + self.pad;
            self.left = 0;
            self.pad = 0;
            self.skip(n).map_err(|e| io_err(&p, "reading the archive", e))?;
        }
        Ok(Entry {
            path,
            link,
            kind,
            typeflag,
            mode,
            uid,
            gid,
            mtime,
            dev,
            xattrs,
            size: if kind == Kind::File { logical } else { 0 },
            data_pos,
            stored: self.left,
            sparse,
        })
    }

    /// The PAX 1.0 sparse map at the start of an entry's `size` bytes of data: decimal
    /// numbers, one per line (count, then offset and length pairs), padded to a block.
    /// Returns the map and the bytes it took with its padding.
    fn sparse_1_0(&mut self, size: u64, path: &[u8]) -> Res<(Vec<(u64, u64)>, u64)> {
        let mut consumed = 0u64;
        let mut block = [0u8; 512];
        let mut at = 512usize;
        let mut line = Vec::new();
        let mut next = |me: &mut Self| -> Res<u64> {
            line.clear();
            loop {
                if at == 512 {
                    if consumed + 512 > size || consumed >= me.max_meta {
                        return Err(TarError::new(path, "bad GNU sparse 1.0 map: longer than the entry's data or the metadata limit"));
                    }
                    me.exact(&mut block, path)?;
                    consumed += 512;
                    at = 0;
                }
                let c = block[at];
                at += 1;
                if c == b'\n' {
                    break;
                }
                if !c.is_ascii_digit() || line.len() > 20 {
                    return Err(TarError::new(path, "bad GNU sparse 1.0 map: not a decimal number"));
                }
                line.push(c);
            }
            std::str::from_utf8(&line).ok().and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| TarError::new(path, "bad GNU sparse 1.0 map: not a decimal number"))
        };
        let n = next(self)?;
        if n > self.max_meta / 24 {
            return Err(TarError::new(path, format!("GNU sparse map of {n} chunks; refusing (possible archive bomb)")));
        }
        let mut map = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let off = next(self)?;
            let len = next(self)?;
            map.push((off, len));
        }
        Ok((map, consumed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header block: `fields` overwrite (offset, bytes) after the defaults; checksum last.
    fn hdr(name: &[u8], typeflag: u8, size: u64, fields: &[(usize, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..name.len()].copy_from_slice(name);
        b[100..108].copy_from_slice(b"0000644\0");
        b[108..116].copy_from_slice(b"0000000\0");
        b[116..124].copy_from_slice(b"0000000\0");
        b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        b[136..148].copy_from_slice(b"00000000000\0");
        b[156] = typeflag;
        b[257..265].copy_from_slice(b"ustar\x0000");
        for (o, v) in fields {
            b[*o..*o + v.len()].copy_from_slice(v);
        }
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|x| *x as u32).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        b
    }

    fn data(d: &[u8]) -> Vec<u8> {
        let mut v = d.to_vec();
        v.resize(d.len().div_ceil(512) * 512, 0);
        v
    }

    fn pax(recs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in recs {
            let n = k.len() + v.len() + 3;
            let mut len = n + 1;
            while len != n + len.to_string().len() {
                len = n + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        [hdr(b"PaxHeaders/x", b'x', body.len() as u64, &[]), data(&body)].concat()
    }

    /// (path, kind, size, content) of one entry.
    type Row = (String, Kind, u64, Vec<u8>);

    /// Every entry's [`Row`].
    fn read_all(bytes: &[u8]) -> Res<Vec<Row>> {
        let mut r = Reader::new(bytes, 1 << 20);
        let mut out = Vec::new();
        while let Some(e) = r.next()? {
            let mut stored = Vec::new();
            let mut buf = [0u8; 100];
            loop {
                let n = r.read_data(&mut buf).map_err(|e| TarError::new(&e.to_string().into_bytes(), "data"))?;
                if n == 0 {
                    break;
                }
                stored.extend_from_slice(&buf[..n]);
            }
            let content = match &e.sparse {
                None => stored,
                Some(map) => {
                    let mut c = vec![0u8; e.size as usize];
                    let mut at = 0;
                    for &(off, len) in map {
                        c[off as usize..(off + len) as usize].copy_from_slice(&stored[at..at + len as usize]);
                        at += len as usize;
                    }
                    c
                }
            };
            out.push((String::from_utf8_lossy(&e.path).into_owned(), e.kind, e.size, content));
        }
        Ok(out)
    }

    #[test]
    fn blank_numeric_fields_read_zero() {
        let t = [hdr(b"f", b'0', 2, &[(108, b"        "), (116, &[0u8; 8]), (136, b"            ")]), data(b"hi"), vec![0; 1024]].concat();
        let mut r = Reader::new(&t[..], 1 << 20);
        let e = r.next().unwrap().unwrap();
        assert_eq!((e.uid, e.gid, e.mtime, e.size), (0, 0, 0, 2));
    }

    #[test]
    fn dataless_entries_never_consume_data() {
        // An old-style directory (regular type, trailing '/') of size 1, a hard link and a
        // fifo claiming data, then a real file: all four read, the file intact.
        let t = [
            hdr(b"d/", b'0', 1, &[]),
            hdr(b"l", b'1', 700, &[(157, b"d/f")]),
            hdr(b"p", b'6', 5, &[]),
            hdr(b"d/f", b'0', 3, &[]),
            data(b"abc"),
            vec![0; 1024],
        ]
        .concat();
        let got = read_all(&t).unwrap();
        let kinds: Vec<_> = got.iter().map(|e| (e.0.as_str(), e.1)).collect();
        assert_eq!(kinds, [("d/", Kind::Dir), ("l", Kind::Hardlink), ("p", Kind::Fifo), ("d/f", Kind::File)]);
        assert_eq!(got[3].3, b"abc");
    }

    #[test]
    fn gnu_long_names_last_wins_volume_label_and_dumpdir() {
        let gnu: &[u8] = b"ustar  \0";
        let t = [
            hdr(b"vol", b'V', 0, &[(257, gnu)]),
            hdr(b"././@LongLink", b'L', 6, &[(257, gnu)]),
            data(b"first\0"),
            hdr(b"././@LongLink", b'L', 7, &[(257, gnu)]),
            data(b"second\0"),
            hdr(b"short", b'0', 0, &[(257, gnu)]),
            hdr(b"dump/", b'D', 10, &[(257, gnu)]),
            data(b"Yfile\0\0\0\0\0"),
            hdr(b"after", b'0', 1, &[(257, gnu)]),
            data(b"z"),
        ]
        .concat();
        let got = read_all(&t).unwrap();
        let names: Vec<_> = got.iter().map(|e| (e.0.as_str(), e.1)).collect();
        assert_eq!(names, [("second", Kind::File), ("dump/", Kind::Dir), ("after", Kind::File)]);
        assert_eq!(got[2].3, b"z");
    }

    #[test]
    fn base256_and_pax_times_clamp() {
        let mut neg = [0xffu8; 12];
        neg[11] = 0xfe; // -2
        let t = [hdr(b"a", b'0', 0, &[(136, &neg)]), pax(&[("mtime", b"99999999999999999999999999999999999.5")]), hdr(b"b", b'0', 0, &[])].concat();
        let mut r = Reader::new(&t[..], 1 << 20);
        assert_eq!(r.next().unwrap().unwrap().mtime, -2);
        assert_eq!(r.next().unwrap().unwrap().mtime, i64::MAX);
    }

    #[test]
    fn xattrs_schily_libarchive_and_nul_refused() {
        let t = [pax(&[("SCHILY.xattr.user.a", b"1"), ("LIBARCHIVE.xattr.user.b%3D", b"Mg==")]), hdr(b"f", b'0', 0, &[])].concat();
        let mut r = Reader::new(&t[..], 1 << 20);
        let e = r.next().unwrap().unwrap();
        assert_eq!(e.xattrs.get("user.a").map(|v| &v[..]), Some(&b"1"[..]));
        assert_eq!(e.xattrs.get("user.b=").map(|v| &v[..]), Some(&b"2"[..]));
        let t = [pax(&[("SCHILY.xattr.user.a\0b", b"1")]), hdr(b"f", b'0', 0, &[])].concat();
        let err = Reader::new(&t[..], 1 << 20).next().unwrap_err();
        assert!(err.message.contains("NUL"), "{}", err.message);
    }

    #[test]
    fn pax_sparse_formats_give_real_name_and_content() {
        // File "s" of 3000 bytes: "AB" at 0, "CD" at 2000, the rest holes.
        let want = {
            let mut v = vec![0u8; 3000];
            v[0..2].copy_from_slice(b"AB");
            v[2000..2002].copy_from_slice(b"CD");
            v
        };
        let v00 = [
            pax(&[("GNU.sparse.size", b"3000"), ("GNU.sparse.numblocks", b"2"), ("GNU.sparse.offset", b"0"), ("GNU.sparse.numbytes", b"2"), ("GNU.sparse.offset", b"2000"), ("GNU.sparse.numbytes", b"2"), ("path", b"s")]),
            hdr(b"GNUSparseFile.1/s", b'0', 4, &[]),
            data(b"ABCD"),
        ]
        .concat();
        let v01 = [pax(&[("GNU.sparse.size", b"3000"), ("GNU.sparse.numblocks", b"2"), ("GNU.sparse.map", b"0,2,2000,2"), ("GNU.sparse.name", b"s")]), hdr(b"GNUSparseFile.1/s", b'0', 4, &[]), data(b"ABCD")].concat();
        let map = data(b"2\n0\n2\n2000\n2\n");
        let v10 = [
            pax(&[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0"), ("GNU.sparse.name", b"s"), ("GNU.sparse.realsize", b"3000")]),
            hdr(b"GNUSparseFile.1/s", b'0', 512 + 4, &[]),
            map,
            data(b"ABCD"),
        ]
        .concat();
        for t in [v00, v01, v10] {
            let t = [t, hdr(b"next", b'0', 1, &[]), data(b"n"), vec![0; 1024]].concat();
            let got = read_all(&t).unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!((got[0].0.as_str(), got[0].1, got[0].2), ("s", Kind::File, 3000));
            assert!(got[0].3 == want);
            assert_eq!(got[1].3, b"n");
        }
    }

    #[test]
    fn sparse_map_past_size_or_not_covering_data_refused() {
        let t = [pax(&[("GNU.sparse.size", b"10"), ("GNU.sparse.map", b"8,4"), ("GNU.sparse.name", b"s")]), hdr(b"x", b'0', 4, &[]), data(b"ABCD")].concat();
        assert!(read_all(&t).unwrap_err().message.contains("sparse map"));
        let t = [pax(&[("GNU.sparse.size", b"10"), ("GNU.sparse.map", b"0,2"), ("GNU.sparse.name", b"s")]), hdr(b"x", b'0', 4, &[]), data(b"ABCD")].concat();
        assert!(read_all(&t).unwrap_err().message.contains("sparse map"));
    }

    #[test]
    fn refusals_name_the_reason() {
        let t = [hdr(b"acl", b'A', 0, &[])].concat();
        assert!(read_all(&t).unwrap_err().message.contains("Solaris ACL"));
        let mut t = hdr(b"f", b'0', 0, &[]);
        t[0] = b'g';
        assert!(read_all(&t).unwrap_err().message.contains("checksum"));
        let t = [hdr(b"f", b'0', 600, &[]), vec![1u8; 100]].concat();
        assert!(read_all(&t).is_err());
    }
}
