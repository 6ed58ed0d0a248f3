//! Bounded fuzzing on the stable toolchain: the same target bodies as the cargo-fuzz targets
//! (`fuzz/targets.rs`), run over a seeded corpus of valid inputs mutated by a fixed-seed
//! PRNG (bit flips, interesting bytes, insertions, deletions, splices, truncations) for a
//! fixed number of iterations per target. Deterministic, so a failure reproduces; the input
//! that panicked is saved under `target/fuzz-crashes/` (feed it to the cargo-fuzz target).
//! `STAGEBOX_FUZZ_ITERS` scales the run (default 1500 per in-memory target, a fifth of that
//! for the targets that go through files). `STAGEBOX_FUZZ_SEEDS=DIR` also writes each target's
//! seeds to `DIR/<target>/` (a starting corpus for the libFuzzer targets; see fuzz/README.md).

use crate::common;
#[path = "../../fuzz/targets.rs"]
mod targets;

use std::io::Write;

/// xorshift64*: fixed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

const INTERESTING: &[u8] = &[0, 0xff, 0x7f, 0x80, b'0', b'7', b'/', b'.', b'\n', b' ', 1];

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let b = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(i..i, std::iter::repeat_n(b, n));
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                // copy a chunk of another seed over this one
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let (i, j) = (rng.below(len), rng.below(other.len()));
                    let n = (1 + rng.below(64)).min(len - i).min(other.len() - j);
                    v[i..i + n].copy_from_slice(&other[j..j + n]);
                }
            }
            5 => v.truncate(rng.below(len + 1)),
            _ if len >= 8 => {
                // an ASCII number field rewritten (tar/cpio sizes, TOML integers)
                let i = rng.below(len - 7);
                let s = format!("{:08x}", rng.next() as u32);
                v[i..i + 8].copy_from_slice(s.as_bytes());
            }
            _ => {}
        }
    }
    v
}

fn iterations(divisor: usize) -> usize {
    std::env::var("STAGEBOX_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500) / divisor
}

/// Run `target` on `iters` mutants of `corpus` (and on the seeds themselves first).
fn fuzz(name: &str, seed: u64, mut corpus: Vec<Vec<u8>>, iters: usize, target: impl Fn(&[u8], &std::path::Path)) {
    corpus.extend(crash_inputs(name));
    if let Some(dir) = std::env::var_os("STAGEBOX_FUZZ_SEEDS") {
        let dir = std::path::Path::new(&dir).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in corpus.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
    let mut rng = Rng(seed);
    let scratch = tempfile::Builder::new().prefix("fuzz-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let inputs = corpus.clone().into_iter().chain((0..iters).map(|_| mutate(&mut rng, &corpus)));
    for (n, input) in inputs.enumerate() {
        let dir = scratch.path().join(n.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input, &dir)));
        if let Err(e) = r {
            let crashes = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("fuzz-crashes");
            std::fs::create_dir_all(&crashes).unwrap();
            let f = crashes.join(format!("{name}-{n}.bin"));
            std::fs::write(&f, &input).unwrap();
            panic!("{name}: input {n} panicked (saved to {}): {:?}", f.display(), e.downcast_ref::<String>().map(|s| s.as_str()).or(e.downcast_ref::<&str>().copied()));
        }
        // Nothing written outside the input's scratch directory.
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let left: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().collect();
    assert!(left.is_empty(), "{name}: files appeared beside the scratch dirs");
}

fn tar_seed(gnu_long: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    let mut add = |b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        if gnu_long {
            b.append_data(&mut h.clone(), path, data).unwrap();
        } else {
            h.set_path(path).unwrap();
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
    };
    add(&mut b, "etc/", tar::EntryType::Directory, b"", None);
    add(&mut b, "etc/passwd", tar::EntryType::Regular, b"root:x:0:0::/:/bin/sh\n", None);
    add(&mut b, "etc/link", tar::EntryType::Link, b"", Some("etc/passwd"));
    add(&mut b, "bin", tar::EntryType::Symlink, b"", Some("usr/bin"));
    add(&mut b, "bin/sh", tar::EntryType::Regular, b"#!", None);
    add(&mut b, "etc/.wh.old", tar::EntryType::Regular, b"", None);
    add(&mut b, "opt/.wh..wh..opq", tar::EntryType::Regular, b"", None);
    if gnu_long {
        add(&mut b, &format!("opt/{}/f", "d".repeat(150)), tar::EntryType::Regular, b"x", None);
    }
    b.into_inner().unwrap()
}

#[test]
fn fuzz_layer_tar_reader() {
    let plain = tar_seed(false);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
    gz.write_all(&plain).unwrap();
    let corpus = vec![plain.clone(), tar_seed(true), gz.finish().unwrap(), zstd::encode_all(&plain[..], 1).unwrap()];
    fuzz("layer_tar", 0x5eed_0001, corpus, iterations(5), targets::layer_tar);
}

#[test]
fn fuzz_oci_index_and_manifest_parsing() {
    let d = "sha256:".to_string() + &"ab".repeat(32);
    let corpus = vec![
        format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":7,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#).into_bytes(),
        format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{d}","size":7}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":3,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}},"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#).into_bytes(),
    ];
    fuzz("oci_index", 0x5eed_0002, corpus, iterations(5), targets::oci_index);
}

