//! Path cleaning for layer entries: relative to the root, no `.`/empty components, and a
//! `..` that would climb above the root is an error. Symlink resolution lives in the tree,
//! since it needs the tree's current state.

/// Longest normalized path accepted (Linux `PATH_MAX`).
pub const MAX_PATH: usize = 4096;

/// Split a raw tar path into clean components. `/a//./b/` → `[a, b]`; `a/../b` → `[b]`;
/// `../x` or `a/../../x` → error.
pub fn clean(raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if raw.len() > MAX_PATH {
        return Err(format!("path is longer than {MAX_PATH} bytes"));
    }
    if raw.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("path climbs above the root with '..'".into());
                }
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Join components with `/` (the tree's key form; the root is the empty key).
pub fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::with_capacity(comps.iter().map(|c| c.len() + 1).sum());
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            v.push(b'/');
        }
        v.extend_from_slice(c);
    }
    v
}

/// Longest part of a path [`show`] prints: a hostile layer may hold names of megabytes.
const SHOW_MAX: usize = 1024;

/// Show a path for messages (lossy UTF-8, with the root as `/`; cut after 1 KiB). Control
/// characters (NUL, newline, escape sequences...) are shown as `\xNN` or `\u{N}` so a hostile
/// name cannot write raw bytes to the terminal.
pub fn show(p: &[u8]) -> String {
    let (head, tail) = if p.len() > SHOW_MAX { (&p[..SHOW_MAX], format!("... ({} bytes)", p.len())) } else { (p, String::new()) };
    let mut s = String::from("/");
    for c in String::from_utf8_lossy(head).chars() {
        if c.is_control() {
            if (c as u32) < 0x100 {
                s += &format!("\\x{:02x}", c as u32);
            } else {
                s += &format!("\\u{{{:x}}}", c as u32);
            }
        } else {
            s.push(c);
        }
    }
    s + &tail
}

/// The key range holding every descendant of `p`: `[p/, p0)` in bytewise order
/// (`0` is the byte after `/`). For the root, everything after the empty key.
pub fn descendants_range(p: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    if p.is_empty() {
        return (Vec::new(), None);
    }
    let mut lo = p.to_vec();
    lo.push(b'/');
    let mut hi = p.to_vec();
    hi.push(b'/' + 1);
    (lo, Some(hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Result<String, String> {
        clean(s.as_bytes()).map(|v| String::from_utf8(join(&v)).unwrap())
    }

    #[test]
    fn cleans_relative_and_absolute() {
        assert_eq!(c("./usr/bin/").unwrap(), "usr/bin");
        assert_eq!(c("/etc//passwd").unwrap(), "etc/passwd");
        assert_eq!(c("a/./b/../c").unwrap(), "a/c");
        assert_eq!(c("./").unwrap(), "");
    }

    #[test]
    fn refuses_escape() {
        assert!(c("../etc/passwd").is_err());
        assert!(c("a/../../etc").is_err());
        assert!(c("/../x").is_err());
        assert!(clean(&vec![b'a'; MAX_PATH + 1]).is_err());
    }

    #[test]
    fn show_cuts_long_paths() {
        assert_eq!(show(b""), "/");
        assert_eq!(show(b"etc/passwd"), "/etc/passwd");
        let s = show(&vec![b'a'; 1 << 20]);
        assert!(s.len() < 1100 && s.ends_with("... (1048576 bytes)"), "{}", &s[s.len() - 40..]);
        assert_eq!(show(&[b'b'; SHOW_MAX]).len(), SHOW_MAX + 1);
        assert_eq!(show(b"a\0b\n\x1b[2J"), "/a\\x00b\\x0a\\x1b[2J");
    }
}
