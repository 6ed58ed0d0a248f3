//! `[output.eif]`: AWS Nitro Enclave images. DESIGN §7's test vector pinned; PCRs and CRC of
//! built EIFs recomputed by an independent reader (Python's hashlib and zlib over the
//! sections, found through the header's own table); the kernel and ramdisks taken out of the
//! EIF and booted in QEMU (both ramdisk layouts); byte-reproducible across host settings,
//! signed or not; PCR8 against `openssl x509 -outform DER`; the ECDSA signature checked with
//! `openssl dgst -verify`; and the bad inputs (not a bzImage, oversize cmdline, damaged or
//! truncated EIF) refused with a clear message and the right exit code.
//!
//! The kernel is Debian's cloud kernel in an OCI image (`/bzImage`, `/linux.config`), as in
//! tests/it/boot.rs; QEMU cannot run an EIF itself, so the boot tests boot its sections.

use crate::common;

use common::eif_reader::py_read;
use common::fixture::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const MARKER: &str = "stagebox-eif: 42 ok";
const INIT: &str = "#!/bin/sh\n/bin/busybox mkdir -p /proc\n/bin/busybox mount -t proc proc /proc\necho \"cmdline: $(/bin/busybox cat /proc/cmdline)\"\necho \"stagebox-eif: $((6 * 7)) ok\"\n/bin/busybox poweroff -f\n";
/// The nitro-cli layout's bootstrap init for the boot test: runs from rd0, reads rd1's `cmd`.
const BOOTSTRAP: &str = "#!/rootfs/bin/busybox sh\nB=/rootfs/bin/busybox\n$B echo \"cmd: $($B cat /cmd | $B tr '\\n' ' ')\"\n$B echo \"env: $($B cat /env | $B tr '\\n' ' ')\"\n$B echo \"stagebox-eif: $((6 * 7)) ok\"\n$B poweroff -f\n";

/// Everything the kernel gate wants, built in (what StageX's nitro.config sets).
const NITRO_CONFIG: &str = "CONFIG_CC_IS_GCC=y\nCONFIG_BLK_DEV_INITRD=y\nCONFIG_VSOCKETS=y\nCONFIG_VIRTIO_VSOCKETS=y\nCONFIG_VIRTIO_MMIO=y\nCONFIG_SERIAL_8250_CONSOLE=y\nCONFIG_DEVTMPFS=y\nCONFIG_NSM=y\n";

struct Fixture {
    dir: PathBuf,
    kernel: String,
    /// An image whose /bzImage is not a bzImage.
    bad_kernel: String,
    /// Debian's bzImage with a config that has everything an enclave needs built in.
    nitro_config_kernel: String,
    /// The same, but the config says clang and LLD built it.
    clang_config_kernel: String,
    cache: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        require_tools(&["qemu-system-x86_64", "umoci", "dpkg-deb", "python3", "openssl"]);
        let dir = fixture_dir("eif");
        let kernel = cloud_kernel_image(&dir);
        let layout = dir.join("kernel");
        let bad = layer(&[Entry::file("bzImage", vec![0x5a; 8192])]);
        let vmlinuz = std::fs::read_dir(dir.join("deb/boot")).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with("vmlinuz-")).unwrap();
        let with_config = |tag: &str, config: &str| {
            let l = layer(&[Entry::file("bzImage", read(&vmlinuz)), Entry::file("linux.config", config)]);
            oci_image(&layout, tag, &[("kernel".into(), l)])
        };
        Fixture {
            kernel,
            bad_kernel: oci_image(&layout, "not-a-kernel", &[("bad".into(), bad)]),
            nitro_config_kernel: with_config("nitro-config", NITRO_CONFIG),
            clang_config_kernel: with_config("clang-config", &format!("{NITRO_CONFIG}CONFIG_CC_IS_CLANG=y\nCONFIG_LD_IS_LLD=y\n")),
            cache: dir.join("cache"),
            dir,
        }
    })
}

/// A box dir `name/` with a busybox rootfs, `/init` and `/bootstrap-init`; `kernel_toml` and
/// `eif_toml` are the bodies of `[kernel]` and `[output.eif]` (`{kernel}` is replaced).
/// Debian's kernel lacks what Nitro needs, so `kernel_checks = "warn"` is added unless
/// `eif_toml` sets it.
fn make_box(name: &str, kernel_toml: &str, eif_toml: &str) -> PathBuf {
    let d = fixture().dir.join(name);
    // A signed box builds at a SOURCE_DATE_EPOCH inside its certificate's window (made now by
    // openssl, so not valid in 1970): the certificate file's mtime, after its notBefore.
    let top = if eif_toml.contains("signing_certificate = \"cert.pem\"") {
        let (cert, _) = signing_files(&d);
        let t = std::fs::metadata(&cert).unwrap().modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        format!("source_date_epoch = {t}\n")
    } else {
        String::new()
    };
    make_box_top(name, &top, kernel_toml, eif_toml)
}

/// [`make_box`] with `top` (top-level keys) after `version`.
fn make_box_top(name: &str, top: &str, kernel_toml: &str, eif_toml: &str) -> PathBuf {
    let f = fixture();
    let d = f.dir.join(name);
    let rootfs = d.join("rootfs");
    if !rootfs.exists() {
        write(&rootfs.join("bin/busybox"), busybox());
        write(&rootfs.join("init"), INIT);
        write(&rootfs.join("sbin/bootstrap-init"), BOOTSTRAP);
        make_executable(&rootfs, &["bin/busybox", "init", "sbin/bootstrap-init"]);
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
        std::fs::create_dir_all(rootfs.join("proc")).unwrap();
    }
    let box_file = d.join(format!("{name}.toml"));
    let kernel_toml = kernel_toml
        .replace("{kernel}", &f.kernel)
        .replace("{bad_kernel}", &f.bad_kernel)
        .replace("{nitro_config_kernel}", &f.nitro_config_kernel)
        .replace("{clang_config_kernel}", &f.clang_config_kernel);
    let eif_toml = if eif_toml.contains("kernel_checks") { eif_toml.to_string() } else { format!("kernel_checks = \"warn\"\n{eif_toml}") };
    write(&box_file, format!("name = \"{name}\"\nversion = \"1.2\"\n{top}[[layer]]\ndir = \"rootfs\"\n\n[kernel]\n{kernel_toml}\n\n[output.eif]\n{eif_toml}\n"));
    box_file
}

