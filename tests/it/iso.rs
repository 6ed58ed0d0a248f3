//! `[output.iso]` and `emit::iso`: the ISO 9660 image of a box, read back by independent
//! readers (isoinfo from genisoimage with Rock Ridge and with Joliet, bsdtar, xorriso, 7-Zip)
//! and compared with the `.tar` output of the same box; El Torito entries as xorriso reports
//! them; reproducibility; a pinned digest; `stagebox inspect`; hostile names.
//!
//! The fixture is the standard pallet (core-filesystem, Debian packages, the edge-case
//! layers: whiteouts, hardlinks, devices, FIFOs, long names and paths, non-ASCII names) plus
//! a layer of names ISO 9660 and Joliet cannot hold and directories 14 levels deep.

use crate::common;

use common::iso::*;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Directories deeper than ECMA-119's limit of 8 levels.
const DEEP: &str = "deep/l01/l02/l03/l04/l05/l06/l07/l08/l09/l10/l11/l12";

/// Names ISO 9660 (d-characters) and Joliet (UCS-2, 64 characters, no `* / : ; ? \`)
/// cannot hold as they are, and names that collide once mapped.
fn hostile_names() -> Vec<String> {
    vec![
        "colon:name".into(),
        "back\\slash".into(),
        "semi;1".into(),
        "star*q?".into(),
        "emoji-\u{1F600}.txt".into(),
        "Read.me".into(),
        "read.me".into(),
        "READ_ME".into(),
        "\u{e9}".repeat(100),
        format!("{}.conf", "n".repeat(100)),
        format!("{}.conf", "n".repeat(101)),
    ]
}

fn names_layer() -> Vec<u8> {
    let mut v = vec![Entry::dir("names")];
    for n in hostile_names() {
        v.push(Entry::file(&format!("names/{n}"), format!("content of {n}\n")));
    }
    let mut p = String::new();
    for c in DEEP.split('/') {
        p = if p.is_empty() { c.to_string() } else { format!("{p}/{c}") };
        v.push(Entry::dir(&p));
    }
    v.push(Entry::file(&format!("{DEEP}/leaf"), "fourteen levels down\n"));
    layer(&v)
}

struct Fixture {
    dir: PathBuf,
    /// `edge.iso` and `edge.tar` of one build.
    iso: PathBuf,
    tar: PathBuf,
    /// GNU tar's extraction of `edge.tar`.
    tar_root: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        require_tools(&["umoci", "dpkg-deb", "apt-get", "tar"]);
        let dir = fixture_dir("iso");
        let mut layers = pallet_layers();
        layers.push(("names".into(), names_layer()));
        let digest = umoci_image(&dir.join("img"), "edge", &layers);
        let image = format!("[[layer]]\nimage = \"oci:img@{digest}\"\n");
        write(&dir.join("edge.toml"), format!("name = \"edge\"\n{image}\n[output.tar]\n\n[output.iso]\nvolume_id = \"Edge ISO test\"\n"));
        // the same tree beside a gzip tar, and the ISO alone
        write(&dir.join("spill.toml"), format!("name = \"edge\"\n{image}\n[output.tar]\ncompression = \"gzip\"\n\n[output.iso]\nvolume_id = \"Edge ISO test\"\n"));
        write(&dir.join("only.toml"), format!("name = \"edge\"\n{image}\n[output.iso]\nvolume_id = \"Edge ISO test\"\n"));
        build(&dir.join("edge.toml"), &dir.join("out"), &dir.join("cache"));
        let tar_root = dir.join("tar-root");
        gnu_tar_extract(&dir.join("out/edge.tar"), &tar_root);
        Fixture { iso: dir.join("out/edge.iso"), tar: dir.join("out/edge.tar"), tar_root, dir }
    })
}

/// Entries as the listings are compared: path → (type char, mode, uid, gid, size, symlink target).
type View = BTreeMap<String, (char, u32, u32, u32, u64, Option<String>)>;