#[test]
fn fuzz_box_file_parser() {
    let corpus = vec![
        b"name = \"demo\"\nversion = \"1.0\"\nsource_date_epoch = 1\n\n[[layer]]\ndir = \"rootfs\"\n\n[[layer]]\nimage = \"oci:img@sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n\n[output.tar]\ncompression = \"zstd\"\n\n[output.initramfs]\ncompression = \"gzip\"\nprepend = [\"ucode.cpio\"]\n\n[output.oci]\ntag = \"v1\"\n".to_vec(),
        b"name = \"k\"\n[[layer]]\npallet = \"base\"\n[kernel]\nimage = \"oci:k@sha256:1111111111111111111111111111111111111111111111111111111111111111\"\npath = \"/bzImage\"\ncmdline = \"console=ttyS0\"\n[output.eif]\nlayout = \"nitro-cli\"\ncmd = [\"/bin/sh\"]\n[policy]\nkeyring = \"keys.pgp\"\nquorum = 2\n".to_vec(),
    ];
    fuzz("box_file", 0x5eed_0003, corpus, iterations(5), targets::box_file);
}

#[test]
fn fuzz_eif_reader() {
    use stagebox::emit::eif;
    let img = common::eif_test_vector();
    let mut v = Vec::new();
    eif::write(&img, None, &mut v).unwrap();
    fuzz("eif", 0x5eed_0004, vec![v], iterations(1), |d, _| targets::eif(d));
}

/// One newc entry, by hand (the format is ASCII hex fields).
fn newc(ino: u32, mode: u32, name: &str, data: &[u8]) -> Vec<u8> {
    let mut v = format!("070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}", 0, 0, 1, 1, data.len(), 0, 0, 0, 0, name.len() + 1, 0)
        .into_bytes();
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    v.resize(v.len().next_multiple_of(4), 0);
    v.extend_from_slice(data);
    v.resize(v.len().next_multiple_of(4), 0);
    v
}

#[test]
fn fuzz_cpio_reader() {
    let mut a = newc(1, 0o040755, "etc", b"");
    a.extend(newc(2, 0o100644, "etc/passwd", b"root:x:0:0::/:/bin/sh\n"));
    a.extend(newc(3, 0o120777, "bin", b"usr/bin"));
    a.extend(newc(0, 0, "TRAILER!!!", b""));
    let mut two = a.clone();
    two.extend_from_slice(&[0; 512]);
    two.extend_from_slice(&a);
    fuzz("cpio", 0x5eed_0005, vec![a, two], iterations(1), |d, _| targets::cpio(d));
}