fn std_box(name: &str, eif_toml: &str) -> PathBuf {
    make_box(name, "image = \"{kernel}\"\ncmdline = \"console=ttyS0 panic=-1\"", eif_toml)
}

fn build_eif(box_file: &Path) -> PathBuf {
    let out = box_file.parent().unwrap().join("out");
    let built = build(box_file, &out, &fixture().cache);
    let name = box_file.file_stem().unwrap().to_string_lossy().into_owned();
    let eif = out.join(format!("{name}.eif"));
    assert!(built.iter().any(|b| b.path == eif), "{built:?}");
    assert!(built.iter().any(|b| b.path == out.join(format!("{name}.pcrs"))), "{built:?}");
    eif
}

/// `stagebox build` that must fail with `code`; returns stderr.
fn build_err(box_file: &Path, code: i32) -> String {
    let out = box_file.parent().unwrap().join("out-err");
    let mut cmd = stagebox(["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), fixture().cache.as_os_str(), "-q".as_ref()]);
    let o = output(&mut cmd);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "expected exit {code}; stderr:\n{err}");
    err
}

fn inspect_json(eif: &Path) -> serde_json::Value {
    let o = run(&mut stagebox(["inspect".as_ref(), eif.as_os_str(), "--json".as_ref()]));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Boot `kernel` + `initrd` with `stagebox run --kernel --append`; returns the console.
fn boot(kernel: &Path, initrd: &Path, cmdline: &str) -> String {
    let mut cmd = stagebox(["run".as_ref(), initrd.as_os_str(), "--kernel".as_ref(), kernel.as_os_str()]);
    cmd.args(["--append", cmdline, "--expect", MARKER, "--timeout", "120"]);
    let o = run(&mut cmd);
    let console = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(console.contains(MARKER), "{console}");
    assert!(!console.contains("Initramfs unpacking failed"), "{console}");
    console
}

/// DESIGN §7's vector, through the public library API (the unit test in writer.rs pins the
/// layout; this pins what downstream code sees). Update only if intentional.
#[test]
fn design_test_vector_is_pinned() {
    use stagebox::emit::eif;
    let img = eif_test_vector();
    let mut v = Vec::new();
    let w = eif::write(&img, None, &mut v).unwrap();
    assert_eq!((v.len(), w.crc32), (875, 0x5d55e54d));
    assert_eq!(sha256_hex(&v), "889a5c9e00c5b71419056b4769db02b1990e80f1454104182e49880874ce86e1");
    let p = eif::measure(&img).unwrap();
    assert_eq!(p.to_pcrs_file(), "ea8eaacf9cf7fd4f4511a0dddfc35aa0ae8b48e0bd7cd791d983e6173efcdfe18efb5bfd3fba1cc14f5bb21b13c6f202 PCR0\n6bb7349f29c689b9e470b08093e1ed4e44276099613cdecc7b412dd73c260880844b009ab65e14def6a9a7ce0346eb3c PCR1\n5f699ae4300525c628f5c96fc521729dd6ca1a2c07cb07b69e7ae9e3fa935cfd7cc83b3e26d89201a486d9db2405c562 PCR2\n");
    // And the independent reader agrees on the vector too.
    let d = tempdir();
    let f = d.path().join("v.eif");
    write(&f, &v);
    let py = py_read(&f, &d.path().join("s"));
    assert_eq!(py["crc_ok"], true);
    assert_eq!(py["PCR0"], hex_of(&p.pcr0));
    assert_eq!(py["types"], serde_json::json!(["kernel", "cmdline", "metadata", "ramdisk", "ramdisk"]));
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn initramfs_layout_pcrs_manifest_inspect_and_boot() {
    let box_file = std_box("enclave", "");
    let eif = build_eif(&box_file);
    let out = eif.parent().unwrap();
    let d = out.join("sections");
    let py = py_read(&eif, &d);
    assert_eq!((py["magic"].as_str(), py["version"].as_u64(), py["flags"].as_u64()), (Some(".eif"), Some(4), Some(0)));
    assert_eq!((py["mem"].as_u64(), py["cpus"].as_u64()), (Some(1 << 30), Some(2)));
    assert_eq!(py["crc_ok"], true, "{py}");
    assert_eq!(py["types"], serde_json::json!(["kernel", "cmdline", "metadata", "ramdisk"]));
    assert_eq!(py["cmdline"], "console=ttyS0 panic=-1");
    // One ramdisk: PCR2 is ext of nothing.
    assert!(py["PCR2"].as_str().unwrap().starts_with("21b9efbc"));

    // manifest.json and NAME.pcrs carry the same PCRs.
    let m = read_json(&out.join("manifest.json"));
    let rec = m["outputs"].as_array().unwrap().iter().find(|r| r["format"] == "eif").unwrap().clone();
    assert_eq!(rec["path"], "enclave.eif");
    assert_eq!(rec["sha256"], sha256_file(&eif));
    for k in ["PCR0", "PCR1", "PCR2"] {
        assert_eq!(rec["pcrs"][k], py[k], "{k}");
    }
    assert!(rec["pcrs"].get("PCR8").is_none());
    assert!(m["outputs"].as_array().unwrap().iter().filter(|r| r["format"] != "eif").all(|r| r.get("pcrs").is_none()));
    let pcrs = String::from_utf8(read(&out.join("enclave.pcrs"))).unwrap();
    assert_eq!(pcrs, format!("{} PCR0\n{} PCR1\n{} PCR2\n", py["PCR0"].as_str().unwrap(), py["PCR1"].as_str().unwrap(), py["PCR2"].as_str().unwrap()));
    assert!(m["inputs"].as_array().unwrap().iter().any(|i| i["ref"].as_str().unwrap().starts_with("oci:")), "the kernel image is an input");

    // inspect: nitro-cli describe-eif's shape, our PCRs, metadata from the box and SDE.
    let j = inspect_json(&eif);
    assert_eq!(j["describe_eif"]["EifVersion"], 4);
    assert_eq!(j["describe_eif"]["CheckCRC"], true);
    assert_eq!(j["describe_eif"]["IsSigned"], false);
    assert_eq!(j["describe_eif"]["Measurements"]["HashAlgorithm"], "Sha384 { ... }");
    for k in ["PCR0", "PCR1", "PCR2"] {
        assert_eq!(j["describe_eif"]["Measurements"][k], py[k]);
    }
    assert_eq!((j["describe_eif"]["ImageName"].as_str(), j["describe_eif"]["ImageVersion"].as_str()), (Some("enclave"), Some("1.2")));
    assert_eq!(j["describe_eif"]["Metadata"]["BuildTime"], "1970-01-01T00:00:01+00:00");
    assert_eq!(j["describe_eif"]["Metadata"]["BuildTool"], "stagebox");
    let kv = j["describe_eif"]["Metadata"]["KernelVersion"].as_str().unwrap();
    assert!(kv.ends_with("-cloud-amd64"), "KernelVersion from the bzImage header: {kv}");
    assert_eq!(j["sections"].as_array().unwrap().len(), 4);
    let text = String::from_utf8(run(&mut stagebox(["inspect".as_ref(), eif.as_os_str()])).stdout).unwrap();
    assert!(text.contains("crc32 0x") && text.contains("(ok)") && text.contains(&format!("PCR0 {}", py["PCR0"].as_str().unwrap())), "{text}");

    // The ramdisk is the box's initramfs, byte for byte what [output.initramfs] would hold,
    // and the EIF's kernel + ramdisk + cmdline boot.
    let initrd = d.join("section-3-ramdisk");
    let rd = read(&initrd);
    let (entries, _) = stagebox::emit::cpio::format::parse(&rd).expect("newc");
    assert!(entries.iter().any(|e| e.name == b"init"));
    let boot_dir = out.join("boot");
    std::fs::create_dir_all(&boot_dir).unwrap();
    std::fs::copy(&initrd, boot_dir.join("rd.cpio")).unwrap();
    std::fs::copy(d.join("section-0-kernel"), boot_dir.join("bzImage")).unwrap();
    let console = boot(&boot_dir.join("bzImage"), &boot_dir.join("rd.cpio"), py["cmdline"].as_str().unwrap());
    // (`stagebox run` without a manifest starts the command line with console=ttyS0.)
    assert!(console.contains("cmdline: ") && console.contains("console=ttyS0 panic=-1"), "{console}");
}

#[test]
fn nitro_cli_layout_has_bootstrap_and_customer_ramdisks_and_boots() {
    let box_file = std_box(
        "nitro",
        "layout = \"nitro-cli\"\nbootstrap_init = \"/sbin/bootstrap-init\"\ncmd = [\"/bin/sh\", \"-c\", \"echo hi\"]\nenv = [\"A=1\", \"PATH=/bin\"]\n",
    );
    let eif = build_eif(&box_file);
    let out = eif.parent().unwrap();
    let d = out.join("sections");
    let py = py_read(&eif, &d);
    assert_eq!(py["crc_ok"], true);
    assert_eq!(py["types"], serde_json::json!(["kernel", "cmdline", "metadata", "ramdisk", "ramdisk"]));
    let rd0 = read(&d.join("section-3-ramdisk"));
    let rd1 = read(&d.join("section-4-ramdisk"));
    let names = |b: &[u8]| -> Vec<String> {
        stagebox::emit::cpio::format::parse(b).unwrap().0.iter().map(|e| String::from_utf8_lossy(e.name).into_owned()).collect()
    };
    assert_eq!(names(&rd0), ["dev", "init"], "no nsm.ko: the kernel image ships none");
    let n1 = names(&rd1);
    for want in ["cmd", "env", "rootfs", "rootfs/bin/busybox", "rootfs/dev", "rootfs/proc", "rootfs/run", "rootfs/sys", "rootfs/tmp", "rootfs/var"] {
        assert!(n1.iter().any(|n| n == want), "{want} missing from rd1: {n1:?}");
    }
    let mut sorted = n1.clone();
    sorted.sort();
    assert_eq!(n1, sorted, "bytewise order");
    let (e1, _) = stagebox::emit::cpio::format::parse(&rd1).unwrap();
    let file = |n: &str| e1.iter().find(|e| e.name == n.as_bytes()).unwrap().data.to_vec();
    assert_eq!(file("cmd"), b"/bin/sh\n-c\necho hi\n");
    assert_eq!(file("env"), b"A=1\nPATH=/bin\n");
    // GNU cpio reads both.
    for rd in ["section-3-ramdisk", "section-4-ramdisk"] {
        run(Command::new("cpio").args(["-it", "-F"]).arg(d.join(rd)));
    }
    // PCR1 covers the bootstrap ramdisk, PCR2 the customer's.
    let m = read_json(&out.join("manifest.json"));
    let rec = m["outputs"].as_array().unwrap().iter().find(|r| r["format"] == "eif").unwrap().clone();
    assert_eq!((rec["pcrs"]["PCR1"].clone(), rec["pcrs"]["PCR2"].clone()), (py["PCR1"].clone(), py["PCR2"].clone()));

    // Boot: the kernel unpacks rd0 then rd1 into one rootfs and runs rd0's init.
    let boot_dir = out.join("boot");
    std::fs::create_dir_all(&boot_dir).unwrap();
    write(&boot_dir.join("rd.cpio"), [rd0, rd1].concat());
    std::fs::copy(d.join("section-0-kernel"), boot_dir.join("bzImage")).unwrap();
    let console = boot(&boot_dir.join("bzImage"), &boot_dir.join("rd.cpio"), py["cmdline"].as_str().unwrap());
    assert!(console.contains("cmd: /bin/sh -c echo hi"), "{console}");
    assert!(console.contains("env: A=1 PATH=/bin"), "{console}");
}

/// Build under a umask, TZ, locale, cwd and thread count; returns (eif sha256, pcrs text).
fn build_with_env(box_file: &Path, out: &Path, umask: &str, tz: &str, lang: &str, cwd: &Path, threads: &str) -> (String, String) {
    let script = format!("umask {umask} && exec \"$0\" build \"$1\" --out \"$2\" --cache \"$3\" --threads {threads} -q");
    run(Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(stagebox_bin())
        .arg(box_file)
        .arg(out)
        .arg(&fixture().cache)
        .current_dir(cwd)
        .env("TZ", tz)
        .env("LANG", lang)
        .env("LC_ALL", lang)
        .env_remove("SOURCE_DATE_EPOCH"));
    let name = box_file.file_stem().unwrap().to_string_lossy().into_owned();
    (sha256_file(&out.join(format!("{name}.eif"))), String::from_utf8(read(&out.join(format!("{name}.pcrs")))).unwrap())
}

/// A P-384 key and a self-signed certificate for it, made by openssl.
fn signing_files(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    if !cert.exists() {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("openssl").args(["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out"]).arg(&key));
        run(Command::new("openssl")
            .args(["req", "-new", "-x509", "-sha384", "-days", "365", "-subj", "/CN=stagebox test/O=stagebox", "-key"])
            .arg(&key)
            .arg("-out")
            .arg(&cert));
    }
    (cert, key)
}

#[test]
fn reproducible_across_host_settings_signed_and_unsigned() {
    for (name, eif_toml) in [
        ("repro", String::new()),
        ("repro-signed", "signing_certificate = \"cert.pem\"\nsigning_key = \"key.pem\"\n".to_string()),
    ] {
        let box_file = std_box(name, &eif_toml);
        signing_files(box_file.parent().unwrap());
        let d = tempdir();
        let cwd2 = d.path().join("elsewhere");
        std::fs::create_dir_all(&cwd2).unwrap();
        let a = build_with_env(&box_file, &d.path().join("a"), "022", "UTC", "C", d.path(), "1");
        let b = build_with_env(&box_file, &d.path().join("b"), "077", "Asia/Kolkata", "de_DE.UTF-8", &cwd2, "3");
        assert_eq!(a, b, "{name}: bytes or PCRs differ between hosts");
        assert_eq!(a.1.lines().count(), if name.ends_with("signed") { 4 } else { 3 }, "{}", a.1);
    }
}

#[test]
fn signed_eif_pcr8_is_the_certificate_and_the_signature_verifies() {
    let box_file = std_box("signed", "signing_certificate = \"cert.pem\"\nsigning_key = \"key.pem\"\n");
    let dir = box_file.parent().unwrap().to_path_buf();
    let (cert, key) = signing_files(&dir);
    let eif = build_eif(&box_file);
    let py = py_read(&eif, &dir.join("sections"));
    assert_eq!(py["crc_ok"], true);
    assert_eq!(py["types"], serde_json::json!(["kernel", "cmdline", "metadata", "ramdisk", "signature"]));
    // PCR8 = ext(DER of the certificate), the DER from openssl.
    let der = run(Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&cert)).stdout;
    let pcr8 = stagebox::measure::pcr::ext(&der);
    let m = read_json(&dir.join("out/manifest.json"));
    let rec = m["outputs"].as_array().unwrap().iter().find(|r| r["format"] == "eif").unwrap().clone();
    assert_eq!(rec["pcrs"]["PCR8"], hex_of(&pcr8));
    assert_eq!(rec["pcrs"]["PCR0"], py["PCR0"], "signing does not change PCR0");
    let j = inspect_json(&eif);
    assert_eq!(j["describe_eif"]["IsSigned"], true);
    assert_eq!(j["describe_eif"]["Measurements"]["PCR8"], hex_of(&pcr8));
    assert_eq!(j["signature"]["signature_check"], true, "{}", j["signature"]);
    assert_eq!(j["signature"]["register_value"], py["PCR0"]);

    // The COSE signature, checked by openssl: r||s → DER ECDSA-Sig-Value, over the
    // Sig_structure ["Signature1", protected, h'', payload] with SHA-384.
    let sig_section = read(&dir.join("sections/section-4-signature"));
    let info = stagebox::emit::eif::sign::parse_section(&sig_section).unwrap();
    assert_eq!(info.cert_pem, read(&cert), "the certificate is stored as the PEM file's bytes");
    use stagebox::emit::eif::sign::{decode, Value};
    let Value::Array(entries) = decode(&sig_section).unwrap() else { panic!("not an array") };
    let cose = entries[0].get("signature").unwrap().as_bytes().unwrap();
    let Value::Array(parts) = decode(&cose).unwrap() else { panic!("COSE_Sign1 is not an array") };
    let bytes = |v: &Value| v.as_bytes().unwrap();
    let (protected, payload, sig) = (bytes(&parts[0]), bytes(&parts[2]), bytes(&parts[3]));
    assert_eq!(protected, [0xa1, 0x01, 0x38, 0x22], "ES384");
    assert_eq!(sig.len(), 96);
    let tbs = stagebox::emit::eif::sign::sig_structure(&protected, &payload);
    let der_int = |x: &[u8]| {
        let x: Vec<u8> = x.iter().copied().skip_while(|b| *b == 0).collect();
        let x = if x[0] & 0x80 != 0 { [vec![0], x].concat() } else { x };
        [vec![0x02, x.len() as u8], x].concat()
    };
    let body = [der_int(&sig[..48]), der_int(&sig[48..])].concat();
    let der_sig = [vec![0x30, body.len() as u8], body].concat();
    let t = dir.join("verify");
    std::fs::create_dir_all(&t).unwrap();
    write(&t.join("tbs"), &tbs);
    write(&t.join("sig.der"), &der_sig);
    run(Command::new("openssl").args(["x509", "-pubkey", "-noout", "-out"]).arg(t.join("pub.pem")).arg("-in").arg(&cert));
    let o = run(Command::new("openssl").args(["dgst", "-sha384", "-verify"]).arg(t.join("pub.pem")).arg("-signature").arg(t.join("sig.der")).arg(t.join("tbs")));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Verified OK"));
    let _ = key;
}

/// `stagebox build` that succeeds; returns stderr.
fn build_stderr(box_file: &Path) -> String {
    let out = box_file.parent().unwrap().join("out");
    let mut cmd = stagebox(["build".as_ref(), box_file.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), fixture().cache.as_os_str()]);
    String::from_utf8_lossy(&run(&mut cmd).stderr).into_owned()
}