/// The tar's entries: path → (type char, mode, uid, gid, size, symlink target), hardlinks
/// resolved to their file.
fn tar_view(tar: &Path) -> View {
    let members = tar_members(&read(tar));
    let mut out = BTreeMap::new();
    for m in &members {
        use tar::EntryType as T;
        let (kind, size, link) = match m.kind {
            T::Directory => ('d', 0, None),
            T::Symlink => ('l', 0, m.link.clone()),
            T::Char => ('c', 0, None),
            T::Block => ('b', 0, None),
            T::Fifo => ('p', 0, None),
            T::Link => {
                let target = members.iter().find(|t| Some(&t.path) == m.link.as_ref()).unwrap();
                ('-', target.size, None)
            }
            _ => ('-', m.size, None),
        };
        out.insert(m.path.trim_end_matches('/').to_string(), (kind, m.mode & 0o7777, m.uid as u32, m.gid as u32, size, link));
    }
    out
}

#[test]
fn bsdtar_extracts_the_same_tree_as_the_tar() {
    let f = fixture();
    let d = tempdir();
    bsdtar_extract(&f.iso, d.path());
    let iso = without_xattrs(snapshot(d.path()));
    let tar = without_xattrs(snapshot(&f.tar_root));
    // owners, modes, types, symlink targets, contents, hardlink groups, devices, FIFOs
    assert_same_tree("bsdtar(iso)", &iso, "tar", &tar);
    assert!(iso.contains_key(&format!("{DEEP}/leaf")));
    assert!(iso.values().any(|n| n.link_group.is_some()), "the fixture has hardlinks");
}

#[test]
fn xorriso_extracts_the_same_tree_as_the_tar() {
    let f = fixture();
    let d = tempdir();
    let dest = d.path().join("x");
    let stderr = xorriso_extract(&f.iso, &dest);
    assert!(xorriso_complaints(&stderr).is_empty(), "xorriso complained:\n{stderr}");
    let iso = without_xattrs(snapshot(&dest));
    let tar = without_xattrs(snapshot(&f.tar_root));
    assert_same_tree("xorriso(iso)", &iso, "tar", &tar);
}

#[test]
fn isoinfo_rock_ridge_listing_matches_the_tar() {
    let f = fixture();
    let rr = isoinfo_listing(&f.iso, "-R");
    // isoinfo's listing drops setuid, setgid and sticky bits (the bsdtar and xorriso
    // extractions and xorriso's listing check them): compare the permission bits here
    let tar: BTreeMap<_, _> = tar_view(&f.tar)
        .into_iter()
        .map(|(p, mut v)| {
            v.1 &= 0o777;
            (p, v)
        })
        .collect();
    // isoinfo runs 7-digit uid and gid together (opt/big-ids): compare the others' owners
    let unreadable: Vec<&String> = rr.iter().filter(|(_, e)| e.uid.is_none()).map(|(p, _)| p).collect();
    assert_eq!(unreadable, ["opt/big-ids"]);
    let view: View = rr
        .iter()
        .map(|(p, e)| {
            let (uid, gid) = (e.uid.unwrap_or(tar.get(p).map_or(0, |t| t.2)), e.gid.unwrap_or(tar.get(p).map_or(0, |t| t.3)));
            let mode = e.mode & 0o777;
            (p.clone(), (e.kind, mode, uid, gid, if e.kind == '-' { e.size } else { 0 }, e.link.clone()))
        })
        .collect();
    let diff: Vec<String> = tar
        .iter()
        .filter(|(p, v)| view.get(*p) != Some(v))
        .map(|(p, v)| format!("{p}: tar {v:?}, isoinfo {:?}", view.get(p)))
        .chain(view.keys().filter(|p| !tar.contains_key(*p)).map(|p| format!("only in isoinfo: {p}")))
        .collect();
    assert!(diff.is_empty(), "isoinfo -R and the tar disagree:\n{}", diff.join("\n"));
    // hardlinks: one extent, the link count on every path (orig was replaced after both
    // links were made, so it is another file)
    let group: Vec<&IsoinfoEntry> = ["opt/hl/same-layer", "opt/hl/cross-layer"].iter().map(|p| &rr[*p]).collect();
    assert_ne!(rr["opt/hl/orig"].extent, group[0].extent, "a replaced target is another file");
    assert_eq!(group[0].extent, group[1].extent);
    assert_eq!((group[0].nlink, group[1].nlink, rr["opt/hl/orig"].nlink), (2, 2, 1));
    // a directory's link count is 2 + its subdirectories
    let subdirs = rr.keys().filter(|p| p.starts_with("opt/") && p[4..].find('/').is_none() && rr[*p].kind == 'd').count() as u32;
    assert_eq!(rr["opt"].nlink, 2 + subdirs);
}

