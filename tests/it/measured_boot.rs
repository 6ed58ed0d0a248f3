//! Predicted TPM PCRs (`measure::tpm`, `NAME.tpm-pcrs`) checked against a real measured boot:
//! QEMU with OVMF (Debian's `ovmf`, built with TPM 2.0 support) and a software TPM (`swtpm
//! socket --tpm2`, attached as `-tpmdev emulator` + `tpm-crb`) boots the disk and the ISO; an
//! `/init` (busybox) prints `/sys/class/tpm/tpm0/pcr-sha256/N` and the firmware's event log,
//! and every PCR the manifest predicts (PCR 4; 8 and 9 with GRUB; 9 and 12 with systemd-boot)
//! must equal what the TPM holds. On a mismatch the test prints the event log as
//! `tpm2_eventlog` (Debian `tpm2-tools`) decodes it. Digests are also checked against `pesign -h`.

use crate::common;

use common::fixture::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;


/// What `/init` runs: PCRs and the event log (base64) on the console.
const SCRIPT: &str = "mkdir -p /sys\nmount -t sysfs sys /sys\nmkdir -p /sys/kernel/security\nmount -t securityfs none /sys/kernel/security\n\
for n in 4 7 8 9 12; do echo \"TPM-PCR$n=$(cat /sys/class/tpm/tpm0/pcr-sha256/$n)\"; done\n\
echo EVENTLOG-BEGIN\nbase64 /sys/kernel/security/tpm0/binary_bios_measurements\necho EVENTLOG-END";

/// The disk images, and the early initrd of the disks: busybox and an `/init` running [`SCRIPT`].
fn fixture() -> &'static DiskFixture {
    static F: OnceLock<DiskFixture> = OnceLock::new();
    F.get_or_init(|| disk_fixture("measured-boot", &["umoci", "qemu-system-x86_64", "swtpm", "tpm2_eventlog"], &[], SCRIPT))
}

/// A box of busybox with `/init` running [`SCRIPT`], booted by `def` from `image`, with the
/// output table `output` (`[output.disk]` or `[output.iso]` and its bootloader key).
fn measured_box(name: &str, output: &str, def: &str, image: &str) -> (tempfile::TempDir, PathBuf) {
    let f = fixture();
    let d = tempdir();
    let root = d.path().join("rootfs");
    write(&root.join("bin/busybox"), busybox());
    write(&root.join("init"), format!("#!/bin/busybox sh\nexport PATH=/bin\n/bin/busybox --install -s /bin\nmkdir -p /proc /dev\nmount -t proc proc /proc\nmount -t devtmpfs dev /dev\n{SCRIPT}\npoweroff -f\n"));
    make_executable(&root, &["init", "bin/busybox"]);
    copy_definitions(d.path(), &[def]);
    std::fs::copy(&f.early, d.path().join("early.cpio")).unwrap();
    let p = d.path().join(format!("{name}.toml"));
    let bl = format!("{{ definition = \"kernels/{def}.toml\", image = \"{image}\" }}");
    let table = if output == "disk" {
        format!("[output.disk]\nbootloader = {bl}\ninitrd = [\"early.cpio\"]\n")
    } else {
        format!("[output.iso]\nbootloader = [{bl}]\n")
    };
    write(&p, format!("name = \"{name}\"\n[[layer]]\ndir = \"rootfs\"\n[kernel]\nimage = \"{}\"\ncmdline = \"console=ttyS0 panic=-1\"\n{table}", f.kernel));
    (d, p)
}

