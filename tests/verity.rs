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
