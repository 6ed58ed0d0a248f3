//! GRUB EFI core images (`stagebox::emit::grub`): byte-identical to Debian's `grub-mkimage`
//! (`grub-common`) for the same platform directory, module list, early config and prefix,
//! for x86_64-efi (Debian's `grub-efi-amd64-bin`) and arm64-efi (`grub-efi-arm64-bin:arm64`,
//! unpacked, not installed); one image's sha256 pinned; the image read back by binutils'
//! `objdump`; the image booted by OVMF in QEMU (TCG) from a FAT ESP, running a `grub.cfg`;
//! and the bad inputs (missing module, `moddep.lst` cycle or missing entry,
//! kernel of the wrong architecture or ELF class, damaged `kernel.img`) refused with an error
//! that names the module or file, never a panic.

use crate::common;

use common::*;
use stagebox::emit::grub::{self, GrubError, Input, Target};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A platform directory's contents, as the writer takes them.
struct Platform {
    dir: PathBuf,
    kernel: Vec<u8>,
    modules: BTreeMap<String, Vec<u8>>,
    moddep: String,
}

fn load(dir: &Path) -> Platform {
    let mut modules = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if let Some(name) = p.file_name().unwrap().to_str().unwrap().strip_suffix(".mod") {
            modules.insert(name.to_string(), read(&p));
        }
    }
    Platform {
        dir: dir.to_path_buf(),
        kernel: read(&dir.join("kernel.img")),
        modules,
        moddep: String::from_utf8(read(&dir.join("moddep.lst"))).unwrap(),
    }
}

/// Debian's `PKG` unpacked with `dpkg-deb -x` (nothing installed), its `/usr/lib/grub/NAME`.
fn unpack(pkg: &str, name: &str) -> Platform {
    require_tool("dpkg-deb");
    let root = fixture_dir(&format!("grub-{name}"));
    run(Command::new("dpkg-deb").arg("-x").arg(deb(pkg)).arg(&root));
    load(&root.join("usr/lib/grub").join(name))
}

fn amd64() -> &'static Platform {
    static P: OnceLock<Platform> = OnceLock::new();
    P.get_or_init(|| unpack("grub-efi-amd64-bin", "x86_64-efi"))
}

fn arm64() -> &'static Platform {
    static P: OnceLock<Platform> = OnceLock::new();
    // Needs `dpkg --add-architecture arm64` + `apt-get update` (scripts/install-test-deps.sh).
    P.get_or_init(|| unpack("grub-efi-arm64-bin:arm64", "arm64-efi"))
}

fn ours(p: &Platform, target: Target, mods: &[&str], config: Option<&[u8]>, prefix: &str) -> Result<Vec<u8>, GrubError> {
    let wanted: Vec<String> = mods.iter().map(|s| s.to_string()).collect();
    let dir = p.dir.display().to_string();
    grub::write(&Input {
        target,
        dir: &dir,
        kernel_img: &p.kernel,
        modules: &p.modules,
        moddep: &p.moddep,
        wanted: &wanted,
        config,
        prefix,
    })
}

/// `grub-mkimage -O TARGET -d DIR [-c CFG] -p PREFIX MODS...`.
fn theirs(p: &Platform, target: Target, mods: &[&str], config: Option<&[u8]>, prefix: &str) -> Vec<u8> {
    let tmp = tempdir();
    let out = tmp.path().join("core.efi");
    let mut cmd = Command::new(require_tool("grub-mkimage"));
    cmd.args(["-O", target.name(), "-d"]).arg(&p.dir).arg("-o").arg(&out);
    if let Some(c) = config {
        let cfg = tmp.path().join("early.cfg");
        write(&cfg, c);
        cmd.arg("-c").arg(&cfg);
    }
    cmd.args(["-p", prefix]).args(mods);
    run(&mut cmd);
    read(&out)
}