#[test]
fn fuzz_grub_kernel_img_and_core_image() {
    use stagebox::emit::grub;
    // Debian's grub-efi-amd64-bin: kernel.img, fshelp.mod (no dependencies), moddep.lst.
    let mut files = std::collections::BTreeMap::new();
    let layer = common::deb_layer("grub-efi-amd64-bin");
    for e in tar::Archive::new(&layer[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        if let Some(name) = path.strip_prefix("./usr/lib/grub/x86_64-efi/") {
            if ["kernel.img", "fshelp.mod", "moddep.lst"].contains(&name) {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut v).unwrap();
                files.insert(name.to_string(), v);
            }
        }
    }
    assert_eq!(files.len(), 3, "grub-efi-amd64-bin lacks kernel.img, fshelp.mod or moddep.lst: {:?}", files.keys());
    let modules = [("fshelp".to_string(), files["fshelp.mod"].clone())].into_iter().collect();
    let image = grub::write(&grub::Input {
        target: grub::Target::X86_64Efi,
        dir: "d",
        kernel_img: &files["kernel.img"],
        modules: &modules,
        moddep: std::str::from_utf8(&files["moddep.lst"]).unwrap(),
        wanted: &["fshelp".to_string()],
        config: Some(b"echo hi"),
        prefix: "/EFI/BOOT",
    })
    .unwrap();
    let corpus = vec![files["kernel.img"].clone(), image, files["moddep.lst"].clone()];
    fuzz("grub", 0x5eed_0006, corpus, iterations(3), |d, _| targets::grub(d));
}

#[test]
fn fuzz_kernel_module_modinfo() {
    // Debian's cloud kernel package: a module with depends= and vermagic=, and the bzImage.
    let d = common::tempdir();
    common::run(std::process::Command::new("dpkg-deb").arg("-x").arg(common::cloud_kernel_deb()).arg(d.path()));
    let find = |dir: &std::path::Path, pred: &dyn Fn(&str) -> bool| -> Vec<u8> {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if pred(&p.file_name().unwrap().to_string_lossy()) {
                    return std::fs::read(&p).unwrap();
                }
            }
        }
        panic!("not in the kernel package");
    };
    let module = find(&d.path().join("lib/modules"), &|n| n == "virtio_blk.ko");
    let kernel = find(&d.path().join("boot"), &|n| n.starts_with("vmlinuz-"));
    assert!(stagebox::boot::modules::modinfo(&module).unwrap().iter().any(|(k, _)| k == "vermagic"));
    assert!(stagebox::boot::modules::bzimage_release(&kernel).is_some());
    fuzz("kernel_module", 0x5eed_000a, vec![module, kernel[..kernel.len().min(64 << 10)].to_vec()], iterations(3), |d, _| targets::kernel_module(d));
}

