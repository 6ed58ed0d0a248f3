//! dm-verity (`emit::verity`, `verity = true`) checked by cryptsetup's `veritysetup`
//! (Debian `cryptsetup-bin`): `veritysetup format` with our salt and UUID writes the same hash
//! device bytes; `veritysetup verify DATA HASH ROOT` accepts ours and refuses it after one data
//! byte changes.

use crate::common;

use common::fixture::*;
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

fn fixture() -> &'static ImageFixture {
    static F: std::sync::OnceLock<ImageFixture> = std::sync::OnceLock::new();
    F.get_or_init(|| pallet_fixture("verity", &["umoci", "veritysetup"]))
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
        // `inspect` of the standalone image names the root hash its manifest records.
        let o = output(&mut stagebox(["inspect".as_ref(), img.as_os_str()]));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && text.contains(&format!("dm-verity root hash {root}")), "{ext}: {text}");

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

/// Kernel (Debian's cloud kernel), systemd-boot and GRUB images for disk boxes.
fn disk_fixture() -> &'static DiskImages {
    static F: std::sync::OnceLock<DiskImages> = std::sync::OnceLock::new();
    F.get_or_init(|| disk_images("verity-disk", &["umoci", "sgdisk", "mtype", "veritysetup"]))
}

/// A disk box of busybox in a fresh directory, booted by `def` (`kernels/DEF.toml`) from
/// `image`, with `extra` in `[output.disk]` and `more` after it.
pub fn disk_box(name: &str, def: &str, image: &str, extra: &str, more: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let f = disk_fixture();
    let d = tempdir();
    let root = d.path().join("rootfs");
    write(&root.join("usr/bin/busybox"), busybox());
    write(&root.join("etc/marker"), "verity-root");
    copy_definitions(d.path(), &[def]);
    let p = d.path().join(format!("{name}.toml"));
    write(
        &p,
        format!(
            "name = \"{name}\"\n[[layer]]\ndir = \"rootfs\"\n[kernel]\nimage = \"{}\"\ncmdline = \"console=ttyS0 panic=-1\"\n[output.disk]\nbootloader = {{ definition = \"kernels/{def}.toml\", image = \"{image}\" }}\n{extra}{more}",
            f.kernel
        ),
    );
    (d, p)
}

/// `sgdisk -i N IMG`: (type GUID line, unique GUID, first sector, last sector).
fn partition(img: &Path, n: u32) -> (String, String, u64, u64) {
    let o = run(Command::new("sgdisk").arg("-i").arg(n.to_string()).arg(img));
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    let field = |k: &str| s.lines().find_map(|l| l.strip_prefix(k)).unwrap_or_else(|| panic!("no {k}: {s}")).trim().to_string();
    let sector = |k: &str| field(k).split_whitespace().next().unwrap().parse().unwrap();
    (field("Partition GUID code: "), field("Partition unique GUID: "), sector("First sector: "), sector("Last sector: "))
}