#[test]
fn kernel_gate_refuses_debian_cloud_kernel_naming_each_missing_option() {
    let box_file = std_box("gate-strict", "kernel_checks = \"strict\"\n");
    let err = build_err(&box_file, 2);
    assert!(err.contains("gate-strict.toml:") && err.contains("cannot run a Nitro enclave"), "{err}");
    for (option, why) in [
        ("CONFIG_VSOCKETS is a module", "heartbeat"),
        ("CONFIG_VIRTIO_VSOCKETS is a module", "transport"),
        ("CONFIG_VIRTIO_MMIO is a module", "virtio-mmio"),
        ("CONFIG_NSM is not set", "/dev/nsm"),
    ] {
        assert!(err.lines().any(|l| l.contains(option) && l.contains(why)), "{option}: {err}");
    }
    for fine in ["CONFIG_BLK_DEV_INITRD", "CONFIG_DEVTMPFS", "CONFIG_SERIAL_8250_CONSOLE"] {
        assert!(!err.contains(fine), "{fine} is built into Debian's kernel: {err}");
    }
    assert!(err.contains("kernel_checks = \"warn\""), "the way out is named: {err}");
    assert!(!box_file.parent().unwrap().join("out-err/gate-strict.eif").exists(), "nothing written");
    // The default is strict too.
    let box_file = std_box("gate-default", "kernel_checks = \"strict\"\n");
    std::fs::write(&box_file, std::fs::read_to_string(&box_file).unwrap().replace("kernel_checks = \"strict\"\n", "")).unwrap();
    assert!(build_err(&box_file, 2).contains("CONFIG_NSM is not set"));
}

