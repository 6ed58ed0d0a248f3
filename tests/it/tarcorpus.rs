//! Odd tars from the world's writers, flattened by stagebox and compared with bsdtar.
//!
//! The setup writes one source tree (dirs with odd modes and owners, a sparse file, an
//! all-hole file, long names and link targets, a hardlink, a symlink, a fifo, a UTF-8 name,
//! an xattr) with GNU tar (`--sparse`, every `--format`, each PAX sparse version), bsdtar
//! (each of its tar formats) and Python's `tarfile` (each format), plus hand-made byte
//! streams of legacy forms (blank numeric fields, old-style directories with a size, a GNU
//! volume label, repeated long names, an incremental `D` entry, out-of-range times). Each tar
//! becomes the only layer of an OCI image; stagebox builds a `.tar` of it; `bsdtar -x` of
//! stagebox's output must give the same tree (names, types, sizes, contents, modes, owners,
//! link targets, hardlink groups, xattrs) as `bsdtar -x` of the original tar. No output may
//! hold a `GNUSparseFile.` path. A case may instead be refused, with a message naming the
//! layer; which cases may be refused is listed, and every writer-made tar must be accepted.

use crate::common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const LONG_DIR: &str = "long-directory-name-that-goes-on-and-on-and-on-and-on-past-the-ustar-name-field-of-one-hundred-bytes";

/// The source tree every writer archives.
fn source_tree(root: &Path) {
    let root_owned = is_root();
    let mk = |rel: &str, data: &[u8], mode: u32| {
        let p = root.join(rel);
        write(&p, data);
        set_mode(&p, mode);
    };
    std::fs::create_dir_all(root.join("dir")).unwrap();
    mk("dir/file.txt", b"hello\n", 0o640);
    mk("dir/empty", b"", 0o600);
    mk("exec", b"#!/bin/sh\necho hi\n", 0o4755);
    mk("dir/\u{fc}n\u{ef}c\u{f6}d\u{e9}", b"utf-8 name\n", 0o644);
    std::fs::create_dir_all(root.join("sticky")).unwrap();
    set_mode(&root.join("sticky"), 0o1777);
    // Sparse: data at 0, at 1 MiB and at the very end of 3 MiB; the rest holes.
    let f = std::fs::File::create(root.join("sparse.img")).unwrap();
    f.set_len(3 << 20).unwrap();
    f.write_all_at(&[b'A'; 4096], 0).unwrap();
    f.write_all_at(&[b'B'; 8192], 1 << 20).unwrap();
    f.write_all_at(b"the end\n", (3 << 20) - 8).unwrap();
    drop(f);
    let f = std::fs::File::create(root.join("holes-only")).unwrap();
    f.set_len(1 << 20).unwrap();
    drop(f);
    std::os::unix::fs::symlink("dir/file.txt", root.join("link")).unwrap();
    std::fs::hard_link(root.join("dir/file.txt"), root.join("hard")).unwrap();
    run(Command::new("mkfifo").arg(root.join("fifo")));
    let long = root.join(LONG_DIR);
    std::fs::create_dir_all(&long).unwrap();
    mk(&format!("{LONG_DIR}/and-a-file-with-a-long-name-too-{}", "x".repeat(70)), b"long\n", 0o644);
    std::os::unix::fs::symlink(format!("../{LONG_DIR}/{}", "y".repeat(60)), root.join("dir/longlink")).unwrap();
    if xattr::set(root.join("dir/file.txt"), "user.comment", b"kept").is_err() {
        eprintln!("note: this file system takes no user xattrs; the corpus has none");
    }
    if root_owned {
        for (rel, uid, gid) in [("dir", 1234, 5678), ("dir/file.txt", 1000, 1000), ("exec", 0, 50)] {
            std::os::unix::fs::lchown(root.join(rel), Some(uid), Some(gid)).unwrap();
        }
    }
    set_mode(&root.join("dir"), 0o750);
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Run a writer; it may warn (exit non-zero) about members its format cannot hold, as long as
/// it wrote a tar: what is in that tar is what both sides are compared on.
fn write_with(cmd: &mut Command, out: &Path) -> Vec<u8> {
    let o = output(cmd);
    let data = std::fs::read(out).unwrap_or_default();
    assert!(data.len() >= 1024, "{cmd:?} wrote no tar ({}):\n{}", o.status, String::from_utf8_lossy(&o.stderr));
    if !o.status.success() {
        eprintln!("note: {cmd:?}: {}\n{}", o.status, String::from_utf8_lossy(&o.stderr).lines().take(5).collect::<Vec<_>>().join("\n"));
    }
    data
}

const PY_WRITER: &str = r#"
import sys, tarfile, os
fmt = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}[sys.argv[1]]
src, out = sys.argv[2], sys.argv[3]
with tarfile.open(out, "w", format=fmt) as t:
    for d, dirs, files in os.walk(src):
        dirs.sort()
        for n in [d] + [os.path.join(d, f) for f in sorted(files)] + [os.path.join(d, x) for x in dirs if os.path.islink(os.path.join(d, x))]:
            arc = os.path.relpath(n, src)
            try:
                info = t.gettarinfo(n, arcname=arc)
                if info.isreg():
                    with open(n, "rb") as f:
                        t.addfile(info, f)
                else:
                    t.addfile(info)
            except ValueError as e:
                print("skipped", arc, e, file=sys.stderr)
