//! `.deb` (deb(5)): an `ar` archive of `debian-binary` ("2.0\n"), `control.tar.xz`
//! (`./control`, `./md5sums`, `./conffiles`) and `data.tar.xz` (the payload under `./`).
//!
//! `ar` is written by hand: it is a 8-byte magic and one 60-byte ASCII header per member
//! (deb(5), ar(5)); a crate would add nothing. The data member is streamed into the output
//! and its size patched into its header afterwards, so no package is held in memory.
//! Both tars are xz-compressed (what `dpkg-deb` writes by default; every dpkg reads it).

use super::{is_config, write_tar, ItemKind, Meta, Payload, TarStyle};
use crate::emit::compress::Encoder;
use crate::spec::Compression;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

/// The archive magic.
const AR_MAGIC: &[u8] = b"!<arch>\n";

/// One `ar` member header: name (16), mtime (12), uid (6), gid (6), mode (8, octal),
/// size (10), all space-padded ASCII decimal, then "`\n".
fn ar_header(name: &str, size: u64, mtime: u64) -> [u8; 60] {
    let s = format!(
        "{name:<16}{mtime:<12}{:<6}{:<6}{:<8}{size:<10}`\n",
        0, 0, "100644"
    );
    let mut h = [0u8; 60];
    h.copy_from_slice(s.as_bytes());
    h
}

/// The `control` file (deb-control(5)).
pub fn control(p: &Payload, m: &Meta) -> String {
    let mut c = String::new();
    c.push_str(&format!(
        "Package: {}\nVersion: {}-{}\nArchitecture: {}\n",
        m.name, m.version, m.release, m.arch
    ));
    c.push_str(&format!(
        "Maintainer: {}\n",
        m.maintainer.as_deref().unwrap_or(DEFAULT_MAINTAINER)
    ));
    c.push_str(&format!(
        "Installed-Size: {}\n",
        p.installed_size().div_ceil(1024)
    ));
    for (field, list) in [
        ("Depends", &m.depends),
        ("Conflicts", &m.conflicts),
        ("Provides", &m.provides),
        ("Replaces", &m.replaces),
    ] {
        if !list.is_empty() {
            c.push_str(&format!("{field}: {}\n", list.join(", ")));
        }
    }
    c.push_str("Section: misc\nPriority: optional\n");
    if let Some(u) = &m.url {
        c.push_str(&format!("Homepage: {u}\n"));
    }
    c.push_str(&format!("Description: {}\n", m.summary));
    let mut long = m.description.clone();
    if let Some(l) = &m.license {
        long.push_str(&format!("\n\nLicense: {l}"));
    }
    for line in long.lines() {
        if line.trim().is_empty() {
            c.push_str(" .\n");
        } else {
            c.push_str(&format!(" {line}\n"));
        }
    }
    c
}

/// The maintainer when the box names none (Debian requires the field).
pub const DEFAULT_MAINTAINER: &str = "stagebox <stagebox@example.org>";

/// `md5sums`: one `HEX  path` line per regular file (hardlinks included), paths without `./`.
pub fn md5sums(p: &Payload) -> String {
    let mut s = String::new();
    for it in &p.items {
        if let ItemKind::File { inode, .. } = it.kind {
            s.push_str(&format!(
                "{}  {}\n",
                super::hex(&p.sums(inode).md5),
                String::from_utf8_lossy(it.path)
            ));
        }
    }
    s
}

/// Write the package into `out` (at its start).
pub fn write(p: &Payload, m: &Meta, threads: usize, out: &mut File) -> io::Result<()> {
    let sde = m.sde;
    // control.tar.xz, small: in memory.
    let mut ctl = Vec::new();
    {
        let mut enc = Encoder::with_threads(Compression::Xz, threads, &mut ctl)?;
        let x = Default::default();
        let root = crate::tarfmt::Head {
            path: b"./",
            kind: crate::tarfmt::TarKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: sde,
            size: 0,
            link: b"",
            dev: (0, 0),
            xattrs: &x,
        };
        crate::tarfmt::write_header(&mut enc, &root)?;
        let conffiles: String = p
            .items
            .iter()
            .filter(|i| is_config(i))
            .map(|i| format!("/{}\n", String::from_utf8_lossy(i.path)))
            .collect();
        if !conffiles.is_empty() {
            super::tar_file(&mut enc, b"./conffiles", conffiles.as_bytes(), sde)?;
        }
        super::tar_file(&mut enc, b"./control", control(p, m).as_bytes(), sde)?;
        super::tar_file(&mut enc, b"./md5sums", md5sums(p).as_bytes(), sde)?;
        crate::tarfmt::finish(&mut enc)?;
        enc.finish()?;
    }
    let data_header_at = (AR_MAGIC.len() + 60 + 4 + 60 + ctl.len() + ctl.len() % 2) as u64;
    let data_len = {
        let mut w = io::BufWriter::with_capacity(1 << 20, &mut *out);
        w.write_all(AR_MAGIC)?;
        w.write_all(&ar_header("debian-binary", 4, sde))?;
        w.write_all(b"2.0\n")?;
        w.write_all(&ar_header("control.tar.xz", ctl.len() as u64, sde))?;
        w.write_all(&ctl)?;
        if ctl.len() % 2 == 1 {
            w.write_all(b"\n")?;
        }
        w.write_all(&ar_header("data.tar.xz", 0, sde))?;
        let mut counted = crate::emit::Counter { inner: w, n: 0 };
        {
            let mut enc = Encoder::with_threads(Compression::Xz, threads, &mut counted)?;
            let style = TarStyle {
                prefix: b"./",
                root: true,
                end: true,
                pax: &|_, _| Vec::new(),
            };
            write_tar(p, sde, &style, &mut enc)?;
            enc.finish()?;
        }
        let data_len = counted.n;
        let mut w = counted.inner;
        if data_len % 2 == 1 {
            w.write_all(b"\n")?;
        }
        w.flush()?;
        data_len
    };
    out.seek(SeekFrom::Start(data_header_at))?;
    out.write_all(&ar_header("data.tar.xz", data_len, sde))?;
    out.seek(SeekFrom::End(0))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ar_header_is_60_bytes_of_ascii() {
        let h = ar_header("debian-binary", 4, 1);
        assert_eq!(&h[..16], b"debian-binary   ");
        assert_eq!(&h[48..58], b"4         ");
        assert_eq!(&h[58..], b"`\n");
    }
}