#[test]
fn kernel_gate_warns_with_kernel_checks_warn() {
    let box_file = std_box("gate-warn", "kernel_checks = \"warn\"\n");
    let err = build_stderr(&box_file);
    for option in ["CONFIG_VSOCKETS", "CONFIG_VIRTIO_VSOCKETS", "CONFIG_VIRTIO_MMIO", "CONFIG_NSM"] {
        assert!(err.lines().any(|l| l.starts_with("stagebox: warning:") && l.contains(option)), "{option}: {err}");
    }
    assert!(box_file.parent().unwrap().join("out/gate-warn.eif").is_file());
}

#[test]
fn kernel_gate_passes_a_config_with_everything_built_in_and_warns_for_clang() {
    let box_file = make_box("gate-pass", "image = \"{nitro_config_kernel}\"\ncmdline = \"console=ttyS0\"", "kernel_checks = \"strict\"\n");
    let err = build_stderr(&box_file);
    assert!(!err.contains("warning"), "{err}");
    assert!(box_file.parent().unwrap().join("out/gate-pass.eif").is_file());
    let box_file = make_box("gate-clang", "image = \"{clang_config_kernel}\"\ncmdline = \"console=ttyS0\"", "kernel_checks = \"strict\"\n");
    let err = build_stderr(&box_file);
    assert!(err.contains("stagebox: warning:") && err.contains("CONFIG_CC_IS_CLANG and CONFIG_LD_IS_LLD") && err.contains("hashi PR #789"), "{err}");
}