#[test]
fn joliet_holds_every_path_with_mapped_unique_names() {
    let f = fixture();
    let j = isoinfo_listing(&f.iso, "-J");
    let tar = tar_view(&f.tar);
    assert_eq!(j.len(), tar.len(), "Joliet has one entry per tree path");
    // every Joliet name fits its limit and none repeats in a directory (the map keys are
    // unique paths, so equal counts mean no two paths collapsed into one)
    for p in j.keys() {
        let name = p.rsplit('/').next().unwrap();
        assert!(name.chars().count() <= 64, "{p}");
        assert!(!name.contains([':', ';', '*', '?', '\\']), "{p}");
    }
    let names: Vec<&str> = j.keys().filter_map(|p| p.strip_prefix("names/")).collect();
    // unique ignoring case (Windows reads Joliet case-insensitively): read.me comes after
    // Read.me in bytewise order and gets the suffix
    for want in ["colon_name", "back_slash", "semi_1", "star_q_", "emoji-_.txt", "Read.me", "read_1.me", "READ_ME"] {
        assert!(names.contains(&want), "Joliet name {want} missing from {names:?}");
    }
    let e100 = "\u{e9}".repeat(64);
    assert!(names.contains(&e100.as_str()), "a 100-character name is cut to 64: {names:?}");
    // two names that are the same once cut to 64 characters stay apart with a suffix
    let conf: Vec<&&str> = names.iter().filter(|n| n.ends_with(".conf")).collect();
    assert_eq!(conf.len(), 2, "{names:?}");
    assert!(conf.iter().any(|n| n.ends_with("_1.conf")), "{conf:?}");
    assert!(j.contains_key(&format!("{DEEP}/leaf")), "deep paths in Joliet");
    // contents are shared with the ISO 9660 tree
    let rr = isoinfo_listing(&f.iso, "-R");
    assert_eq!(j["etc/passwd"].extent, rr["etc/passwd"].extent);
}

#[test]
fn rock_ridge_keeps_names_iso_and_joliet_cannot_hold() {
    let f = fixture();
    let rr = isoinfo_listing(&f.iso, "-R");
    for n in hostile_names() {
        let p = format!("names/{n}");
        let e = rr.get(&p).unwrap_or_else(|| panic!("{p} missing from the Rock Ridge tree"));
        assert_eq!(e.size, format!("content of {n}\n").len() as u64);
    }
    // plain ISO 9660 names: d-characters, unique, ";1"
    let plain = Command::new(require_tool("isoinfo")).args(["-l", "-i"]).arg(&f.iso).output().unwrap();
    let text = String::from_utf8_lossy(&plain.stdout);
    let names_dir = text.split("Directory listing of /NAMES/").nth(1).expect("NAMES directory").split("Directory listing").next().unwrap();
    let ids: Vec<&str> = names_dir.lines().filter_map(|l| l.split_once("]  ").map(|x| x.1.trim_end())).filter(|n| *n != "." && *n != "..").collect();
    assert_eq!(ids.len(), hostile_names().len(), "{ids:?}");
    let unique: std::collections::BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "ISO names collide: {ids:?}");
    for id in &ids {
        let (name, ver) = id.split_once(';').expect("version");
        assert_eq!(ver, "1");
        assert!(name.len() <= 30 && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'.'), "{id}");
    }
    assert!(ids.contains(&"READ.ME;1") && ids.contains(&"READ_1.ME;1") && ids.contains(&"READ_ME.;1"), "{ids:?}");
}