/// Seeds for the tar reader: PAX sparse 0.1 and 1.0, an old GNU `S` entry with an extension
/// block, an old-style directory with a size, a GNU volume label and long name, a `D` entry.
fn sparse_seeds() -> Vec<Vec<u8>> {
    let pax = |recs: &[(&str, &str)]| {
        let mut body = String::new();
        for (k, v) in recs {
            let n = k.len() + v.len() + 3;
            let mut len = n + 1;
            while len != n + len.to_string().len() {
                len = n + len.to_string().len();
            }
            body += &format!("{len} {k}={v}\n");
        }
        [common::raw_tar_header(b"PaxHeaders/s", b'x', body.len() as u64, &[]), common::tar_padded(body.as_bytes())].concat()
    };
    let end = vec![0u8; 1024];
    let gnu: (usize, &[u8]) = (257, b"ustar  \0");
    let v01 = [pax(&[("GNU.sparse.size", "99"), ("GNU.sparse.map", "0,2,90,2"), ("GNU.sparse.name", "s")]), common::raw_tar_header(b"GNUSparseFile.0/s", b'0', 4, &[]), common::tar_padded(b"ABCD"), end.clone()].concat();
    let v10 = [
        pax(&[("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"), ("GNU.sparse.name", "s"), ("GNU.sparse.realsize", "99")]),
        common::raw_tar_header(b"GNUSparseFile.0/s", b'0', 516, &[]),
        common::tar_padded(b"2\n0\n2\n90\n2\n"),
        common::tar_padded(b"ABCD"),
        end.clone(),
    ]
    .concat();
    let mut ext = vec![0u8; 512];
    ext[0..24].copy_from_slice(b"00000000120\x0000000000001\0");
    let old_s = [common::raw_tar_header(b"s", b'S', 3, &[gnu, (386, b"00000000000\x0000000000002\0"), (482, &[1]), (483, b"00000000200\0")]), ext, common::tar_padded(b"ABC"), end.clone()].concat();
    let legacy = [
        common::raw_tar_header(b"vol", b'V', 0, &[gnu]),
        common::raw_tar_header(b"././@LongLink", b'L', 5, &[gnu]),
        common::tar_padded(b"long\0"),
        common::raw_tar_header(b"x", b'0', 1, &[gnu]),
        common::tar_padded(b"x"),
        common::raw_tar_header(b"d/", b'0', 1, &[(257, &[0u8; 8])]),
        common::raw_tar_header(b"inc/", b'D', 4, &[gnu]),
        common::tar_padded(b"Ya\0\0"),
        end,
    ]
    .concat();
    vec![v01, v10, old_s, legacy, tar_seed(true)]
}

#[test]
fn fuzz_tar_reader_with_sparse_and_legacy_forms() {
    for s in sparse_seeds() {
        // The seeds themselves read cleanly (else the run fuzzes only error paths).
        let mut r = stagebox::tree::tarread::Reader::new(&s[..], 1 << 20);
        let mut n = 0;
        while r.next().unwrap_or_else(|e| panic!("seed: {}", e.message)).is_some() {
            n += 1;
        }
        assert!(n > 0);
    }
    fuzz("tar_reader", 0x5eed_0009, sparse_seeds(), iterations(1), |d, _| targets::tar_reader(d));
    // The same seeds through the whole layer path (spill, tree, tar output).
    fuzz("layer_tar_sparse", 0x5eed_0007, sparse_seeds(), iterations(5), targets::layer_tar);
}

#[test]
fn fuzz_signature_file_and_payload() {
    let payload = br#"{"critical":{"identity":{"docker-reference":"stagex/core-fuzz:1"},"image":{"docker-manifest-digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},"type":"atomic container signature"},"optional":{}}"#;
    // A bare OpenPGP literal data packet (new format, tag 11) holding the payload.
    let mut literal = vec![0xcb, (payload.len() + 6) as u8, b'b', 0, 0, 0, 0, 0];
    literal.extend_from_slice(payload);
    let old = br#"[{"critical":{"identity":{"docker-reference":"stagex/core-fuzz"},"image":{"docker-manifest-digest":"e3b0"},"type":"pgp container image signature"},"optional":null}]"#;
    let armored = b"-----BEGIN PGP MESSAGE-----\n\nowGbwMvMwCE2\n=abcd\n-----END PGP MESSAGE-----\n".to_vec();
    let corpus = vec![payload.to_vec(), old.to_vec(), literal, armored, Vec::new()];
    fuzz("signature", 0x5eed_0008, corpus, iterations(1), |d, _| targets::signature(d));
}