/// `openssl req` + `openssl x509 -req -days DAYS`: a self-signed P-384 certificate in `dir`
/// (`-days -1` makes one that expired the day before it starts).
fn cert_for_days(dir: &Path, days: i32) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (key, csr, cert) = (dir.join("key.pem"), dir.join("req.csr"), dir.join("cert.pem"));
    run(Command::new("openssl").args(["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out"]).arg(&key));
    run(Command::new("openssl").args(["req", "-new", "-subj", "/CN=stagebox test/O=stagebox", "-key"]).arg(&key).arg("-out").arg(&csr));
    run(Command::new("openssl").args(["x509", "-req", "-sha384", "-days", &days.to_string(), "-signkey"]).arg(&key).arg("-in").arg(&csr).arg("-out").arg(&cert));
    (cert, key)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn signing_certificate_is_checked_at_source_date_epoch_and_now() {
    const SIGNED: &str = "signing_certificate = \"cert.pem\"\nsigning_key = \"key.pem\"\n";
    let f = fixture();
    // Not yet valid at SOURCE_DATE_EPOCH (1970), valid now.
    cert_for_days(&f.dir.join("cert-early"), 365);
    let box_file = make_box_top("cert-early", "source_date_epoch = 86400\n", "image = \"{kernel}\"\ncmdline = \"console=ttyS0\"", SIGNED);
    let err = build_err(&box_file, 2);
    assert!(err.contains("cert-early.toml:") && err.contains("not yet valid at SOURCE_DATE_EPOCH (1970-01-02 00:00:00 UTC)") && !err.contains("current time"), "{err}");
    // Expired (notAfter a day before notBefore): at SOURCE_DATE_EPOCH and now.
    cert_for_days(&f.dir.join("cert-expired"), -1);
    let box_file = make_box_top("cert-expired", &format!("source_date_epoch = {}\n", now()), "image = \"{kernel}\"\ncmdline = \"console=ttyS0\"", SIGNED);
    let err = build_err(&box_file, 2);
    assert!(err.contains("expired at SOURCE_DATE_EPOCH") && err.contains("expired at the current time") && err.contains("E59"), "{err}");
    assert!(!box_file.parent().unwrap().join("out-err/cert-expired.eif").exists());
    // Expiring within 30 days: built, with a warning.
    let (cert, _) = cert_for_days(&f.dir.join("cert-soon"), 10);
    let t = std::fs::metadata(&cert).unwrap().modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let box_file = make_box_top("cert-soon", &format!("source_date_epoch = {t}\n"), "image = \"{kernel}\"\ncmdline = \"console=ttyS0\"", SIGNED);
    let err = build_stderr(&box_file);
    assert!(err.lines().any(|l| l.starts_with("stagebox: warning: signing_certificate \"cert.pem\": signing certificate expires in ") && l.contains("days")), "{err}");
    assert!(box_file.parent().unwrap().join("out/cert-soon.eif").is_file());
}

/// `nitro-cli describe-eif`'s keys, from aws-nitro-enclaves-cli 1.5.0's
/// `src/common/json_output.rs` (`EifDescribeInfo`, `EnclaveBuildInfo`, `MetadataDescribeInfo`)
/// and aws-nitro-enclaves-image-format's `src/utils/eif_reader.rs` (`SignCertificateInfo`);
/// `Measurements` as `get_pcrs` fills it for a signed EIF.
const DESCRIBE_EIF_KEYS: &[&str] = &["EifVersion", "Measurements", "IsSigned", "SigningCertificate", "CheckCRC", "SignatureCheck", "ImageName", "ImageVersion", "Metadata"];
const DESCRIBE_EIF_UNSIGNED_KEYS: &[&str] = &["EifVersion", "Measurements", "IsSigned", "CheckCRC", "ImageName", "ImageVersion", "Metadata"];
const MEASUREMENTS_KEYS: &[&str] = &["HashAlgorithm", "PCR0", "PCR1", "PCR2", "PCR8"];
const SIGNING_CERTIFICATE_KEYS: &[&str] = &["IssuerName", "Algorithm", "NotBefore", "NotAfter", "Signature"];
const METADATA_KEYS: &[&str] = &["BuildTime", "BuildTool", "BuildToolVersion", "OperatingSystem", "KernelVersion", "DockerInfo"];

fn keys(v: &serde_json::Value) -> std::collections::BTreeSet<String> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect()
}

fn set(k: &[&str]) -> std::collections::BTreeSet<String> {
    k.iter().map(|s| s.to_string()).collect()
}