fn assert_identical(p: &Platform, target: Target, mods: &[&str], config: Option<&[u8]>, prefix: &str) -> Vec<u8> {
    let a = ours(p, target, mods, config, prefix).unwrap_or_else(|e| panic!("{e}"));
    let b = theirs(p, target, mods, config, prefix);
    if a != b {
        let first = a.iter().zip(&b).position(|(x, y)| x != y);
        panic!(
            "{} image for {mods:?} differs from grub-mkimage's: {} vs {} bytes, first difference at {first:?}\n--- ours\n{}--- grub-mkimage\n{}",
            target.name(),
            a.len(),
            b.len(),
            grub::debug::dump(&a),
            grub::debug::dump(&b)
        );
    }
    a
}

const MINIMAL: &[&str] = &["normal", "configfile", "linux"];
/// What an ISO/USB boot needs: partition tables, FAT + ISO 9660, finding the volume, the
/// menu, Linux, and a serial console.
const BOOT: &[&str] = &[
    "part_gpt", "part_msdos", "fat", "iso9660", "search", "search_fs_file", "configfile", "normal", "linux", "echo",
    "all_video", "serial", "terminal", "test",
];
/// An early config of odd length (its NUL padding is part of the format).
const EARLY: &[u8] = b"search --no-floppy --file --set=root /.stagebox-0123abcd\nset prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n";

#[test]
fn x86_64_minimal_is_byte_identical_to_grub_mkimage() {
    assert_identical(amd64(), Target::X86_64Efi, MINIMAL, None, "/boot/grub");
}

#[test]
fn x86_64_iso_usb_module_set_is_byte_identical_to_grub_mkimage() {
    assert_identical(amd64(), Target::X86_64Efi, BOOT, None, "/EFI/BOOT");
}

#[test]
fn x86_64_with_early_config_is_byte_identical_to_grub_mkimage() {
    let img = assert_identical(amd64(), Target::X86_64Efi, BOOT, Some(EARLY), "");
    let dump = grub::debug::dump(&img);
    assert!(dump.contains("config \"search --no-floppy"), "{dump}");
}

/// Every module of the directory at once (in name order): the whole dependency graph, in
/// grub-mkimage's order.
#[test]
fn every_module_at_once_is_byte_identical_to_grub_mkimage() {
    for (p, target) in [(amd64(), Target::X86_64Efi), (arm64(), Target::Arm64Efi)] {
        let all: Vec<&str> = p.modules.keys().map(String::as_str).collect();
        assert!(all.len() > 200, "{} modules in {}", all.len(), p.dir.display());
        assert_identical(p, target, &all, Some(EARLY), "/boot/grub");
    }
}

#[test]
fn arm64_is_byte_identical_to_grub_mkimage() {
    assert_identical(arm64(), Target::Arm64Efi, MINIMAL, None, "/boot/grub");
    assert_identical(arm64(), Target::Arm64Efi, BOOT, Some(EARLY), "/EFI/BOOT");
}

/// The minimal image's digest from Debian 12's grub-efi-amd64-bin 2.06-13+deb12u2. A change
/// means the writer changed or Debian updated the package: update if intentional (after the
/// byte-identity tests above pass).
const MINIMAL_SHA256: &str = "72a9ec30630fe5b87161fd70ec6dc9fbdf3505fb8e7da63723799f48f74ccf91";

#[test]
fn x86_64_minimal_digest_is_pinned() {
    let img = ours(amd64(), Target::X86_64Efi, MINIMAL, None, "/boot/grub").unwrap();
    assert_eq!(sha256_hex(&img), MINIMAL_SHA256, "pinned GRUB image digest changed: update if intentional");
}