/// Boot `img` (a disk on NVMe, or a CD) under OVMF with a fresh swtpm; the serial console.
fn tpm_boot(img: &Path, cd: bool, scratch: &Path) -> String {
    let (code, vars) = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd");
    assert!(Path::new(code).is_file(), "OVMF is not installed: {INSTALL_HINT}");
    let v = scratch.join("vars.fd");
    std::fs::copy(vars, &v).unwrap();
    let state = scratch.join("tpm");
    std::fs::create_dir_all(&state).unwrap();
    let sock = state.join("sock");
    let mut swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--terminate", "--tpmstate"])
        .arg(format!("dir={}", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sock.display()))
        .spawn()
        .unwrap_or_else(|e| panic!("swtpm: {e} ({INSTALL_HINT})"));
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut q = Command::new("timeout");
    // -nodefaults: no empty default CD drive (OVMF would try it first: an extra boot attempt
    // in PCR 4), no NIC (PXE).
    q.args(["300", "qemu-system-x86_64", "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot", "-m", "512", "-drive"])
        .arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,unit=1,file={}", v.display()))
        .arg("-chardev")
        .arg(format!("socket,id=chrtpm,path={}", sock.display()))
        .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0"]);
    if cd {
        q.arg("-drive").arg(format!("file={},media=cdrom,readonly=on,format=raw", img.display()));
    } else {
        q.arg("-drive").arg(format!("file={},if=none,id=d0,format=raw,snapshot=on", img.display())).args(["-device", "nvme,drive=d0,serial=stagebox"]);
    }
    let t = std::time::Instant::now();
    let o = output(&mut q);
    eprintln!("booted {} in {:.1}s", img.display(), t.elapsed().as_secs_f64());
    let _ = swtpm.kill();
    let _ = swtpm.wait();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The event log the guest printed, decoded by tpm2_eventlog (for failure messages).
fn event_log(console: &str, scratch: &Path) -> String {
    let Some(b64) = console.split("EVENTLOG-BEGIN").nth(1).and_then(|s| s.split("EVENTLOG-END").next()) else {
        return "(no event log on the console)".into();
    };
    let b64: String = b64.chars().filter(|c| c.is_ascii_alphanumeric() || "+/=".contains(*c)).collect();
    let p = scratch.join("eventlog.b64");
    write(&p, b64);
    let bin = scratch.join("eventlog.bin");
    run(Command::new("sh").arg("-c").arg(format!("base64 -d '{}' > '{}'", p.display(), bin.display())));
    let o = output(Command::new("tpm2_eventlog").arg(&bin));
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Build, boot with a TPM, and compare PCR 4 with the manifest's prediction and the
/// `NAME.tpm-pcrs` file.
fn check(name: &str, output_kind: &str, def: &str, image: &str) {
    let f = fixture();
    let (d, bx) = measured_box(name, output_kind, def, image);
    let out = d.path().join("out");
    build(&bx, &out, &f.cache);
    let file = if output_kind == "disk" { format!("{name}.img") } else { format!("{name}.iso") };
    let m = read_json(&out.join("manifest.json"));
    let rec = m["outputs"].as_array().unwrap().iter().find(|o| o["path"] == file.as_str()).unwrap();
    let predicted = rec["tpm_pcrs"].as_object().unwrap_or_else(|| panic!("no tpm_pcrs: {m}")).clone();
    assert!(predicted.contains_key("PCR4"), "{m}");
    let pfile = String::from_utf8(read(&out.join(format!("{name}.tpm-pcrs")))).unwrap();
    for (k, v) in &predicted {
        assert!(pfile.contains(&format!("{} {k}\n", v.as_str().unwrap())), "{pfile}");
    }
    let console = tpm_boot(&out.join(&file), output_kind == "iso", d.path());
    eprintln!("{file} ({def}): {}", console.lines().filter(|l| l.contains("TPM-PCR")).collect::<Vec<_>>().join(" "));
    for (k, v) in &predicted {
        let predicted = v.as_str().unwrap();
        let measured = console.lines().find_map(|l| l.trim().strip_prefix(&format!("TPM-{k}="))).unwrap_or_else(|| panic!("no {k} on the console:\n{console}")).trim().to_lowercase();
        assert!(
            measured == predicted,
            "{file} ({def}): {k} measured {measured}, predicted {predicted}\nevent log:\n{}\nconsole:\n{console}",
            event_log(&console, d.path())
        );
    }
}

#[test]
fn ovmf_measures_the_predicted_pcrs_booting_a_systemd_boot_disk() {
    let f = fixture();
    check("tpmdisk", "disk", "systemd-boot-debian", &f.sdboot);
}

#[test]
fn ovmf_measures_the_predicted_pcrs_booting_a_grub_disk() {
    let f = fixture();
    check("tpmgrub", "disk", "grub-debian", &f.grub);
}

#[test]
fn ovmf_measures_the_predicted_pcrs_booting_a_systemd_boot_iso_from_cd() {
    let f = fixture();
    check("tpmiso", "iso", "systemd-boot-debian", &f.sdboot);
}

#[test]
fn ovmf_measures_the_predicted_pcrs_booting_a_grub_iso_from_cd() {
    let f = fixture();
    check("tpmgiso", "iso", "grub-debian", &f.grub);
}

/// The Authenticode digests `measure::tpm` computes equal pesign's (`pesign -h`), for
/// systemd-boot, a GRUB core image stagebox builds (from the ISO's ESP), and the kernel.
#[test]
fn authenticode_digests_match_pesign() {
    require_tools(&["pesign", "dpkg-deb", "sgdisk", "mcopy"]);
    let d = tempdir();
    let sd = d.path().join("sd");
    run(Command::new("dpkg-deb").arg("-x").arg(deb("systemd-boot-efi")).arg(&sd));
    let k = d.path().join("k");
    run(Command::new("dpkg-deb").arg("-x").arg(cloud_kernel_deb()).arg(&k));
    let vmlinuz = std::fs::read_dir(k.join("boot")).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with("vmlinuz-")).unwrap();
    let mut files = vec![sd.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi"), vmlinuz];
    // A GRUB core image as stagebox assembles it: BOOTX64.EFI of a GRUB disk's ESP.
    let f = fixture();
    let (bd, bx) = measured_box("auth", "disk", "grub-debian", &f.grub);
    let out = bd.path().join("out");
    build(&bx, &out, &f.cache);
    let esp = d.path().join("esp");
    let o = run(Command::new("sgdisk").arg("-i").arg("1").arg(out.join("auth.img")));
    let s = String::from_utf8_lossy(&o.stdout);
    let sector = |k: &str| -> usize { s.lines().find_map(|l| l.strip_prefix(k)).unwrap().split_whitespace().next().unwrap().parse().unwrap() };
    let img = read(&out.join("auth.img"));
    write(&esp, &img[sector("First sector: ") * 512..(sector("Last sector: ") + 1) * 512]);
    let grub = d.path().join("grubx64.efi");
    run(Command::new("mcopy").arg("-i").arg(&esp).arg("::/EFI/BOOT/BOOTX64.EFI").arg(&grub));
    files.push(grub);
    for p in files {
        let o = run(Command::new("pesign").arg("-h").arg("-i").arg(&p));
        let theirs = String::from_utf8_lossy(&o.stdout).trim().strip_prefix("hash: ").unwrap_or_else(|| panic!("{o:?}")).to_string();
        let ours = hex::encode(stagebox::measure::tpm::authenticode_sha256(&read(&p)).unwrap());
        assert_eq!(ours, theirs, "{}", p.display());
    }
}