#[test]
fn inspect_json_has_describe_eif_fields_and_the_build_prints_the_memory() {
    let box_file = std_box("describe", "signing_certificate = \"cert.pem\"\nsigning_key = \"key.pem\"\n");
    let dir = box_file.parent().unwrap().to_path_buf();
    let err = build_stderr(&box_file);
    let eif = dir.join("out/describe.eif");
    let size = std::fs::metadata(&eif).unwrap().len();
    // nitro-cli's rule: 4 × the EIF's size must fit in --memory MiB.
    let mib = (4 * size).div_ceil(1 << 20);
    assert!(err.contains(&format!("describe.eif: run it with nitro-cli run-enclave --memory {mib} or more")), "{err}");
    let all = inspect_json(&eif);
    assert_eq!(all["min_memory_mib"], mib);
    // describe-eif's object, exactly its keys, under `describe_eif`.
    let j = &all["describe_eif"];
    assert_eq!(keys(j), set(DESCRIBE_EIF_KEYS), "{all}");
    assert_eq!(keys(&j["Measurements"]), set(MEASUREMENTS_KEYS));
    assert_eq!(j["Measurements"]["HashAlgorithm"], "Sha384 { ... }");
    assert_eq!(keys(&j["SigningCertificate"]), set(SIGNING_CERTIFICATE_KEYS));
    assert_eq!(keys(&j["Metadata"]), set(METADATA_KEYS), "CustomMetadata is null: flattened to nothing");
    assert!(j["EifVersion"].is_u64() && j["IsSigned"] == true && j["CheckCRC"] == true && j["SignatureCheck"] == true, "{j}");
    assert_eq!((j["ImageName"].as_str(), j["ImageVersion"].as_str()), (Some("describe"), Some("1.2")));
    assert!(j["Metadata"]["DockerInfo"].is_null());
    // The certificate as OpenSSL prints it (what nitro-cli's own OpenSSL calls give).
    let cert = dir.join("cert.pem");
    let x = |args: &[&str]| String::from_utf8(run(Command::new("openssl").arg("x509").arg("-in").arg(&cert).args(args)).stdout).unwrap();
    let c = &j["SigningCertificate"];
    assert_eq!(format!("notBefore={}\nnotAfter={}\n", c["NotBefore"].as_str().unwrap(), c["NotAfter"].as_str().unwrap()), x(&["-noout", "-startdate", "-enddate"]));
    let issuer = x(&["-noout", "-issuer", "-nameopt", "lname,sep_multiline,utf8"]);
    let issuer: serde_json::Map<String, serde_json::Value> =
        issuer.lines().skip(1).filter_map(|l| l.trim().split_once('=')).map(|(k, v)| (k.to_string(), v.into())).collect();
    assert_eq!(c["IssuerName"], serde_json::Value::Object(issuer));
    assert_eq!(c["IssuerName"]["commonName"], "stagebox test");
    let text = x(&["-noout", "-text"]);
    assert!(text.contains(&format!("Signature Algorithm: {}", c["Algorithm"].as_str().unwrap())), "{text}");
    let sig_hex: String = text.split("Signature Value:").nth(1).unwrap().split_whitespace().collect::<String>().to_uppercase();
    assert_eq!(c["Signature"].as_str().unwrap(), sig_hex);
    // Unsigned: no SigningCertificate, no SignatureCheck, as describe-eif.
    let all = inspect_json(&build_eif(&std_box("describe-unsigned", "")));
    let j = &all["describe_eif"];
    assert_eq!(keys(j), set(DESCRIBE_EIF_UNSIGNED_KEYS), "{all}");
    assert_eq!(keys(&j["Measurements"]), set(&MEASUREMENTS_KEYS[..4]));
}

#[test]
fn not_a_bzimage_is_refused() {
    let box_file = make_box("badkernel", "image = \"{bad_kernel}\"", "");
    let err = build_err(&box_file, 1);
    assert!(err.contains("HdrS") && err.contains("bzImage"), "{err}");
}

#[test]
fn oversize_cmdline_is_refused_with_the_limit() {
    let long = "x".repeat(3000);
    let box_file = make_box("longcmd", &format!("image = \"{{kernel}}\"\ncmdline = \"console=ttyS0 {long}\""), "");
    let err = build_err(&box_file, 2);
    assert!(err.contains("longcmd.toml:") && err.contains("at most") && err.contains("3014 bytes"), "{err}");
}

#[test]
fn stale_initrd_size_is_refused_and_auto_is_filled_in() {
    let box_file = make_box("initrd", "image = \"{kernel}\"\ncmdline = \"console=ttyS0 initrd=0x2000000,3228672\"", "");
    let err = build_err(&box_file, 2);
    assert!(err.contains("3228672 bytes but the ramdisks are") && err.contains("auto"), "{err}");
    let box_file = make_box("initrd", "image = \"{kernel}\"\ncmdline = \"console=ttyS0 initrd=0x2000000,auto\"", "");
    let eif = build_eif(&box_file);
    let py = py_read(&eif, &eif.parent().unwrap().join("s"));
    let rd_len = std::fs::metadata(eif.parent().unwrap().join("s/section-3-ramdisk")).unwrap().len();
    assert_eq!(py["cmdline"], format!("console=ttyS0 initrd=0x2000000,{rd_len}"));
}

#[test]
fn nitro_cli_layout_without_bootstrap_init_or_cmd_is_a_box_error() {
    let box_file = std_box("noinit", "layout = \"nitro-cli\"\ncmd = [\"/bin/sh\"]\n");
    let err = build_err(&box_file, 2);
    assert!(err.contains("bootstrap_init"), "{err}");
    let box_file = std_box("nocmd", "layout = \"nitro-cli\"\nbootstrap_init = \"/sbin/bootstrap-init\"\n");
    let err = build_err(&box_file, 2);
    assert!(err.contains("Entrypoint or Cmd"), "{err}");
}

#[test]
fn inspect_reports_damaged_and_truncated_eifs() {
    let box_file = std_box("damage", "");
    let eif = build_eif(&box_file);
    let bytes = read(&eif);
    let d = tempdir();
    let check = |name: &str, data: &[u8], want: &str| {
        let p = d.path().join(name);
        write(&p, data);
        let o = output(&mut stagebox(["inspect".as_ref(), p.as_os_str()]));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("damaged EIF") && err.contains(want), "{name}: {err}");
    };
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 100] ^= 0x40;
    check("flipped.eif", &flipped, "CRC32 mismatch");
    check("truncated.eif", &bytes[..bytes.len() - 1000], "truncated");
    check("header-only.eif", &bytes[..300], "truncated");
}

