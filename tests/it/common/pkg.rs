//! Helpers for `tests/it/packages.rs`: a StageX-like package image (core-filesystem base layer
//! plus a package layer), boxes with `[output.deb|rpm|arch|apk]`, builds under varied host
//! state, and independent readers for what the packaging tools do not check themselves
//! (mtree, apk's gzip streams, checksums).

use super::*;

/// The package layer: binaries, a symlink, a hardlink, a config file in /etc, a doc dir,
/// a library with its symlink, a setuid helper and a deep data file.
pub fn package_layer() -> Vec<u8> {
    layer(&[
        Entry::dir("etc"),
        Entry::file("etc/demo.conf", "greeting = hello\n"),
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::file("usr/bin/demo", "#!/bin/sh\necho demo\n").mode(0o755),
        Entry::symlink("usr/bin/demo-link", "demo"),
        Entry::hardlink("usr/bin/demo-hard", "usr/bin/demo"),
        Entry::file("usr/bin/demo-suid", "#!/bin/sh\nid\n").mode(0o4755),
        Entry::dir("usr/lib"),
        Entry::file("usr/lib/libdemo.so.1", vec![0x7fu8; 3000]),
        Entry::symlink("usr/lib/libdemo.so", "libdemo.so.1"),
        Entry::dir("usr/share"),
        Entry::dir("usr/share/demo"),
        Entry::file("usr/share/demo/a b#c=d.txt", "odd name\n"),
        Entry::dir("usr/share/doc"),
        Entry::dir("usr/share/doc/demo"),
        Entry::file("usr/share/doc/demo/README", "Demo package.\n"),
        Entry::file("usr/share/doc/demo/copyright", "Public domain.\n"),
    ])
}

/// A box directory with the image (core-filesystem + `top`) and `BOX.toml` whose outputs
/// are `outputs`. Returns the box file.
pub fn package_box(dir: &Path, top: &[u8], outputs: &str) -> PathBuf {
    let layout = Layout::create(&dir.join("img"));
    let base = core_filesystem_layer();
    let img = layout.image(&[(&base, Comp::None), (top, Comp::Gzip)], "amd64");
    layout.set_index(&[(img.clone(), "demo")]);
    let f = dir.join("demo.toml");
    write(&f, format!("name = \"demo\"\nversion = \"1.2.3\"\n\n[[layer]]\nimage = \"oci:img@{}\"\n\n{outputs}", digest_of(&img)));
    f
}

/// The tree the package layer holds, extracted with GNU tar (owners and modes kept).
pub fn layer_snapshot(top: &[u8]) -> BTreeMap<String, Node> {
    let t = tempdir();
    let f = t.path().join("layer.tar");
    write(&f, top);
    let dest = t.path().join("x");
    gnu_tar_extract(&f, &dest);
    snapshot(&dest)
}

/// `stagebox build` with umask, TZ, locale, cwd and thread count varied by `variant` (0 or 1).
pub fn build_varied(box_file: &Path, work: &Path, variant: usize) -> (Vec<Built>, PathBuf) {
    let (umask, tz, lang, threads) = [("022", "UTC", "C", "1"), ("077", "Asia/Kathmandu", "de_DE.UTF-8", "5")][variant];
    let out = work.join("out");
    let cwd = work.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("umask {umask}; exec \"$@\""))
        .arg("sh")
        .arg(stagebox_bin())
        .arg("build")
        .arg(box_file)
        .arg("--out")
        .arg(&out)
        .arg("--cache")
        .arg(work.join("cache"))
        .args(["--threads", threads, "-q"])
        .current_dir(&cwd)
        .env("TZ", tz)
        .env("LANG", lang)
        .env("LC_ALL", lang)
        .env("HOME", work)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("STAGEBOX_CACHE");
    let o = run(&mut c);
    (parse_build_stdout(&o.stdout), out)
}