/// A small tree for the image seeds: a directory, a file, a symlink.
fn seed_tree(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc/d")).unwrap();
    std::fs::write(src.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("../etc/passwd", src.join("etc/d/link")).unwrap();
    src
}

#[test]
fn fuzz_iso_reader() {
    // seeds from xorriso: Rock Ridge with and without Joliet
    let xorriso = common::require_tool("xorriso");
    let dir = common::tempdir();
    let src = seed_tree(dir.path());
    let mut corpus = Vec::new();
    for extra in [&["-R"][..], &["-R", "-J"]] {
        let out = dir.path().join("seed.iso");
        common::run(std::process::Command::new(&xorriso).args(["-as", "mkisofs", "-quiet", "-no-pad"]).args(extra).arg("-o").arg(&out).arg(&src));
        corpus.push(std::fs::read(&out).unwrap());
    }
    fuzz("iso", 0x5eed_000a, corpus, iterations(10), targets::iso);
}

#[test]
fn fuzz_squashfs_reader() {
    let mksquashfs = common::require_tool("mksquashfs");
    let dir = common::tempdir();
    let src = seed_tree(dir.path());
    let mut corpus = Vec::new();
    for comp in ["gzip", "zstd"] {
        let out = dir.path().join(format!("seed-{comp}.sqfs"));
        common::run(std::process::Command::new(&mksquashfs).arg(&src).arg(&out).args(["-noappend", "-quiet", "-no-progress", "-comp", comp]));
        corpus.push(std::fs::read(&out).unwrap());
    }
    fuzz("squashfs", 0x5eed_000b, corpus, iterations(1), |d, _| targets::squashfs(d));
}

#[test]
fn fuzz_gpt_reader() {
    // seed from sgdisk: a 64 KiB disk with one partition
    let sgdisk = common::require_tool("sgdisk");
    let dir = common::tempdir();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 64 << 10]).unwrap();
    common::run(std::process::Command::new(&sgdisk).args(["-a", "1", "-n", "1:34:90", "-t", "1:8300", "-c", "1:root"]).arg(&disk));
    fuzz("gpt", 0x5eed_000c, vec![std::fs::read(&disk).unwrap()], iterations(10), targets::gpt);
}

#[test]
fn fuzz_registry_json() {
    let d = "sha256:".to_string() + &"ab".repeat(32);
    let corpus = vec![
        format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":7,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#).into_bytes(),
        format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":3}}]}}"#).into_bytes(),
        br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin"]},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec(),
    ];
    fuzz("registry_json", 0x5eed_000d, corpus, iterations(5), targets::registry_json);
}

/// Saved crash inputs of a target (`tests/data/fuzz/<name>/*`, none saved yet), replayed by
/// [`fuzz`] before the mutants of every target.
fn crash_inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz").join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    v.sort();
    v.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn fuzz_readback_of_every_output_format() {
    // Seeds: a tiny box's EROFS, .deb, .rpm, cpio and ISO as stagebox writes them, and a FAT
    // image made by mkfs.vfat.
    common::require_tools(&["mkfs.vfat"]);
    let d = common::tempdir();
    common::write(&d.path().join("root/etc/hostname"), "fuzz\n");
    common::write(&d.path().join("top/usr/bin/tool"), "#!/bin/sh\n");
    let bx = d.path().join("fz.toml");
    common::write(&bx, "name = \"fz\"\nversion = \"1\"\n[[layer]]\ndir = \"root\"\n[[layer]]\ndir = \"top\"\n[output.erofs]\n[output.deb]\n[output.rpm]\n[output.initramfs]\ncompression = \"gzip\"\n");
    let out = d.path().join("out");
    let built = common::build(&bx, &out, &d.path().join("cache"));
    let mut corpus: Vec<Vec<u8>> = built.iter().map(|b| common::read(&b.path)).collect();
    let fat = d.path().join("fat.img");
    common::run(std::process::Command::new("mkfs.vfat").args(["-C", "-i", "1"]).arg(&fat).arg("64"));
    corpus.push(common::read(&fat));
    fuzz("readback", 0x5eed_000b, corpus, iterations(5), targets::readback);
}