#[test]
fn objdump_reads_the_image_as_an_efi_application() {
    let img = ours(amd64(), Target::X86_64Efi, BOOT, Some(EARLY), "/EFI/BOOT").unwrap();
    let tmp = tempdir();
    let f = tmp.path().join("BOOTX64.EFI");
    write(&f, &img);
    let out = run(Command::new(require_tool("objdump")).arg("-x").arg(&f));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("file format pei-x86-64"), "{text}");
    assert!(text.contains("(EFI application)"), "{text}");
    assert!(text.contains("Base Relocation Directory [.reloc]"), "{text}");
    for name in [".text", ".data", "mods", ".reloc"] {
        assert!(text.lines().any(|l| l.split_whitespace().nth(1) == Some(name)), "no section {name} in\n{text}");
    }
    // The module list in grub-mkimage's order: dependencies before the modules needing them.
    let dump = grub::debug::dump(&img);
    let order: Vec<&str> = dump.lines().filter_map(|l| l.strip_prefix("  module ")).map(|l| l.split(' ').next().unwrap()).collect();
    let expected = grub::resolve("d", &amd64().moddep, &BOOT.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    assert_eq!(order, expected, "{dump}");
    let pos = |m: &str| order.iter().position(|x| *x == m).unwrap_or_else(|| panic!("{m} not embedded: {order:?}"));
    assert!(pos("fshelp") < pos("fat") && pos("extcmd") < pos("search"), "{order:?}");
}

// ---- bad input ----

#[test]
fn a_module_missing_from_the_directory_is_named() {
    let p = amd64();
    let mut modules = p.modules.clone();
    modules.remove("fshelp"); // a dependency of fat, not asked for directly
    let wanted = vec!["fat".to_string()];
    let e = grub::write(&Input {
        target: Target::X86_64Efi,
        dir: "layer:/usr/lib/grub/x86_64-efi",
        kernel_img: &p.kernel,
        modules: &modules,
        moddep: &p.moddep,
        wanted: &wanted,
        config: None,
        prefix: "/",
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, GrubError::MissingModule { ref module, .. } if module == "fshelp"), "{msg}");
    assert!(msg.contains("layer:/usr/lib/grub/x86_64-efi") && msg.contains("fshelp.mod"), "{msg}");
}

#[test]
fn a_moddep_cycle_and_a_missing_entry_are_named() {
    let wanted = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let e = grub::resolve("d", "a: b\nb: c\nc: a\n", &wanted(&["a"])).unwrap_err();
    assert!(matches!(e, GrubError::Cycle { .. }), "{e}");
    assert!(e.to_string().contains("d/moddep.lst") && e.to_string().contains("a -> b -> c -> a"), "{e}");

    let e = grub::resolve("d", "a: b\n", &wanted(&["a"])).unwrap_err();
    assert!(matches!(e, GrubError::NotInModdep { ref module, ref needed_by, .. } if module == "b" && needed_by.as_deref() == Some("a")), "{e}");
    assert!(e.to_string().contains("no entry for module b (a dependency of a)"), "{e}");

    let e = grub::resolve("d", "a b c\n", &wanted(&["a"])).unwrap_err();
    assert!(e.to_string().starts_with("d/moddep.lst:1:"), "{e}");

    // GRUB's order: dependencies first, a line's dependencies visited last to first, each
    // module once.
    let order = grub::resolve("d", "x: a b\na: c\nb: c\nc:\ny: x c\n", &wanted(&["y", "b.mod"])).unwrap();
    assert_eq!(order, ["c", "b", "a", "x", "y"]);
}

#[test]
fn a_kernel_of_the_wrong_architecture_or_class_is_refused() {
    let e = ours(arm64(), Target::X86_64Efi, MINIMAL, None, "/").unwrap_err();
    assert!(matches!(e, GrubError::MissingModule { .. } | GrubError::WrongTarget { .. }), "{e}");
    // With the right modules but arm64's kernel.img: the kernel is named.
    let mut p = Platform { dir: amd64().dir.clone(), kernel: arm64().kernel.clone(), modules: amd64().modules.clone(), moddep: amd64().moddep.clone() };
    let e = ours(&p, Target::X86_64Efi, MINIMAL, None, "/").unwrap_err();
    assert!(matches!(e, GrubError::WrongTarget { .. }), "{e}");
    assert!(e.to_string().contains("kernel.img") && e.to_string().contains("x86_64-efi"), "{e}");
    // A 32-bit ELF (class 1).
    p.kernel = amd64().kernel.clone();
    p.kernel[4] = 1;
    let e = ours(&p, Target::X86_64Efi, MINIMAL, None, "/").unwrap_err();
    assert!(e.to_string().contains("kernel.img") && e.to_string().contains("64-bit"), "{e}");
}