#[test]
fn xorriso_and_7z_read_the_image() {
    let f = fixture();
    let o = run(Command::new(require_tool("xorriso")).arg("-indev").arg(&f.iso).args(["-find", "/", "-exec", "lsdl"]));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(xorriso_complaints(&stderr).is_empty(), "xorriso complained:\n{stderr}");
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(listing.contains(&format!("'/{DEEP}/leaf'")), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with("'/opt/abs' -> '/etc/passwd'")), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with("crw--w----") && l.contains("'/dev/tty1'")), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with("-rwsr-xr-x") && l.contains("'/usr/bin/suid'")), "{listing}");
    assert!(listing.contains("Volume id    : 'EDGE_ISO_TEST'") || stderr.contains("Volume id    : 'EDGE_ISO_TEST'"), "{stderr}");

    // 7-Zip reads the Joliet tree; its sizes agree with the tar's
    let z = sevenzip_listing(&f.iso);
    let tar = tar_view(&f.tar);
    assert_eq!(z.len(), tar.len(), "7z lists one item per tree path");
    assert_eq!(z.get("etc/passwd").map(|x| x.1), Some(tar["etc/passwd"].4));
    assert_eq!(z.get("opt/big.bin").map(|x| x.1), Some(2 << 20));
    assert!(z.contains_key(&format!("{DEEP}/leaf")));
    run(Command::new("7z").args(["t"]).arg(&f.iso));
}

#[test]
fn inspect_shows_volumes_and_the_rock_ridge_tree() {
    let f = fixture();
    let o = run(&mut stagebox(["inspect".as_ref(), f.iso.as_os_str()]));
    let text = String::from_utf8_lossy(&o.stdout);
    for want in ["primary  id \"EDGE_ISO_TEST\"", "joliet  id \"Edge ISO test\"", "terminator", "Rock Ridge yes", "/opt/abs -> /etc/passwd", "/dev/null [1,3]"] {
        assert!(text.contains(want), "inspect lacks {want:?}:\n{text}");
    }
    let o = run(&mut stagebox(["inspect".as_ref(), "--json".as_ref(), f.iso.as_os_str()]));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["sha256"], sha256_file(&f.iso));
    let entries = j["entries"].as_array().unwrap();
    let get = |p: &str| entries.iter().find(|e| e["path"] == p).unwrap_or_else(|| panic!("{p} not in inspect --json"));
    assert_eq!(get("/usr/bin/suid")["mode"], "4755");
    assert_eq!(get("/opt/owned")["uid"], 1000);
    assert_eq!(get("/opt/hl/cross-layer")["ino"], get("/opt/hl/same-layer")["ino"]);
    assert_ne!(get("/opt/hl/orig")["ino"], get("/opt/hl/same-layer")["ino"]);
    assert_eq!(get("/dev/loop0")["type"], "block");
    assert_eq!(entries.len(), tar_view(&f.tar).len());
}

#[test]
fn iso_is_the_same_beside_other_outputs_or_alone_and_across_hosts() {
    let f = fixture();
    let base = sha256_file(&f.iso);
    // beside a gzip tar, and the ISO alone, built under another umask, TZ, locale, thread
    // count and working directory
    for (toml, umask, tz, threads) in [("spill.toml", "077", "Asia/Kathmandu", "5"), ("only.toml", "027", "America/St_Johns", "1")] {
        let w = tempdir();
        let out = w.path().join("out");
        std::fs::create_dir_all(w.path().join("cwd")).unwrap();
        let o = run(Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$@\""))
            .arg("sh")
            .arg(stagebox_bin())
            .arg("build")
            .arg(f.dir.join(toml))
            .arg("--out")
            .arg(&out)
            .arg("--cache")
            .arg(w.path().join("cache"))
            .args(["--threads", threads, "-q"])
            .current_dir(w.path().join("cwd"))
            .env("TZ", tz)
            .env("LC_ALL", "tr_TR.UTF-8")
            .env_remove("SOURCE_DATE_EPOCH"));
        let built = parse_build_stdout(&o.stdout);
        assert_eq!(sha256_file(&out.join("edge.iso")), base, "{toml}: the ISO depends on the other outputs or the host");
        assert!(built.iter().any(|b| b.sha256 == base));
    }
    // a different SOURCE_DATE_EPOCH gives other bytes (the comparison can fail)
    let w = tempdir();
    let o = run(stagebox(["build".as_ref(), f.dir.join("only.toml").as_os_str(), "--out".as_ref(), w.path().join("o").as_os_str(), "-q".as_ref()])
        .arg("--cache")
        .arg(w.path().join("cache"))
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert!(o.status.success());
    assert_ne!(sha256_file(&w.path().join("o/edge.iso")), base);
}