#[test]
fn empty_ramdisk_is_refused_by_the_writer() {
    use stagebox::emit::eif::{self, format, Data, Image};
    let k = vec![0u8; 4096];
    let img = Image {
        flags: 0,
        default_mem: format::DEFAULT_MEM,
        default_cpus: format::DEFAULT_CPUS,
        kernel: Data::Bytes(&k),
        cmdline: b"console=ttyS0",
        metadata: b"{}",
        ramdisks: vec![Data::Bytes(b"")],
    };
    let e = eif::write(&img, None, &mut Vec::new()).unwrap_err().to_string();
    assert!(e.contains("ramdisk 0 is empty"), "{e}");
}

/// The modules `names` and their dependencies from Debian's kernel package extracted in
/// `deb`, dependencies first (read from each `.ko`'s `depends=` modinfo string).
fn modules_in_order(deb: &Path, names: &[&str]) -> Vec<PathBuf> {
    let mut all = std::collections::BTreeMap::new();
    let mut stack = vec![deb.join("lib/modules")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = p.file_name().unwrap().to_str().and_then(|n| n.strip_suffix(".ko")) {
                all.insert(n.replace('-', "_"), p.clone());
            }
        }
    }
    fn visit(n: &str, all: &std::collections::BTreeMap<String, PathBuf>, out: &mut Vec<PathBuf>) {
        let p = all.get(n).unwrap_or_else(|| panic!("module {n} is not in Debian's kernel package"));
        if out.contains(p) {
            return;
        }
        let bytes = read(p);
        let at = bytes.windows(9).position(|w| w == b"\0depends=").unwrap_or_else(|| panic!("{}: no depends=", p.display())) + 9;
        let end = bytes[at..].iter().position(|b| *b == 0).unwrap() + at;
        for d in std::str::from_utf8(&bytes[at..end]).unwrap().split(',').filter(|d| !d.is_empty()) {
            visit(&d.replace('-', "_"), all, out);
        }
        out.push(p.clone());
    }
    let mut out = Vec::new();
    for n in names {
        visit(n, &all, &mut out);
    }
    out
}

/// A dynamically linked host binary and the libraries `ldd` names, as tree entries under `root`.
fn with_libs(root: &Path, bin: &Path, at: &str) {
    let copy = |from: &Path, to: &str| {
        let dst = root.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(from, &dst).unwrap();
    };
    copy(bin, at);
    let o = run(Command::new("ldd").arg(bin));
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        let path = l.split_whitespace().find(|w| w.starts_with('/'));
        if let Some(p) = path {
            // Both the name a binary asks for (`/lib64/ld-linux-x86-64.so.2`) and the resolved file.
            let name = l.split_whitespace().next().unwrap();
            let dst = if name.starts_with('/') { name.to_string() } else { format!("/lib/x86_64-linux-gnu/{name}") };
            copy(Path::new(p), &dst);
        }
    }
}

/// Busybox at `/bin/busybox` with its applets `names` linked beside it.
fn busybox_with(root: &Path, names: &[&str]) {
    write(&root.join("bin/busybox"), busybox());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("bin/busybox"), std::fs::Permissions::from_mode(0o755)).unwrap();
    for n in names {
        let _ = std::fs::remove_file(root.join("bin").join(n));
        std::os::unix::fs::symlink("busybox", root.join("bin").join(n)).unwrap();
    }
}

