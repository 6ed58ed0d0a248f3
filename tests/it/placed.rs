//! The uncompressed tar is the same bytes whether it is the box's only output or written
//! beside another (an OCI layout), and GNU tar reads it back (hardlinks, long paths).

use std::path::Path;
use std::process::Command;

fn stagebox(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stagebox")).args(args).output().expect("run stagebox")
}

fn sha256(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn tar_alone_equals_tar_beside_another_output() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("rootfs");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("d".repeat(120)).join("e".repeat(120))).unwrap();
    std::fs::write(root.join("usr/bin/big"), vec![7u8; 3 << 20]).unwrap();
    std::fs::write(root.join("usr/bin/small"), b"hello").unwrap();
    std::fs::hard_link(root.join("usr/bin/small"), root.join("usr/bin/small-link")).unwrap();
    std::fs::write(root.join("d".repeat(120)).join("e".repeat(120)).join("f".repeat(50)), b"long").unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::fs::create_dir_all(t.path().join("top/etc")).unwrap();
    std::fs::write(t.path().join("top/etc/os-release"), b"ID=test\n").unwrap();

    let layers = "[[layer]]\ndir = \"rootfs\"\n[[layer]]\ndir = \"top\"\n";
    std::fs::write(t.path().join("a.toml"), format!("name = \"x\"\n{layers}[output.tar]\n")).unwrap();
    std::fs::write(t.path().join("b.toml"), format!("name = \"x\"\n{layers}[output.tar]\n[output.oci]\n")).unwrap();
    let cache = t.path().join("cache");
    for (b, out) in [("a.toml", "out-a"), ("b.toml", "out-b")] {
        let o = stagebox(&[
            "build",
            t.path().join(b).to_str().unwrap(),
            "--out",
            t.path().join(out).to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
            "-q",
        ]);
        assert!(o.status.success(), "{b}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let a = sha256(&t.path().join("out-a/x.tar"));
    let b = sha256(&t.path().join("out-b/x.tar"));
    assert_eq!(a, b, "the tar alone differs from the tar beside an OCI layout");
    // and GNU tar agrees on the contents
    let l = Command::new("tar").args(["-tvf", t.path().join("out-a/x.tar").to_str().unwrap()]).output().unwrap();
    assert!(l.status.success() && l.stderr.is_empty(), "{}", String::from_utf8_lossy(&l.stderr));
    let listing = String::from_utf8_lossy(&l.stdout);
    assert!(listing.contains("usr/bin/small-link link to usr/bin/small"), "{listing}");
    assert!(listing.contains(&"f".repeat(50)), "{listing}");
}