/// The ISO format itself, pinned: a tiny hand-made image through the whole pipeline.
#[test]
fn iso_digest_is_pinned() {
    let w = tempdir();
    let dir = w.path();
    let layout = Layout::create(&dir.join("img"));
    let l1 = layer(&[
        Entry::dir("etc"),
        Entry::file("etc/hosts", "127.0.0.1 localhost\n").mtime(5),
        Entry::file("etc/shadow", "root:*:1::::::\n").mode(0o640).owner(0, 42),
        Entry::symlink("bin", "usr/bin"),
        Entry::dir("usr/bin"),
        Entry::file("usr/bin/tool", "#!/bin/sh\n").mode(0o4755).mtime(2_000_000_000),
        Entry::hardlink("usr/bin/tool-link", "usr/bin/tool"),
        Entry::fifo("run-fifo"),
        Entry::char_dev("dev/console", 5, 1).mode(0o600),
        Entry::file(&long_path(200, "long"), "long\n"),
        Entry::file("data/Mixed Case.name.txt", "x\n"),
    ]);
    let img = layout.image(&[(&l1, Comp::None)], "amd64");
    layout.set_index(&[(img.clone(), "pin")]);
    write(
        &dir.join("pin.toml"),
        format!("name = \"pin\"\nsource_date_epoch = 1000000000\n\n[[layer]]\nimage = \"oci:img@{}\"\n\n[output.iso]\n", digest_of(&img)),
    );
    let built = build(&dir.join("pin.toml"), &dir.join("out"), &dir.join("cache"));
    const PINNED: &str = "6254587ae578dbc7db58fe32515cf7063b3495c741834d344b809b8ee91e433b";
    assert_eq!(
        built[0].sha256, PINNED,
        "the ISO output of a fixed tree changed: every user's pinned digest would change. \
         If the change to the ISO format is intentional, update PINNED"
    );
}

/// A dummy BIOS boot file and a FAT image (mkfs.vfat), as `boot` adds them.
fn boot_files(dir: &Path) -> (PathBuf, PathBuf) {
    let bios = dir.join("isolinux.bin");
    let mut data = Vec::new();
    let mut x: u32 = 7;
    while data.len() < 5000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push(x as u8);
    }
    write(&bios, &data);
    let efi = dir.join("efi.img");
    run(Command::new(require_tool("mkfs.vfat")).args(["-C", "-i", "12345678"]).arg(&efi).arg("1440"));
    (bios, efi)
}

fn boot_options(bios: &Path, efi: &Path) -> stagebox::emit::iso::IsoOptions {
    use stagebox::emit::iso::{BootEntry, IsoFile, IsoOptions};
    IsoOptions {
        volume_id: "BOOT".into(),
        sde: 1,
        extra: vec![
            IsoFile { path: "/boot/isolinux/isolinux.bin".into(), source: bios.to_path_buf(), mode: 0o444 },
            IsoFile { path: "/boot/efi.img".into(), source: efi.to_path_buf(), mode: 0o644 },
        ],
        boot: vec![BootEntry::Bios { path: "/boot/isolinux/isolinux.bin".into() }, BootEntry::Efi { path: "/boot/efi.img".into() }],
        catalog: Some("/boot/boot.catalog".into()),
        tail_reserve: 16 * 1024,
    }
}