/// `verity = true` on `[output.disk]`: the hash tree in a third GPT partition of the
/// Discoverable Partitions root-verity type (x86-64), partition UUIDs from the root hash
/// (first half: root, second half: hash partition), and the loader's kernel command line names
/// the manifest's root hash (`roothash=` and `dm-mod.create=`); veritysetup verifies the root
/// partition against the hash partition. For systemd-boot and for GRUB.
#[test]
fn disk_verity_root_has_its_hash_partition_and_the_command_line_names_the_root_hash() {
    let f = disk_fixture();
    for (def, image, conf) in [("systemd-boot-debian", &f.sdboot, "::/loader/entries/stagebox.conf"), ("grub-debian", &f.grub, "::/EFI/BOOT/grub.cfg")] {
        let (d, bx) = disk_box("vd", def, image, "verity = true\n", "[output.provenance]\n");
        let out = d.path().join("out");
        build(&bx, &out, &f.cache);
        let img = out.join("vd.img");
        let o = run(Command::new("sgdisk").arg("-p").arg(&img));
        let p = String::from_utf8_lossy(&o.stdout);
        assert!(p.contains("root-verity") && p.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).count() == 3, "{p}");
        let o = run(Command::new("sgdisk").arg("-v").arg(&img));
        assert!(String::from_utf8_lossy(&o.stdout).contains("No problems found"), "{}", String::from_utf8_lossy(&o.stdout));

        let m = read_json(&out.join("manifest.json"));
        let rec = m["outputs"].as_array().unwrap().iter().find(|o| o["path"] == "vd.img").unwrap();
        let root = rec["roothash"].as_str().unwrap_or_else(|| panic!("no roothash: {m}")).to_string();
        assert_eq!(String::from_utf8(read(&out.join("vd.roothash"))).unwrap(), format!("{root}\n"));
        let st = read_json(&out.join("vd.intoto.json"));
        assert!(st["subject"].as_array().unwrap().iter().any(|s| s["name"] == "vd.img" && s["annotations"]["roothash"] == root.as_str()), "{st}");

        let uuid = |h: &str| format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]).to_uppercase();
        let (t2, g2, f2, l2) = partition(&img, 2);
        let (t3, g3, f3, l3) = partition(&img, 3);
        assert!(t2.starts_with("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"), "{t2}");
        assert!(t3.starts_with("2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5"), "{t3}");
        assert_eq!(g2, uuid(&root[..32]), "root partition UUID = first 128 bits of the root hash");
        assert_eq!(g3, uuid(&root[32..]), "verity partition UUID = last 128 bits of the root hash");

        let bytes = read(&img);
        let (data, hash) = (d.path().join("p2"), d.path().join("p3"));
        write(&data, &bytes[(f2 * 512) as usize..((l2 + 1) * 512) as usize]);
        write(&hash, &bytes[(f3 * 512) as usize..((l3 + 1) * 512) as usize]);
        assert!(verify_accepts(&data, &hash, &root), "{def}: veritysetup verify refused the root partition");

        let esp = d.path().join("esp");
        let (_, _, f1, l1) = partition(&img, 1);
        write(&esp, &bytes[(f1 * 512) as usize..((l1 + 1) * 512) as usize]);
        let o = run(Command::new("mtype").arg("-i").arg(&esp).arg(conf));
        let c = String::from_utf8_lossy(&o.stdout);
        let g2l = g2.to_lowercase();
        let g3l = g3.to_lowercase();
        assert!(c.contains(&format!("roothash={root}")) && c.contains(&format!("systemd.verity_root_data=PARTUUID={g2l}")), "{c}");
        let blocks = (l2 + 1 - f2) / 8;
        let dm = format!("dm-mod.create=\"vroot,,,ro,0 {} verity 1 PARTUUID={g2l} PARTUUID={g3l} 4096 4096 {blocks} 1 sha256 {root} ", blocks * 8);
        let dm_grub = format!("'{}", dm.replace('"', ""));
        assert!(c.contains(&dm) || c.contains(&dm_grub), "{c}");
        let tail = "root=/dev/dm-0 rootfstype=squashfs ro console=ttyS0 panic=-1";
        let tail_grub = tail.split(' ').map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" ");
        assert!(c.contains(tail) || c.contains(&tail_grub), "{c}");

        // inspect: the hash partition's superblock, the recorded root hash and PCR 4.
        let o = run(&mut stagebox(["inspect".as_ref(), img.as_os_str()]));
        let t = String::from_utf8_lossy(&o.stdout);
        assert!(t.contains("partition 3: dm-verity hash tree: format 1, sha256,") && t.contains(&format!("{blocks} data blocks of 4096 bytes")), "{t}");
        assert!(t.contains(&format!("dm-verity root hash {root}")), "{t}");
        let pcr4 = rec["tpm_pcrs"]["PCR4"].as_str().unwrap_or_else(|| panic!("no tpm_pcrs: {m}"));
        assert!(t.contains(&format!("predicted TPM PCR4 (sha256, OVMF) {pcr4}")), "{t}");
    }
}

/// `build --check` (a second build under other host settings, compared byte for byte) passes
/// for a disk with a verity root and an ISO beside it: same root hash, same hash partition,
/// same predicted PCRs.
#[test]
fn disk_verity_and_tpm_predictions_pass_build_check() {
    let f = disk_fixture();
    let bl = format!("{{ definition = \"kernels/systemd-boot-debian.toml\", image = \"{}\" }}", f.sdboot);
    let (d, bx) = disk_box("chk", "systemd-boot-debian", &f.sdboot, "verity = true\n", &format!("[output.iso]\nbootloader = [{bl}]\n"));
    let init = d.path().join("rootfs/init");
    write(&init, "#!/usr/bin/busybox sh\necho hi\n");
    use std::os::unix::fs::PermissionsExt;
    for p in [init, d.path().join("rootfs/usr/bin/busybox")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = d.path().join("out");
    let o = run(&mut stagebox(["build".as_ref(), bx.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), f.cache.as_os_str(), "--check".as_ref()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("identical byte for byte"), "{err}");
    let m = read_json(&out.join("manifest.json"));
    let outs = m["outputs"].as_array().unwrap();
    let img = outs.iter().find(|o| o["path"] == "chk.img").unwrap();
    let iso = outs.iter().find(|o| o["path"] == "chk.iso").unwrap();
    assert!(img["roothash"].is_string() && img["tpm_pcrs"]["PCR4"].is_string() && iso["tpm_pcrs"]["PCR4"].is_string(), "{m}");
    // Same loader and kernel, both loaded with LoadImage: the same PCR 4 (PCR 9 and 12 hold
    // each one's initrd and command line).
    assert_eq!(img["tpm_pcrs"]["PCR4"], iso["tpm_pcrs"]["PCR4"]);
    assert_ne!(img["tpm_pcrs"]["PCR9"], iso["tpm_pcrs"]["PCR9"]);
    for p in ["chk.roothash", "chk.tpm-pcrs", "chk.iso.tpm-pcrs"] {
        assert!(outs.iter().any(|o| o["path"] == p), "{p} missing: {m}");
    }
}
