//! newc archive → readable text, one line per entry, for tests and reviews:
//! `INO MODE NLINK UID:GID MTIME SIZE RDEV NAME [-> TARGET]`, then the trailer's offset.

use super::format::{self, S_IFLNK, S_IFMT};
use std::fmt::Write as _;

/// Dump every archive in `buf` (concatenated archives and the zero padding between them,
/// as the kernel reads them). Malformed input gives an `error:` line, never a panic.
pub fn dump(buf: &[u8]) -> String {
    let mut s = String::new();
    let mut pos = 0;
    while pos < buf.len() {
        if buf[pos] == 0 {
            pos += 1;
            continue;
        }
        match format::parse(&buf[pos..]) {
            Ok((entries, end)) => {
                for e in &entries {
                    let h = &e.header;
                    let _ = write!(
                        s,
                        "{} {:06o} {} {}:{} {} {} {},{} {}",
                        h.ino,
                        h.mode,
                        h.nlink,
                        h.uid,
                        h.gid,
                        h.mtime,
                        h.filesize,
                        h.rdevmajor,
                        h.rdevminor,
                        String::from_utf8_lossy(e.name)
                    );
                    if h.mode & S_IFMT == S_IFLNK {
                        let _ = write!(s, " -> {}", String::from_utf8_lossy(e.data));
                    }
                    s.push('\n');
                }
                pos += end;
                let _ = writeln!(s, "TRAILER!!! ends at {pos}");
            }
            Err(e) => {
                let _ = writeln!(s, "error: at {pos}: {e}");
                break;
            }
        }
    }
    s
}