#[test]
fn fuzz_archive_readers() {
    // Seeds from skopeo: a small umoci image copied to docker-archive: and oci-archive:.
    common::require_tools(&["umoci", "skopeo"]);
    let d = common::tempdir();
    let layout = d.path().join("layout");
    let layer = common::layer(&[common::Entry::dir("etc"), common::Entry::file("etc/passwd", "root:x:0:0::/:/bin/sh\n"), common::Entry::symlink("bin", "usr/bin")]);
    common::umoci_image(&layout, "t", &[("base".into(), layer)]);
    let mut corpus = Vec::new();
    for dest in ["docker-archive:a.tar:fuzz/t:1", "oci-archive:a.tar:t"] {
        let _ = std::fs::remove_file(d.path().join("a.tar"));
        common::run(std::process::Command::new("skopeo").current_dir(d.path()).args(["copy", "--quiet", "oci:layout:t", dest]));
        corpus.push(common::read(&d.path().join("a.tar")));
    }
    // Both read back as the image they hold (else the run fuzzes only error paths).
    for (seed, kind) in corpus.iter().zip(["docker-archive", "oci-archive"]) {
        let s = common::tempdir();
        common::write(&s.path().join("image.tar"), seed);
        let store = stagebox::source::Store::open(&s.path().join("store")).unwrap();
        let r = stagebox::reference::ImageRef::parse(&format!("{kind}:image.tar"), s.path()).unwrap();
        let opts = stagebox::source::SourceOptions { platform: Default::default(), source_date_epoch: 1, offline: true };
        let img = stagebox::source::resolve(&store, &r, &opts).unwrap_or_else(|e| panic!("{kind} seed: {e}"));
        assert_eq!(img.layers.len(), 1);
    }
    fuzz("archive", 0x5eed_000e, corpus, iterations(5), targets::archive);
}

#[test]
fn fuzz_registry_token_and_challenge() {
    let corpus = vec![
        b"Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:stagex/core-gcc:pull\"\n{\"token\":\"eyJhbGciOiJSUzI1NiJ9.e30.sig\",\"expires_in\":300,\"issued_at\":\"2026-12-02T16:00:00Z\"}".to_vec(),
        b"Bearer realm=\"http://127.0.0.1:5000/token?x=1\", service=local ,scope=\"repository:a/b:pull,push\", error=\"insufficient_scope\"\n{\"access_token\":\"t\\u00e9\"}".to_vec(),
        b"Basic realm=\"Registry \\\"Realm\\\"\"\n".to_vec(),
    ];
    let (scheme, params) = stagebox::source::registry::auth::parse_challenge(std::str::from_utf8(&corpus[0]).unwrap().lines().next().unwrap());
    assert_eq!((scheme.as_str(), params.len()), ("Bearer", 3));
    assert_eq!(stagebox::source::registry::auth::token_from_response(br#"{"access_token":"t"}"#).unwrap(), "t");
    assert!(stagebox::source::registry::auth::token_from_response(b"{}").unwrap_err().contains("no token"));
    fuzz("registry_token", 0x5eed_000f, corpus, iterations(1), |d, _| targets::registry_token(d));
}

#[test]
fn fuzz_erofs_reader() {
    // Seeds from mkfs.erofs: compact and extended inodes, inline and plain data, and an lz4
    // image (which the reader refuses: compressed layouts are not read back).
    let mkfs = common::require_tool("mkfs.erofs");
    let dir = common::tempdir();
    let src = seed_tree(dir.path());
    common::write(&src.join("big/data"), (0..9000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>());
    for i in 0..20 {
        common::write(&src.join(format!("big/f{i}")), "");
    }
    let mut corpus = Vec::new();
    for (i, opts) in [&["-T1"][..], &["-T1", "-Eforce-inode-extended"], &["-T1", "-Enoinline_data"], &["-T1", "-zlz4"]].iter().enumerate() {
        let out = dir.path().join(format!("seed-{i}.erofs"));
        common::run(std::process::Command::new(&mkfs).arg("--quiet").args(*opts).arg(&out).arg(&src));
        corpus.push(std::fs::read(&out).unwrap());
    }
    let f = std::fs::File::open(dir.path().join("seed-0.erofs")).unwrap();
    let entries = stagebox::emit::readback::erofs_entries(&f, 0).unwrap();
    assert!(entries.len() > 20, "{}", entries.len());
    fuzz("erofs", 0x5eed_0010, corpus, iterations(5), targets::erofs);
}