#[test]
fn el_torito_entries_are_what_xorriso_reports() {
    let w = tempdir();
    let (bios, efi) = boot_files(w.path());
    let tree = stagebox::tree::Tree::new(1);
    let opts = boot_options(&bios, &efi);
    let iso = w.path().join("boot.iso");
    let out = std::fs::File::options().read(true).write(true).create_new(true).open(&iso).unwrap();
    let layout = stagebox::emit::iso::write(&tree, &opts, &out).unwrap();
    drop(out);
    assert_eq!(layout.size, std::fs::metadata(&iso).unwrap().len());
    assert_eq!(layout.size % 2048, 0);
    let (bios_lba, bios_len) = layout.files["/boot/isolinux/isolinux.bin"];
    let (efi_lba, efi_len) = layout.files["/boot/efi.img"];
    let (cat_lba, _) = layout.files["/boot/boot.catalog"];
    assert_eq!((bios_len, efi_len), (5000, 1440 * 1024));
    // the tail reserve is zero and past every extent
    let img = read(&iso);
    assert!(img[(layout.size - 16 * 1024) as usize..].iter().all(|b| *b == 0));
    assert!(img[..32768].iter().all(|b| *b == 0), "the system area is the caller's");

    let (entries, report) = el_torito_report(&iso);
    assert_eq!(
        entries,
        vec![("BIOS".to_string(), 4, bios_lba as u32), ("UEFI".to_string(), (efi_len / 512) as u32, efi_lba as u32)],
        "{report}"
    );
    assert!(report.contains(&format!("El Torito catalog  : {cat_lba}")), "{report}");
    assert!(report.contains("El Torito cat path : /boot/boot.catalog"), "{report}");
    assert!(report.contains("El Torito img opts :   1  boot-info-table"), "xorriso sees the boot info table:\n{report}");
    assert!(report.contains("El Torito img path :   2  /boot/efi.img"), "{report}");

    // the boot info table, checked by hand: PVD at 16, the file's block and length, and the
    // 32-bit sum of the original file from byte 64; the rest of the file is untouched
    let orig = read(&bios);
    let at = bios_lba as usize * 2048;
    let patched = &img[at..at + 5000];
    let le = |o: usize| u32::from_le_bytes(patched[o..o + 4].try_into().unwrap());
    let sum = orig[64..].chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).fold(0u32, u32::wrapping_add);
    assert_eq!((le(8), le(12), le(16), le(20)), (16, bios_lba as u32, 5000, sum));
    assert!(patched[24..64].iter().all(|b| *b == 0));
    assert_eq!(&patched[..8], &orig[..8]);
    assert_eq!(&patched[64..], &orig[64..]);
    // the FAT image is there byte for byte, and a FAT reader finds its volume
    let fat = &img[efi_lba as usize * 2048..efi_lba as usize * 2048 + efi_len as usize];
    assert_eq!(fat, &read(&efi)[..]);
    run(Command::new(require_tool("fsck.vfat")).arg("-n").arg(&efi));
    // isoinfo sees the El Torito descriptor too, and the inspect dump lists both entries
    let d = run(Command::new(require_tool("isoinfo")).args(["-d", "-i"]).arg(&iso));
    assert!(String::from_utf8_lossy(&d.stdout).contains(&format!("El Torito VD version 1 found, boot catalog is in sector {cat_lba}")));
    let o = run(&mut stagebox(["inspect".as_ref(), iso.as_os_str()]));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("bios  bootable no emulation  load 4 sectors  at block {bios_lba}")), "{text}");
    assert!(text.contains(&format!("efi   bootable no emulation  load 2880 sectors  at block {efi_lba}")), "{text}");
}

