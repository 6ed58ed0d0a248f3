//! dm-verity (`emit::verity`, `verity = true`) checked by cryptsetup's `veritysetup`
//! (Debian `cryptsetup-bin`): `veritysetup format` with our salt and UUID writes the same hash
//! device bytes; `veritysetup verify DATA HASH ROOT` accepts ours and refuses it after one data
//! byte changes.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use stagebox::emit::verity;

/// `veritysetup format` of `data` with `v`'s salt and UUID into a fresh file: its bytes and
/// the root hash it prints.
fn oracle(data: &Path, v: &verity::Verity, scratch: &Path) -> (Vec<u8>, String) {
    let hash = scratch.join("oracle.hash");
    std::fs::write(&hash, b"").unwrap();
    let o = run(Command::new("veritysetup")
        .arg("format")
        .arg(format!("--salt={}", hex::encode(v.salt)))
        .arg(format!("--uuid={}", verity::format::uuid_text(&v.uuid)))
        .arg(data)
        .arg(&hash));
    let s = String::from_utf8_lossy(&o.stdout);
    let root = s.lines().find_map(|l| l.strip_prefix("Root hash:")).unwrap_or_else(|| panic!("{s}")).trim().to_string();
    (read(&hash), root)
}

/// `veritysetup verify DATA HASH ROOT`: whether it accepts.
pub fn verify_accepts(data: &Path, hash: &Path, root: &str) -> bool {
    require_tool("veritysetup");
    output(Command::new("veritysetup").arg("verify").arg(data).arg(hash).arg(root)).status.success()
}

#[test]
fn veritysetup_format_writes_the_same_hash_device_and_verify_accepts_it() {
    require_tool("veritysetup");
    let d = tempdir();
    // One block (no levels: the root is the block's digest), one level, two levels, three.
    for blocks in [1u64, 2, 128, 129, 300, 128 * 128 + 1] {
        let data: Vec<u8> = (0..blocks * 4096).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let dp = d.path().join("data");
        write(&dp, &data);
        let (salt, uuid) = verity::derive_salt_uuid(sha256_hex(&data).as_bytes());
        let mut ours = Vec::new();
        let v = verity::write(&data[..], data.len() as u64, salt, uuid, &mut ours).unwrap();
        assert_eq!(v.hash_len, ours.len() as u64);
        let (theirs, root) = oracle(&dp, &v, d.path());
        assert_eq!(root, v.root_hex(), "{blocks} blocks: root hash");
        assert!(ours == theirs, "{blocks} blocks: hash device differs from veritysetup's ({} / {} bytes)", ours.len(), theirs.len());
        let hp = d.path().join("ours.hash");
        write(&hp, &ours);
        assert!(verify_accepts(&dp, &hp, &v.root_hex()), "{blocks} blocks: veritysetup verify refused ours");
        let mut bad = data.clone();
        let at = bad.len() / 2 + 7;
        bad[at] ^= 1;
        write(&dp, &bad);
        assert!(!verify_accepts(&dp, &hp, &v.root_hex()), "{blocks} blocks: verify accepted a changed byte");
    }
}

struct Fixture {
    image: String,
    cache: std::path::PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        require_tools(&["umoci", "veritysetup"]);
        let (image, dir) = pallet_image("verity");
        Fixture { image, cache: dir.join("cache") }
    })
}

/// `verity = true` on `[output.squashfs]` and `[output.erofs]`: the image is the one built
/// without it, `NAME.EXT.verity` is its hash device (veritysetup verifies it with the root
/// hash of `NAME.roothash`, and refuses it after one changed byte), and the root hash is in the
/// manifest and annotates the image's subject in the provenance statement.
#[test]
fn squashfs_and_erofs_get_a_hash_device_and_root_hash_beside_them() {
    let f = fixture();
    for ext in ["squashfs", "erofs"] {
        let (d, bx) = image_box(&f.image, "v", &format!("[output.{ext}]\nverity = true\n[output.provenance]\n"));
        let out = d.path().join("out");
        build(&bx, &out, &f.cache);
        let (d2, bx2) = image_box(&f.image, "v", &format!("[output.{ext}]\n"));
        let plain = d2.path().join("out");
        build(&bx2, &plain, &f.cache);
        let img = out.join(format!("v.{ext}"));
        assert_eq!(sha256_file(&img), sha256_file(&plain.join(format!("v.{ext}"))), "{ext}: verity changed the image");

        let root = String::from_utf8(read(&out.join("v.roothash"))).unwrap();
        assert!(root.ends_with('\n') && root.trim().len() == 64, "{root:?}");
        let root = root.trim();
        let hash = out.join(format!("v.{ext}.verity"));
        assert!(verify_accepts(&img, &hash, root), "{ext}: veritysetup verify refused it");
        let o = run(Command::new("veritysetup").arg("dump").arg(&hash));
        let dump = String::from_utf8_lossy(&o.stdout);
        assert!(dump.contains("Hash type:       \t1") && dump.contains("sha256") && dump.contains("Data block size: \t4096"), "{dump}");

        let m = read_json(&out.join("manifest.json"));
        let rec = m["outputs"].as_array().unwrap().iter().find(|o| o["path"] == format!("v.{ext}")).unwrap();
        assert_eq!(rec["roothash"], root, "{m}");
        for p in [format!("v.{ext}.verity"), "v.roothash".to_string()] {
            assert!(m["outputs"].as_array().unwrap().iter().any(|o| o["path"] == p.as_str()), "{p} not in the manifest: {m}");
        }
        let st = read_json(&out.join("v.intoto.json"));
        let subj = st["subject"].as_array().unwrap().iter().find(|s| s["name"] == format!("v.{ext}")).unwrap();
        assert_eq!(subj["annotations"]["roothash"], root, "{st}");

        let mut bad = read(&img);
        bad[4096 + 100] ^= 0x40;
        let bp = d.path().join("bad");
        write(&bp, &bad);
        assert!(!verify_accepts(&bp, &hash, root), "{ext}: verify accepted a changed byte");
    }
}

/// `verity = true` where there is no block image, or on two outputs: box-file errors with
/// file:line:column, nothing written.
#[test]
fn verity_without_a_block_image_is_a_box_file_error() {
    let f = fixture();
    for (extra, want) in [
        ("[output.tar]\nverity = true\n", "applies to outputs that are block images"),
        ("[output.initramfs]\nverity = true\n", "applies to outputs that are block images"),
        ("[output.squashfs]\nverity = true\n[output.erofs]\nverity = true\n", "more than one output"),
    ] {
        let (d, bx) = image_box(&f.image, "bad", extra);
        let o = output(&mut stagebox(["build".as_ref(), bx.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "-q".as_ref()]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err}");
        let line = bx.display().to_string() + ":";
        let at = err.find(&line).unwrap_or_else(|| panic!("no file:line:column: {err}"));
        let rest: Vec<&str> = err[at + line.len()..].splitn(3, ':').collect();
        assert!(rest.len() == 3 && rest[0].parse::<u32>().is_ok() && rest[1].parse::<u32>().is_ok(), "no line:column: {err}");
        assert!(!d.path().join("out").exists(), "something was written");
    }
}