#[test]
fn a_damaged_kernel_img_is_an_error_not_a_panic() {
    let p = amd64();
    let mut q = Platform { dir: p.dir.clone(), kernel: Vec::new(), modules: p.modules.clone(), moddep: p.moddep.clone() };
    let n = p.kernel.len();
    // Truncations at many lengths, including inside the section and symbol tables.
    let mut cuts: Vec<usize> = (0..64).chain((0..n).step_by(997)).collect();
    cuts.extend([n - 1, n - 64, n / 2]);
    for cut in cuts {
        q.kernel = p.kernel[..cut].to_vec();
        let e = ours(&q, Target::X86_64Efi, MINIMAL, None, "/").expect_err("truncated kernel.img accepted");
        assert!(e.to_string().contains("kernel.img"), "cut {cut}: {e}");
    }
    // Bytes overwritten with 0xff across the headers: any outcome but a panic.
    for at in (0..n.min(4096)).step_by(7) {
        q.kernel = p.kernel.clone();
        q.kernel[at] = 0xff;
        let _ = ours(&q, Target::X86_64Efi, MINIMAL, None, "/");
    }
    // The section header table, scrambled field by field.
    let shoff = u64::from_le_bytes(p.kernel[40..48].try_into().unwrap()) as usize;
    for at in (shoff..n).step_by(3) {
        q.kernel = p.kernel.clone();
        q.kernel[at] ^= 0xa5;
        let _ = ours(&q, Target::X86_64Efi, MINIMAL, None, "/");
    }
}

// ---- boot ----

/// Our image boots: OVMF starts it as `EFI/BOOT/BOOTX64.EFI` from a FAT file system made by
/// dosfstools/mtools, GRUB finds `grub.cfg` through the embedded prefix, and the config's
/// `echo` reaches the serial console before `halt` powers the machine off.
#[test]
fn ovmf_boots_the_image_and_runs_grub_cfg() {
    require_tools(&["qemu-system-x86_64", "mkfs.vfat", "mmd", "mcopy"]);
    let ovmf = Path::new("/usr/share/ovmf/OVMF.fd");
    assert!(ovmf.is_file(), "{} is missing (Debian package ovmf): {INSTALL_HINT}", ovmf.display());
    let img = ours(amd64(), Target::X86_64Efi, &["part_gpt", "part_msdos", "fat", "normal", "configfile", "echo", "halt"], None, "/EFI/BOOT").unwrap();
    let tmp = tempdir();
    let efi = tmp.path().join("BOOTX64.EFI");
    write(&efi, &img);
    // The marker is computed by GRUB, so its text is in neither the image nor the config.
    let cfg = tmp.path().join("grub.cfg");
    write(&cfg, "set n=42\necho \"stagebox-grub: ${n} ok\"\nhalt\n");
    let esp = tmp.path().join("esp.img");
    run(Command::new("mkfs.vfat").arg("-C").arg(&esp).arg("8192"));
    run(Command::new("mmd").arg("-i").arg(&esp).args(["::/EFI", "::/EFI/BOOT"]));
    run(Command::new("mcopy").arg("-i").arg(&esp).arg(&efi).arg(&cfg).arg("::/EFI/BOOT/"));

    let mut child = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35,accel=tcg", "-m", "256", "-nographic", "-no-reboot", "-bios"])
        .arg(ovmf)
        .arg("-drive")
        .arg(format!("file={},format=raw,if=ide,snapshot=on", esp.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start qemu-system-x86_64: {e} ({INSTALL_HINT})"));
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed().as_secs() > 180 {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains("stagebox-grub: 42 ok"),
        "no marker after {:.0}s:\n{console}\n--- stderr\n{}",
        start.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
}