#[test]
fn added_files_that_collide_or_lack_a_catalog_are_refused() {
    use stagebox::emit::iso::{BootEntry, IsoFile};
    let w = tempdir();
    let (bios, efi) = boot_files(w.path());
    let tree = stagebox::tree::Tree::new(1);
    let try_write = |opts: &stagebox::emit::iso::IsoOptions| {
        let p = w.path().join("x.iso");
        let _ = std::fs::remove_file(&p);
        let out = std::fs::File::create(&p).unwrap();
        stagebox::emit::iso::write(&tree, opts, &out).map(|_| ()).unwrap_err().to_string()
    };
    let mut o = boot_options(&bios, &efi);
    o.extra.push(IsoFile { path: "/boot/efi.img".into(), source: efi.clone(), mode: 0o644 });
    assert!(try_write(&o).contains("/boot/efi.img collides"), "{}", try_write(&o));
    let mut o = boot_options(&bios, &efi);
    o.extra.push(IsoFile { path: "/boot/efi.img/inner".into(), source: efi.clone(), mode: 0o644 });
    assert!(try_write(&o).contains("is an added file"), "{}", try_write(&o));
    let mut o = boot_options(&bios, &efi);
    o.catalog = None;
    assert!(try_write(&o).contains("boot catalog"), "{}", try_write(&o));
    let mut o = boot_options(&bios, &efi);
    o.boot.push(BootEntry::Efi { path: "/nope".into() });
    assert!(try_write(&o).contains("/nope is not in the ISO"), "{}", try_write(&o));
    let mut o = boot_options(&bios, &efi);
    o.extra[0].path = "boot/relative".into();
    assert!(try_write(&o).contains("must be absolute"), "{}", try_write(&o));
}

#[test]
fn inspect_reports_a_damaged_iso_instead_of_panicking() {
    let f = fixture();
    let img = read(&f.iso);
    let w = tempdir();
    let inspect = |name: &str, bytes: &[u8]| {
        let p = w.path().join(name);
        write(&p, bytes);
        let o = output(&mut stagebox(["inspect".as_ref(), p.as_os_str()]));
        assert_eq!(o.status.code(), Some(1), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // cut off after the volume descriptors: the directories are missing
    let e = inspect("cut.iso", &img[..19 * 2048]);
    assert!(e.contains("damaged ISO 9660 image") && e.contains("beyond the end"), "{e}");
    // the root directory's first record claims 5 bytes
    let root = u32::from_le_bytes(img[32768 + 158..32768 + 162].try_into().unwrap()) as usize;
    let mut bad = img.clone();
    bad[root * 2048] = 5;
    let e = inspect("badrec.iso", &bad);
    assert!(e.contains("damaged ISO 9660 image") && e.contains("bad length 5"), "{e}");
    // a subdirectory that points back at the root: a loop, not a hang
    let mut looped = img.clone();
    let dir = &img[root * 2048..root * 2048 + 2048];
    let mut pos = 0;
    let mut patched = false;
    while pos < dir.len() && dir[pos] != 0 {
        let len = dir[pos] as usize;
        if dir[pos + 25] & 2 != 0 && dir[pos + 33] > 1 {
            looped[root * 2048 + pos + 2..root * 2048 + pos + 6].copy_from_slice(&(root as u32).to_le_bytes());
            patched = true;
            break;
        }
        pos += len;
    }
    assert!(patched);
    let e = inspect("loop.iso", &looped);
    assert!(e.contains("a loop"), "{e}");
}

#[test]
fn bad_iso_tables_are_box_file_errors() {
    let w = tempdir();
    std::fs::create_dir_all(w.path().join("rootfs")).unwrap();
    write(&w.path().join("rootfs/f"), "f\n");
    for (table, want) in [
        ("[output.iso]\nvolume_id = \"\"\n", "volume_id must be 1 to 32 bytes"),
        ("[output.iso]\nvolume_id = \"a-volume-id-that-is-much-too-long-for-iso\"\n", "volume_id must be 1 to 32 bytes"),
        ("[output.iso]\nvolum_id = \"x\"\n", "unknown field `volum_id`"),
    ] {
        let b = w.path().join("b.toml");
        write(&b, format!("name = \"b\"\n[[layer]]\ndir = \"rootfs\"\n\n{table}"));
        let o = output(&mut stagebox(["build".as_ref(), b.as_os_str(), "-q".as_ref()]));
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{table}: {e}");
        assert!(e.contains(want) && e.contains("b.toml:"), "{table}: {e}");
    }
}