fn executable(p: &Path, text: &str) {
    write(p, text);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A process killed when dropped.
struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// QEMU with a vhost-user-vsock device on `vhost_socket` (guest memory shared with the
/// backend), serial console to `console`.
fn vsock_vm(kernel: &Path, initrd: &Path, cmdline: &str, vhost_socket: &Path, console: &Path) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    // KVM when this machine offers it (as `stagebox run` decides), else TCG.
    let kvm = stagebox::cmd::run::kvm_usable();
    let accel: &[&str] = if kvm { &["-accel", "kvm", "-cpu", "host"] } else { &["-accel", "tcg"] };
    c.args(["-machine", "q35,memory-backend=mem", "-smp", "1", "-m", "256M"])
        .args(accel)
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-chardev")
        .arg(format!("socket,id=vsock,path={}", vhost_socket.display()))
        .args(["-device", "vhost-user-vsock-pci,chardev=vsock"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", cmdline])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(console.with_extension("qemu-stderr")).unwrap());
    c
}

/// Wait until `file` contains `text` (or `timeout` seconds pass); returns its contents.
fn wait_for(file: &Path, text: &str, timeout: u64, child: &mut std::process::Child) -> String {
    let t0 = std::time::Instant::now();
    loop {
        let s = String::from_utf8_lossy(&std::fs::read(file).unwrap_or_default()).into_owned();
        if s.contains(text) || t0.elapsed().as_secs() > timeout || child.try_wait().unwrap().is_some() {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The shipped enclave init (boxes/enclave/rootfs/init, verbatim) sends Nitro's heartbeat
/// over a real vsock: two QEMU guests share one vhost-device-vsock backend, a "parent" with
/// CID 3 listening on port 9000 (socat) that records and echoes the byte, and the enclave
/// booted from the kernel, command line and ramdisk cut out of the EIF. Debian's kernel has
/// vsock and virtio as modules, so the enclave's tree lists them in /etc/enclave/modules
/// (the shipped init loads that list) and the box uses `kernel_checks = "warn"`; the EIF's
/// command line has no `pci=off` because QEMU's vsock device is a PCI one here.
#[test]
fn shipped_enclave_init_sends_the_heartbeat_over_vsock() {
    let f = fixture();
    let backend = find_in_path("vhost-device-vsock").or_else(|| {
        let home = std::env::var_os("CARGO_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
        let p = home.join("bin/vhost-device-vsock");
        p.is_file().then_some(p)
    });
    let backend = backend.unwrap_or_else(|| panic!("vhost-device-vsock is not installed: `cargo install vhost-device-vsock --locked` ({INSTALL_HINT})"));
    require_tools(&["socat", "ldd", "cpio"]);
    let socat = find_in_path("socat").unwrap();
    let modules = modules_in_order(&f.dir.join("deb"), &["vmw_vsock_virtio_transport", "virtio_pci"]);
    let applets = ["sh", "mkdir", "mount", "insmod", "od", "tr", "sleep", "cat", "dd", "poweroff"];

    // The enclave: the shipped /init, busybox, Debian's socat, the modules, an app that says
    // it ran and powers off.
    let d = f.dir.join("heartbeat");
    let _ = std::fs::remove_dir_all(&d);
    let rootfs = d.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy(manifest_dir().join("boxes/enclave/rootfs/init"), rootfs.join("init")).unwrap();
    busybox_with(&rootfs, &applets);
    with_libs(&rootfs, &socat, "/usr/bin/socat");
    let mut list = String::new();
    for m in &modules {
        let at = format!("lib/modules/enclave/{}", m.file_name().unwrap().to_string_lossy());
        std::fs::create_dir_all(rootfs.join("lib/modules/enclave")).unwrap();
        std::fs::copy(m, rootfs.join(&at)).unwrap();
        list += &format!("/{at}\n");
    }
    write(&rootfs.join("etc/enclave/modules"), list);
    executable(&rootfs.join("usr/bin/app"), "#!/bin/sh\necho \"stagebox-eif: app ran\"\npoweroff -f\n");
    let box_file = d.join("heartbeat.toml");
    write(
        &box_file,
        format!(
            "name = \"heartbeat\"\nversion = \"1\"\n[[layer]]\ndir = \"rootfs\"\n\n[kernel]\nimage = \"{}\"\ncmdline = \"console=ttyS0 panic=-1 reboot=k random.trust_cpu=on\"\n\n[output.eif]\nkernel_checks = \"warn\"\n",
            f.kernel
        ),
    );
    let eif = build_eif(&box_file);
    let sections = d.join("sections");
    let py = py_read(&eif, &sections);
    assert_eq!(py["types"], serde_json::json!(["kernel", "cmdline", "metadata", "ramdisk"]));
    let cmdline = py["cmdline"].as_str().unwrap().to_string();

    // The parent: CID 3, socat listening on port 9000, one byte read, shown, echoed.
    let parent = d.join("parent");
    busybox_with(&parent, &applets);
    with_libs(&parent, &socat, "/usr/bin/socat");
    let mut insmods = String::new();
    for m in &modules {
        let name = m.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(m, parent.join(&name)).unwrap();
        insmods += &format!("insmod /{name}\n");
    }
    executable(
        &parent.join("init"),
        &format!("#!/bin/sh\nexport PATH=/bin:/usr/bin\nmkdir -p /proc /dev\nmount -t proc proc /proc\nmount -t devtmpfs dev /dev\n{insmods}echo \"parent: listening\"\nsocat VSOCK-LISTEN:9000,reuseaddr EXEC:/echo\nwhile :; do sleep 3600; done\n"),
    );
    executable(&parent.join("echo"), "#!/bin/sh\nb=$(dd bs=1 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n')\necho \"parent: got 0x$b\" >/dev/console\nprintf \"\\\\$(printf %o 0x$b)\"\n");
    let parent_cpio = d.join("parent.cpio");
    let list = run(Command::new("sh").arg("-c").arg("find . | LC_ALL=C sort").current_dir(&parent)).stdout;
    let mut c = Command::new("cpio");
    c.args(["-o", "-H", "newc", "--quiet", "-R", "0:0"]).current_dir(&parent).stdin(std::process::Stdio::piped()).stdout(std::fs::File::create(&parent_cpio).unwrap());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&list).unwrap();
    assert!(child.wait().unwrap().success());

    // One backend, two guests in its default group.
    let sock = |n: &str| d.join(n);
    let mut b = Command::new(&backend);
    b.arg("--vm")
        .arg(format!("guest-cid=3,socket={},uds-path={}", sock("parent.vhost").display(), sock("parent.vsock").display()))
        .arg("--vm")
        .arg(format!("guest-cid=16,socket={},uds-path={}", sock("enclave.vhost").display(), sock("enclave.vsock").display()))
        .stdout(std::fs::File::create(d.join("backend.log")).unwrap())
        .stderr(std::fs::File::create(d.join("backend.err")).unwrap());
    let _backend = Killed(b.spawn().unwrap());
    let t0 = std::time::Instant::now();
    while !(sock("parent.vhost").exists() && sock("enclave.vhost").exists()) {
        assert!(t0.elapsed().as_secs() < 30, "vhost-device-vsock made no sockets: {}", String::from_utf8_lossy(&read(&d.join("backend.err"))));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let kernel = sections.join("section-0-kernel");
    let parent_log = d.join("parent.console");
    let mut p = Killed(vsock_vm(&kernel, &parent_cpio, "console=ttyS0 panic=-1 rdinit=/init", &sock("parent.vhost"), &parent_log).spawn().unwrap());
    let s = wait_for(&parent_log, "parent: listening", 120, &mut p.0);
    assert!(s.contains("parent: listening"), "the parent did not come up:\n{s}\n{}", String::from_utf8_lossy(&read(&parent_log.with_extension("qemu-stderr"))));
    std::thread::sleep(std::time::Duration::from_millis(500));

    let enclave_log = d.join("enclave.console");
    let mut e = Killed(vsock_vm(&kernel, &sections.join("section-3-ramdisk"), &cmdline, &sock("enclave.vhost"), &enclave_log).spawn().unwrap());
    let t0 = std::time::Instant::now();
    while e.0.try_wait().unwrap().is_none() && t0.elapsed().as_secs() < 180 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let enclave = String::from_utf8_lossy(&read(&enclave_log)).into_owned();
    let parent = wait_for(&parent_log, "parent: got", 5, &mut p.0);
    assert!(parent.contains("parent: got 0xb7"), "the parent did not get 0xB7 on port 9000:\n{parent}\n--- enclave:\n{enclave}");
    assert!(enclave.contains("stagebox enclave: heartbeat echoed"), "the enclave did not read the echo:\n{enclave}");
    let (hb, up, app) = (enclave.find("heartbeat echoed").unwrap(), enclave.find("stagebox enclave: up").unwrap(), enclave.find("stagebox-eif: app ran").unwrap());
    assert!(hb < up && up < app, "the heartbeat comes before the workload:\n{enclave}");
    // The rust-hello example's /init sends it with the same line, before it execs the app.
    let shipped = std::fs::read_to_string(manifest_dir().join("boxes/enclave/rootfs/init")).unwrap();
    let line = shipped.lines().find(|l| l.contains("VSOCK-CONNECT:3:9000")).unwrap();
    let hello = std::fs::read_to_string(manifest_dir().join("examples/rust-hello/rootfs/init")).unwrap();
    let at = hello.lines().position(|l| l == line).expect("rust-hello's /init sends the heartbeat as the enclave box's does");
    assert!(hello.lines().position(|l| l.starts_with("exec /usr/bin/hello")).is_some_and(|e| e > at), "{hello}");
}
