//! `[output.eif]`: AWS Nitro Enclave images. DESIGN §7's test vector pinned; PCRs and CRC of
//! built EIFs recomputed by an independent reader (Python's hashlib and zlib over the
//! sections, found through the header's own table); the kernel and ramdisks taken out of the
//! EIF and booted in QEMU (both ramdisk layouts); byte-reproducible across host settings,
//! signed or not; PCR8 against `openssl x509 -outform DER`; the ECDSA signature checked with
//! `openssl dgst -verify`; and the bad inputs (not a bzImage, oversize cmdline, damaged or
//! truncated EIF) refused with a clear message and the right exit code.
//!
//! The kernel is Debian's cloud kernel in an OCI image (`/bzImage`, `/linux.config`), as in
//! tests/boot.rs; QEMU cannot run an EIF itself, so the boot tests boot its sections.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const MARKER: &str = "stagebox-eif: 42 ok";
const INIT: &str = "#!/bin/sh\n/bin/busybox mkdir -p /proc\n/bin/busybox mount -t proc proc /proc\necho \"cmdline: $(/bin/busybox cat /proc/cmdline)\"\necho \"stagebox-eif: $((6 * 7)) ok\"\n/bin/busybox poweroff -f\n";
/// The nitro-cli layout's bootstrap init for the boot test: runs from rd0, reads rd1's `cmd`.
const BOOTSTRAP: &str = "#!/rootfs/bin/busybox sh\nB=/rootfs/bin/busybox\n$B echo \"cmd: $($B cat /cmd | $B tr '\\n' ' ')\"\n$B echo \"env: $($B cat /env | $B tr '\\n' ' ')\"\n$B echo \"stagebox-eif: $((6 * 7)) ok\"\n$B poweroff -f\n";

struct Fixture {
    dir: PathBuf,
    kernel: String,
    /// An image whose /bzImage is not a bzImage.
    bad_kernel: String,
    cache: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        require_tools(&["qemu-system-x86_64", "umoci", "dpkg-deb", "python3", "openssl"]);
        let dir = fixture_dir("eif");
        let layout = dir.join("kernel");
        let klayer = cloud_kernel_layer(&dir.join("deb"));
        let digest = umoci_image(&layout, "debian-cloud", &[("kernel".into(), klayer)]);
        let bad = layer(&[Entry::file("bzImage", vec![0x5a; 8192])]);
        let bad_digest = umoci_image(&layout, "not-a-kernel", &[("bad".into(), bad)]);
        Fixture {
            kernel: format!("oci:{}@{digest}", layout.display()),
            bad_kernel: format!("oci:{}@{bad_digest}", layout.display()),
            cache: dir.join("cache"),
            dir,
        }
    })
}

/// A box dir `name/` with a busybox rootfs, `/init` and `/bootstrap-init`; `kernel_toml` and
/// `eif_toml` are the bodies of `[kernel]` and `[output.eif]` (`{kernel}` is replaced).
fn make_box(name: &str, kernel_toml: &str, eif_toml: &str) -> PathBuf {
    let f = fixture();
    let d = f.dir.join(name);
    let rootfs = d.join("rootfs");
    if !rootfs.exists() {
        write(&rootfs.join("bin/busybox"), busybox());
        write(&rootfs.join("init"), INIT);
        write(&rootfs.join("sbin/bootstrap-init"), BOOTSTRAP);
        use std::os::unix::fs::PermissionsExt;
        for p in ["bin/busybox", "init", "sbin/bootstrap-init"] {
            std::fs::set_permissions(rootfs.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
        std::fs::create_dir_all(rootfs.join("proc")).unwrap();
    }
    let box_file = d.join(format!("{name}.toml"));
    let kernel_toml = kernel_toml.replace("{kernel}", &f.kernel).replace("{bad_kernel}", &f.bad_kernel);
    write(&box_file, format!("name = \"{name}\"\nversion = \"1.2\"\n[[layer]]\ndir = \"rootfs\"\n\n[kernel]\n{kernel_toml}\n\n[output.eif]\n{eif_toml}\n"));
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

/// The independent reader: Python walks the header's section table (big-endian, 548-byte
/// header, 12-byte section headers), recomputes the CRC32 with zlib and the PCRs with hashlib,
/// and writes each section's data to `DIR/section-N-TYPE`. Prints JSON.
const PY_READER: &str = r#"
import hashlib, json, struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
out = sys.argv[2]
magic, version, flags, mem, cpus, _res, n = struct.unpack('>4sHHQQHH', data[:28])
offs = struct.unpack('>32Q', data[28:284]); sizes = struct.unpack('>32Q', data[284:540])
crc_stored = struct.unpack('>I', data[544:548])[0]
crc = zlib.crc32(data[:544])
names = {1: 'kernel', 2: 'cmdline', 3: 'ramdisk', 4: 'signature', 5: 'metadata'}
secs = []
for i in range(n):
    o = offs[i]
    t, f, s = struct.unpack('>HHQ', data[o:o + 12])
    assert s == sizes[i], (i, s, sizes[i])
    crc = zlib.crc32(data[o:o + 12 + s], crc)
    secs.append((names[t], data[o + 12:o + 12 + s]))
    open('%s/section-%d-%s' % (out, i, names[t]), 'wb').write(data[o + 12:o + 12 + s])
assert offs[n - 1] + 12 + sizes[n - 1] == len(data), 'the table does not cover the file'
def ext(d):
    return hashlib.sha384(b'\0' * 48 + hashlib.sha384(d).digest()).hexdigest()
rds = [d for t, d in secs if t == 'ramdisk']
k = b''.join(d for t, d in secs if t == 'kernel'); c = b''.join(d for t, d in secs if t == 'cmdline')
print(json.dumps({'magic': magic.decode(), 'version': version, 'flags': flags, 'mem': mem, 'cpus': cpus,
  'crc_ok': crc == crc_stored, 'types': [t for t, _ in secs],
  'PCR0': ext(k + c + b''.join(rds)), 'PCR1': ext(k + c + rds[0]), 'PCR2': ext(b''.join(rds[1:])),
  'cmdline': c.decode()}))
"#;

fn py_read(eif: &Path, dir: &Path) -> serde_json::Value {
    std::fs::create_dir_all(dir).unwrap();
    let o = run(Command::new("python3").arg("-c").arg(PY_READER).arg(eif).arg(dir));
    serde_json::from_slice(&o.stdout).unwrap()
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
