//! The newc ("SVR4 without CRC") cpio format as the Linux kernel's `init/initramfs.c` and
//! GNU cpio read it: constants, the 110-byte ASCII header, and a strict reader.
//!
//! An entry is `070701`, thirteen 8-digit uppercase hex fields (ino, mode, uid, gid, nlink,
//! mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check), the name with
//! its NUL, zero padding to a multiple of 4, then `filesize` bytes of data (file contents, or a
//! symlink's target without NUL) padded to 4. The archive ends with an entry named
//! `TRAILER!!!`. References: the kernel's `Documentation/driver-api/early-userspace/buffer-format.rst`
//! and `usr/gen_init_cpio.c`; GNU cpio's `copyout.c` (`write_out_new_ascii_header`).

use std::io::{self, Write};

/// newc magic: ASCII header, no checksum.
pub const MAGIC: &[u8; 6] = b"070701";
/// newc with a checksum in `check` (we never write it; the reader accepts it).
pub const MAGIC_CRC: &[u8; 6] = b"070702";
/// Magic plus 13 fields of 8 hex digits.
pub const HEADER_LEN: usize = 110;
/// Name of the entry that ends an archive. The kernel forgets its hardlink table there, so each
/// archive of a concatenation has its own inode numbers.
pub const TRAILER: &[u8] = b"TRAILER!!!";

pub const S_IFMT: u32 = 0o170000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

/// Bytes of padding after `len` bytes to reach a multiple of 4.
pub fn pad4(len: u64) -> usize {
    ((4 - (len % 4)) % 4) as usize
}

/// One header's numeric fields (`namesize` is derived from the name when writing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub devmajor: u32,
    pub devminor: u32,
    pub rdevmajor: u32,
    pub rdevminor: u32,
    pub check: u32,
}

/// Write one header and its padded name (no NUL inside `name`).
pub fn write_header(w: &mut impl Write, h: &Header, name: &[u8]) -> io::Result<()> {
    debug_assert!(!name.contains(&0));
    let namesize = name.len() as u64 + 1;
    let mut buf = Vec::with_capacity(HEADER_LEN + name.len() + 4);
    buf.extend_from_slice(MAGIC);
    for v in [
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        h.filesize,
        h.devmajor,
        h.devminor,
        h.rdevmajor,
        h.rdevminor,
        namesize as u32,
        h.check,
    ] {
        write_hex8(&mut buf, v);
    }
    buf.extend_from_slice(name);
    buf.push(0);
    buf.resize(buf.len() + pad4(HEADER_LEN as u64 + namesize), 0);
    w.write_all(&buf)
}

fn write_hex8(buf: &mut Vec<u8>, v: u32) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for shift in (0..8).rev() {
        buf.push(HEX[((v >> (shift * 4)) & 0xf) as usize]);
    }
}

/// Write the `TRAILER!!!` entry as GNU cpio does (nlink 1, every other field 0).
pub fn write_trailer(w: &mut impl Write) -> io::Result<()> {
    write_header(w, &Header { nlink: 1, ..Header::default() }, TRAILER)
}

/// One parsed entry of an archive (a borrowed view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub header: Header,
    pub name: &'a [u8],
    pub data: &'a [u8],
    /// Offset of the header in the input.
    pub offset: usize,
}

/// Parse one newc archive from the start of `buf`, up to and including its trailer (which is
/// not returned). Returns the entries and the offset just past the trailer's padding.
/// Errors (never panics) on anything malformed.
pub fn parse(buf: &[u8]) -> Result<(Vec<Entry<'_>>, usize), String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        let head = buf.get(pos..pos + HEADER_LEN).ok_or_else(|| format!("offset {pos}: truncated header"))?;
        if &head[..6] != MAGIC && &head[..6] != MAGIC_CRC {
            return Err(format!("offset {pos}: bad magic {:?}", String::from_utf8_lossy(&head[..6])));
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let s = &head[6 + i * 8..14 + i * 8];
            let s = std::str::from_utf8(s).map_err(|_| format!("offset {pos}: non-ASCII field"))?;
            *v = u32::from_str_radix(s, 16).map_err(|_| format!("offset {pos}: field {i} is not hex: {s:?}"))?;
        }
        let namesize = f[11] as usize;
        if namesize == 0 {
            return Err(format!("offset {pos}: empty name"));
        }
        let name_start = pos + HEADER_LEN;
        let name = buf.get(name_start..name_start + namesize).ok_or_else(|| format!("offset {pos}: truncated name"))?;
        if name[namesize - 1] != 0 || name[..namesize - 1].contains(&0) {
            return Err(format!("offset {pos}: name is not one NUL-terminated string"));
        }
        let name = &name[..namesize - 1];
        let data_start = name_start + namesize + pad4((HEADER_LEN + namesize) as u64);
        let size = f[6] as usize;
        let data = buf.get(data_start..data_start + size).ok_or_else(|| format!("offset {pos}: truncated data"))?;
        let next = data_start + size + pad4(size as u64);
        if next > buf.len() {
            return Err(format!("offset {pos}: truncated padding"));
        }
        let header = Header {
            ino: f[0],
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            filesize: f[6],
            devmajor: f[7],
            devminor: f[8],
            rdevmajor: f[9],
            rdevminor: f[10],
            check: f[12],
        };
        if name == TRAILER {
            return Ok((out, next));
        }
        out.push(Entry { header, name, data, offset: pos });
        pos = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_gen_init_cpio() {
        let mut v = Vec::new();
        let h = Header { ino: 0x2a, mode: S_IFDIR | 0o755, nlink: 2, mtime: 1, ..Header::default() };
        write_header(&mut v, &h, b"dev").unwrap();
        assert_eq!(v.len(), 116); // 110 + "dev\0" = 114, padded to 116
        let fields = ["0000002A", "000041ED", "00000000", "00000000", "00000002", "00000001", "00000000"];
        let rest = ["00000000", "00000000", "00000000", "00000000", "00000004", "00000000"];
        let want = format!("070701{}{}", fields.concat(), rest.concat());
        assert_eq!(std::str::from_utf8(&v[..110]).unwrap(), want);
        assert_eq!(&v[110..], b"dev\0\0\0");
    }

    #[test]
    fn trailer_round_trips() {
        let mut v = Vec::new();
        write_header(&mut v, &Header { ino: 1, mode: S_IFLNK | 0o777, nlink: 1, filesize: 4, ..Header::default() }, b"a")
            .unwrap();
        v.extend_from_slice(b"b/c\0"[..4].as_ref());
        write_trailer(&mut v).unwrap();
        assert_eq!(v.len() % 4, 0);
        let (es, end) = parse(&v).unwrap();
        assert_eq!(end, v.len());
        assert_eq!(es.len(), 1);
        assert_eq!((es[0].name, es[0].data), (b"a".as_slice(), b"b/c\0".as_slice()));
    }

    #[test]
    fn parse_refuses_garbage_without_panicking() {
        for bad in [&b""[..], b"070701", b"0707010000000G", &[b'0'; 200][..]] {
            assert!(parse(bad).is_err());
        }
        let mut v = Vec::new();
        write_header(&mut v, &Header { filesize: 100, ..Header::default() }, b"x").unwrap();
        assert!(parse(&v).unwrap_err().contains("truncated data"));
    }
}