"#;

/// Every writer-made tar: (case name, bytes).
fn writer_corpus(src: &Path, scratch: &Path) -> Vec<(String, Vec<u8>)> {
    require_tools(&["tar", "bsdtar", "python3", "mkfifo"]);
    let mut out = Vec::new();
    let gnu = |name: &str, args: &[&str]| -> (String, Vec<u8>) {
        let f = scratch.join(format!("{name}.tar"));
        let mut c = Command::new("tar");
        c.args(["--create", "--numeric-owner", "-f"]).arg(&f).args(args).arg("-C").arg(src).arg(".");
        (name.to_string(), write_with(&mut c, &f))
    };
    // --sparse is a GNU feature: ustar and v7 archives store the holes as zeros.
    for fmt in ["gnu", "oldgnu", "posix"] {
        out.push(gnu(&format!("gnutar-{fmt}"), &[&format!("--format={fmt}"), "--sparse"]));
    }
    for fmt in ["ustar", "v7"] {
        out.push(gnu(&format!("gnutar-{fmt}"), &[&format!("--format={fmt}")]));
    }
    for v in ["0.0", "0.1", "1.0"] {
        out.push(gnu(&format!("gnutar-posix-sparse-{v}"), &["--format=posix", "--sparse", &format!("--sparse-version={v}"), "--xattrs"]));
    }
    for fmt in ["pax", "paxr", "ustar", "gnutar", "v7"] {
        let f = scratch.join(format!("bsdtar-{fmt}.tar"));
        let mut c = Command::new("bsdtar");
        c.arg(format!("--format={fmt}")).args(["--numeric-owner", "-cf"]).arg(&f).arg("-C").arg(src).arg(".");
        out.push((format!("bsdtar-{fmt}"), write_with(&mut c, &f)));
    }
    let py = scratch.join("writer.py");
    write(&py, PY_WRITER);
    for fmt in ["ustar", "gnu", "pax"] {
        let f = scratch.join(format!("python-{fmt}.tar"));
        let mut c = Command::new("python3");
        c.arg(&py).arg(fmt).arg(src).arg(&f);
        out.push((format!("python-{fmt}"), write_with(&mut c, &f)));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Hand-made legacy forms

const GNU: (usize, &[u8]) = (257, b"ustar  \0");
const V7: (usize, &[u8]) = (257, &[0u8; 8]);

fn handmade_corpus() -> Vec<(String, Vec<u8>)> {
    let end = vec![0u8; 1024];
    vec![
        // plexus archiver: blank uid, gid and mtime fields
        ("blank-numeric-fields".into(), [raw_tar_header(b"f", b'0', 2, &[(108, b"        "), (116, &[0u8; 8]), (136, b"           \0")]), tar_padded(b"ok"), end.clone()].concat()),
        // V7: a directory as a regular entry with a trailing '/', size 1, then a file
        (
            "old-style-dir-size-1".into(),
            [raw_tar_header(b"d/", b'0', 1, &[V7]), raw_tar_header(b"d/f", b'0', 3, &[V7]), tar_padded(b"abc"), end.clone()].concat(),
        ),
        ("old-style-dir-nul-type".into(), [raw_tar_header(b"e/", 0, 0, &[V7]), raw_tar_header(b"e/g", 0, 1, &[V7]), tar_padded(b"g"), end.clone()].concat()),
        // an old hardlink archive: the link entry repeats the file's size
        (
            "hardlink-with-size".into(),
            [raw_tar_header(b"a", b'0', 5, &[]), tar_padded(b"12345"), raw_tar_header(b"b", b'1', 5, &[(157, b"a")]), raw_tar_header(b"c", b'0', 1, &[]), tar_padded(b"c"), end.clone()].concat(),
        ),
        (
            "gnu-volume-label-and-repeated-long-names".into(),
            [
                raw_tar_header(b"my volume", b'V', 0, &[GNU]),
                raw_tar_header(b"././@LongLink", b'L', 6, &[GNU]),
                tar_padded(b"first\0"),
                raw_tar_header(b"././@LongLink", b'L', 7, &[GNU]),
                tar_padded(b"second\0"),
                raw_tar_header(b"short", b'0', 1, &[GNU]),
                tar_padded(b"s"),
                end.clone(),
            ]
            .concat(),
        ),
        (
            "gnu-incremental-dir".into(),
            [raw_tar_header(b"inc/", b'D', 12, &[GNU]), tar_padded(b"Yfile\0Nold\0\0"), raw_tar_header(b"inc/file", b'0', 1, &[GNU]), tar_padded(b"x"), end.clone()].concat(),
        ),
        (
            "out-of-range-times".into(),
            [raw_tar_header(b"future", b'0', 0, &[(136, &[0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])]), raw_tar_header(b"past", b'0', 0, &[(136, &[0xff; 12])]), end.clone()].concat(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The comparison

fn bsdtar_extract(tar: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    run(Command::new("bsdtar").args(["-x", "-p", "--numeric-owner", "--xattrs", "-f"]).arg(tar).arg("-C").arg(dest));
}

/// Build a box of one image whose only layer is `tar`; `Ok(output tar)` or `Err(stderr)`.
fn stagebox_tar(dir: &Path, tar: &[u8]) -> Result<PathBuf, String> {
    let layout = Layout::create(&dir.join("layout"));
    let m = layout.image(&[(tar, Comp::None)], "amd64");
    layout.set_index(&[(m.clone(), "v1")]);
    let box_file = dir.join("box.toml");
    write(&box_file, format!("name = \"odd\"\n[[layer]]\nimage = \"oci:{}@{}\"\n[output.tar]\n", layout.dir.display(), digest_of(&m)));
    let out = dir.join("out");
    let o = output(stagebox(["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), dir.join("cache").as_os_str(), "-q".as_ref()]).env("TMPDIR", dir));
    match o.status.code() {
        Some(0) => Ok(out.join("odd.tar")),
        Some(1) => {
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            assert!(std::fs::read_dir(&out).map(|d| d.count() == 0).unwrap_or(true), "a refused build wrote into --out");
            Err(err)
        }
        c => panic!("stagebox exited {c:?}:\n{}", String::from_utf8_lossy(&o.stderr)),
    }
}

/// `Ok(())` when equal, `Err(stderr)` when refused; panics on any difference.
fn check_case(scratch: &Path, name: &str, tar: &[u8]) -> Result<(), String> {
    let dir = scratch.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let orig = dir.join("orig.tar");
    write(&orig, tar);
    let built = stagebox_tar(&dir, tar)?;
    let listing = output(Command::new("bsdtar").arg("-tf").arg(&built));
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(!listing.contains("GNUSparseFile."), "{name}: output holds a GNUSparseFile. path:\n{listing}");
    bsdtar_extract(&orig, &dir.join("want"));
    bsdtar_extract(&built, &dir.join("got"));
    let want = snapshot(&dir.join("want"));
    let got = snapshot(&dir.join("got"));
    let d = diff_trees("bsdtar -x of the tar", &want, "bsdtar -x of stagebox's output", &got);
    assert!(d.is_empty(), "{name}: {} paths differ:\n{}", d.len(), d.join("\n"));
    assert!(!want.is_empty(), "{name}: empty tree");
    Ok(())
}

#[test]
fn every_writer_s_tar_flattens_to_what_bsdtar_extracts() {
    let scratch = tempdir();
    let src = scratch.path().join("src");
    source_tree(&src);
    let mut report = BTreeMap::new();
    for (name, tar) in writer_corpus(&src, scratch.path()) {
        match check_case(scratch.path(), &name, &tar) {
            Ok(()) => report.insert(name, "equal".to_string()),
            Err(e) => panic!("{name}: a writer-made tar was refused:\n{e}"),
        };
    }
    // The sparse cases really were sparse (else the test proves nothing about them).
    for name in ["gnutar-gnu", "gnutar-oldgnu", "gnutar-posix-sparse-0.0", "gnutar-posix-sparse-0.1", "gnutar-posix-sparse-1.0", "bsdtar-pax"] {
        let t = std::fs::read(scratch.path().join(format!("{name}.tar"))).unwrap();
        assert!(t.len() < 1 << 20, "{name}: {} bytes, holes written out", t.len());
        // `inspect --files` flattens for metadata only (no spill file): the sparse file is
        // listed by its logical size, read in that one pass.
        let dir = scratch.path().join(name);
        let o = output(stagebox(["inspect".as_ref(), "--json".as_ref(), "--files".as_ref(), "--cache".as_ref(), dir.join("cache").as_os_str(), format!("oci:{}:v1", dir.join("layout").display()).as_ref()]).env("TMPDIR", &dir));
        assert!(o.status.success(), "{name}: inspect failed:\n{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let img = v["files"].as_array().unwrap().iter().find(|e| e["path"].as_str().is_some_and(|p| p.ends_with("sparse.img"))).unwrap_or_else(|| panic!("{name}: no sparse.img in {v}"));
        assert_eq!((&img["type"], &img["size"]), (&serde_json::json!("file"), &serde_json::json!(3 << 20)), "{name}: {img}");
    }
    eprintln!("{report:#?}");
}

#[test]
fn legacy_forms_flatten_to_what_bsdtar_extracts() {
    require_tools(&["bsdtar"]);
    let scratch = tempdir();
    for (name, tar) in handmade_corpus() {
        if let Err(e) = check_case(scratch.path(), &name, &tar) {
            panic!("{name}: refused:\n{e}");
        }
    }
}

#[test]
fn refusals_name_the_layer_the_entry_and_why() {
    require_tools(&["bsdtar"]);
    let scratch = tempdir();
    let end = vec![0u8; 1024];
    let pax_nul = {
        let rec = b"31 SCHILY.xattr.user.a\0b=value\n";
        [raw_tar_header(b"PaxHeaders/f", b'x', rec.len() as u64, &[]), tar_padded(rec), raw_tar_header(b"f", b'0', 0, &[]), end.clone()].concat()
    };
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("xattr-name-with-nul", pax_nul, "/f: ", "NUL"),
        ("solaris-acl", [raw_tar_header(b"acl", b'A', 0, &[]), end.clone()].concat(), "/acl: ", "Solaris ACL"),
        ("control-bytes-in-name", [raw_tar_header(b"a\x1b[2Jb\n", b'M', 0, &[GNU]), end.clone()].concat(), "/a\\x1b[2Jb\\x0a: ", "multi-volume"),
    ];
    for (name, tar, path, why) in cases {
        let dir = scratch.path().join(name);
        let e = stagebox_tar(&dir, &tar).expect_err(name);
        assert!(e.contains("layer oci:") && e.contains(path) && e.contains(why), "{name}: {e}");
        assert!(!e.contains('\x1b'), "{name}: raw control bytes in the message: {e:?}");
    }
}