/// The one output of `format` that manifest.json in `out` lists.
pub fn output_of(out: &Path, format: &str) -> PathBuf {
    let m = read_json(&out.join("manifest.json"));
    let o = m["outputs"].as_array().unwrap().iter().find(|o| o["format"] == format).unwrap_or_else(|| panic!("no {format} output in {m}"));
    let p = out.join(o["path"].as_str().unwrap());
    assert_eq!(sha256_file(&p), o["sha256"].as_str().unwrap(), "manifest sha256 of {}", p.display());
    p
}

/// Run `stagebox build` expecting failure; returns (exit code, stderr).
pub fn build_fails(box_file: &Path, work: &Path) -> (i32, String) {
    let o = output(stagebox(["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), work.join("out").as_os_str(), "--cache".as_ref(), work.join("cache").as_os_str(), "-q".as_ref()]).borrow_mut());
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Run a Python 3 script with `args`; returns stdout. Fails the test on a non-zero exit.
pub fn python(script: &str, args: &[&OsStr]) -> String {
    require_tool("python3");
    let o = run(Command::new("python3").arg("-c").arg(script).args(args));
    String::from_utf8(o.stdout).unwrap()
}

/// Split an `.apk` into its gzip streams and check it with Python's own gzip/tar readers:
/// prints JSON `{streams, pkginfo, datahash_ok, files: {path: {type, mode, size, sha256,
/// sha1_pax, sha1_ok, link}}, control_members}`.
pub const APK_READER: &str = r#"
import sys, zlib, hashlib, tarfile, io, json
data = open(sys.argv[1], 'rb').read()
streams, pos = [], 0
while pos < len(data):
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(data[pos:])
    used = len(data) - pos - len(d.unused_data)
    assert d.eof, 'truncated gzip stream'
    streams.append((data[pos:pos + used], out))
    pos += used
control = tarfile.open(fileobj=io.BytesIO(streams[0][1]))
members = control.getmembers()
pkginfo = control.extractfile('.PKGINFO').read().decode()
datahash = [l.split(' = ', 1)[1] for l in pkginfo.splitlines() if l.startswith('datahash = ')][0]
files = {}
tf = tarfile.open(fileobj=io.BytesIO(streams[1][1]))
for m in tf.getmembers():
    e = {'mode': m.mode, 'uid': m.uid, 'gid': m.gid, 'mtime': m.mtime, 'sha1_pax': m.pax_headers.get('APK-TOOLS.checksum.SHA1')}
    if m.isfile():
        b = tf.extractfile(m).read()
        e.update(type='file', size=len(b), sha256=hashlib.sha256(b).hexdigest(), sha1_ok=hashlib.sha1(b).hexdigest() == e['sha1_pax'])
    elif m.islnk():
        e.update(type='hardlink', link=m.linkname)
    elif m.issym():
        e.update(type='symlink', link=m.linkname, sha1_ok=hashlib.sha1(m.linkname.encode()).hexdigest() == e['sha1_pax'])
    elif m.isdir():
        e.update(type='dir')
    else:
        e.update(type='other')
    files[m.name] = e
print(json.dumps({'streams': len(streams), 'pkginfo': pkginfo, 'control_members': [m.name for m in members],
                  'datahash_ok': hashlib.sha256(streams[1][0]).hexdigest() == datahash, 'files': files}))
"#;

/// Parse an (uncompressed) mtree(5) text as makepkg writes it: path → key → value, with
/// `\ooo` escapes in paths decoded. `/set` lines are applied.
pub fn parse_mtree(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let unescape = |s: &str| -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap(), 8).unwrap());
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    let mut set: BTreeMap<String, String> = BTreeMap::new();
    let mut m = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut words = line.split(' ');
        let first = words.next().unwrap();
        let kv: BTreeMap<String, String> = words.filter_map(|w| w.split_once('=')).map(|(k, v)| (k.to_string(), unescape(v))).collect();
        if first == "/set" {
            set.extend(kv);
            continue;
        }
        let mut e = set.clone();
        e.extend(kv);
        m.insert(unescape(first.trim_start_matches("./")), e);
    }
    m
}
