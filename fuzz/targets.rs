//! The fuzz targets' bodies, shared by the cargo-fuzz targets in `fuzz/fuzz_targets/` (long
//! local runs with libFuzzer) and by `tests/it/fuzz.rs` (a bounded, seeded mutation run on the
//! stable toolchain in CI). Each feeds untrusted bytes to one reader; errors are fine, a
//! panic (or a file written outside `scratch`) is a bug.

use std::path::Path;

/// A layer blob (tar, maybe gzip/zstd) → `tree::layer::parse` → applied to a tree, then the
/// tree emitted as tar and cpio (what a build would do with it).
pub fn layer_tar(data: &[u8], scratch: &Path) {
    let blob_path = scratch.join("blob");
    std::fs::write(&blob_path, data).unwrap();
    let digest = stagebox::digest::Digest::of_bytes(data);
    let blob = stagebox::source::LayerBlob {
        digest: digest.clone(),
        size: data.len() as u64,
        diff_id: digest,
        media_type: stagebox::source::MT_OCI_LAYER.into(),
        label: "fuzz".into(),
    };
    let limits = stagebox::tree::layer::Limits { max_layer_bytes: 8 << 20, max_entries: 10_000, max_tree_entries: 10_000, max_tree_bytes: 1 << 20 };
    let Ok(parsed) = stagebox::tree::layer::parse(&blob_path, &blob, 0, limits) else { return };
    let mut tree = stagebox::tree::Tree::new(1);
    if tree.apply(parsed).is_err() {
        return;
    }
    let _ = stagebox::emit::tar::write(&tree, 1, &mut std::io::sink());
}

/// `index.json` of an OCI layout → `source::resolve` (index and manifest parsing, platform
/// choice). The layout has no blobs, so a parse that gets that far fails on the first one.
pub fn oci_index(data: &[u8], scratch: &Path) {
    let layout = scratch.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(layout.join("index.json"), data).unwrap();
    let Ok(store) = stagebox::source::Store::open(&scratch.join("store")) else { return };
    let Ok(r) = stagebox::reference::ImageRef::parse("oci:layout", scratch) else { return };
    let opts = stagebox::source::SourceOptions { platform: Default::default(), source_date_epoch: 1, offline: true };
    let _ = stagebox::source::resolve(&store, &r, &opts);
}

/// A box file → `spec::load_box` (TOML, layers, outputs, kernel, policy; locations).
pub fn box_file(data: &[u8], scratch: &Path) {
    let p = scratch.join("box.toml");
    std::fs::write(&p, data).unwrap();
    let _ = stagebox::spec::load_box(&p);
}

/// An EIF → `emit::eif::format::read` and `debug::describe`/`dump` (what `inspect` shows).
pub fn eif(data: &[u8]) {
    if let Ok(scan) = stagebox::emit::eif::format::read(&mut &data[..], data.len() as u64) {
        let d = stagebox::emit::eif::debug::describe(&scan, "fuzz.eif", "0");
        let _ = stagebox::emit::eif::debug::dump(&d);
    }
}

/// Concatenated newc archives → `emit::cpio::debug::dump` (which uses `format::parse`).
pub fn cpio(data: &[u8]) {
    let _ = stagebox::emit::cpio::debug::dump(data);
}

/// A GRUB platform directory's `kernel.img` → `emit::grub` layout and relocation (for both
/// targets); the same bytes as a core image → `debug::dump`, and as `moddep.lst` → `resolve`.
pub fn grub(data: &[u8]) {
    use stagebox::emit::grub;
    for t in [grub::Target::X86_64Efi, grub::Target::Arm64Efi] {
        let _ = grub::writer::load_kernel(t, "kernel.img", data);
    }
    let _ = grub::debug::dump(data);
    let _ = grub::resolve("d", &String::from_utf8_lossy(data), &["normal".to_string(), "linux".to_string()]);
    let _ = grub::pc::load_kernel32("kernel.img", data);
}

/// A kernel module or kernel from an image → the `.modinfo` reader and the bzImage release
/// reader of `boot::modules` (`[kernel] load_modules`).
pub fn kernel_module(data: &[u8]) {
    let _ = stagebox::boot::modules::modinfo(data);
    let _ = stagebox::boot::modules::bzimage_release(data);
}

/// Raw tar bytes → `tree::tarread::Reader` (every header form, PAX records, GNU sparse maps
/// of all versions), each entry's data read and, for a sparse file of at most 1 MiB, expanded
/// in memory. Checks the reader's promises: a sparse map is ordered, inside the logical size
/// and covers exactly the stored bytes; data-less entries store nothing.
pub fn tar_reader(data: &[u8]) {
    use stagebox::tree::tarread::{Kind, Reader};
    let mut r = Reader::new(data, 1 << 20);
    let mut buf = vec![0u8; 4096];
    for _ in 0..10_000 {
        let Ok(Some(e)) = r.next() else { return };
        let mut stored = Vec::new();
        loop {
            match r.read_data(&mut buf) {
                Ok(0) => break,
                Ok(n) => stored.extend_from_slice(&buf[..n]),
                Err(_) => return,
            }
        }
        assert_eq!(stored.len() as u64, e.stored, "stored bytes read");
        if e.kind != Kind::File {
            assert_eq!(e.size, 0);
            continue;
        }
        match &e.sparse {
            None => assert_eq!(e.size, e.stored),
            Some(map) => {
                let mut end = 0u64;
                let mut sum = 0u64;
                for &(off, len) in map {
                    assert!(off >= end && off + len <= e.size, "sparse map out of order or range");
                    end = off + len;
                    sum += len;
                }
                assert_eq!(sum, e.stored, "sparse map covers the stored bytes");
                if e.size <= 1 << 20 {
                    let mut file = vec![0u8; e.size as usize];
                    let mut at = 0usize;
                    for &(off, len) in map {
                        file[off as usize..(off + len) as usize].copy_from_slice(&stored[at..at + len as usize]);
                        at += len as usize;
                    }
                }
            }
        }
    }
}

/// A signature file → `source::signature::verify_file` with an empty keyring (OpenPGP
/// message parsing, decompression, literal data, issuer lookup), and the same bytes as a
/// signed payload → `parse_payload` (both JSON generations).
pub fn signature(data: &[u8]) {
    use stagebox::source::signature::{parse_payload, verify_file, Keyring};
    let kr = Keyring { path: "fuzz".into(), keys: Vec::new() };
    let d = stagebox::digest::Digest::of_bytes(b"");
    let _ = verify_file(data, "stagex/core-fuzz", &d, &kr, 0);
    let _ = parse_payload(data);
}

/// Any file `inspect` and `diff` read → `emit::readback`: the sniffer, every entry listing
/// (EROFS, `.deb`'s ar, `.rpm`'s headers, cpio, tar, ...), and a GPT's partitions with a FAT
/// file system in each (and the bytes read as FAT and EROFS whatever the sniffer says).
pub fn readback(data: &[u8], scratch: &Path) {
    use stagebox::emit::readback;
    let p = scratch.join("file");
    std::fs::write(&p, data).unwrap();
    if let Ok(format) = readback::Format::sniff(&p) {
        let _ = readback::entries(format, &p);
        let _ = readback::content_compression(format, &p);
    }
    let f = std::fs::File::open(&p).unwrap();
    let _ = readback::erofs_entries(&f, 0);
    let _ = readback::ar_members(&f);
    let _ = readback::rpm_payload_offset(&f);
    let _ = readback::fat_entries(&f, 0, data.len() as u64);
    for (at, len) in stagebox::emit::gpt::partition_spans(&f) {
        if readback::is_fat(&f, at) {
            let _ = readback::fat_entries(&f, at, len);
        }
        let _ = readback::span_kind(&f, at);
    }
}

/// An ISO 9660 image → `emit::iso::debug::is_iso`, `describe` and `dump` (what `inspect`
/// and `diff` read: volume descriptors, path and directory records, Rock Ridge, Joliet,
/// El Torito).
pub fn iso(data: &[u8], scratch: &Path) {
    use stagebox::emit::iso::debug;
    let p = scratch.join("image.iso");
    std::fs::write(&p, data).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    let _ = debug::is_iso(&f);
    if let Ok(d) = debug::describe(&f, "fuzz.iso", "0") {
        let _ = debug::dump(&d);
    }
}

/// A SquashFS image → `emit::squashfs::debug::describe` and `dump` (superblock, tables,
/// inodes, directories of `inspect` and `diff`).
pub fn squashfs(data: &[u8]) {
    use stagebox::emit::squashfs::debug;
    if let Ok(d) = debug::describe(&debug::Image::whole(data)) {
        let _ = debug::dump(&d);
    }
}

/// A disk image → `emit::gpt::dump` (MBR, primary GPT checked against the backup) and
/// `dump_path`, as `inspect` and `diff` read it.
pub fn gpt(data: &[u8], scratch: &Path) {
    let p = scratch.join("disk.img");
    std::fs::write(&p, data).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    let _ = stagebox::emit::gpt::dump(&f, &p);
    let _ = stagebox::emit::gpt::dump_path(&p);
}

/// Registry JSON as a pull reads it from the store (offline, pinned by digest): the bytes as
/// the manifest or index the reference names (`follow_to_manifest`, platform choice, image
/// manifest), and as the image config of a manifest that names them (`rootfs.diff_ids`).
pub fn registry_json(data: &[u8], scratch: &Path) {
    use stagebox::source::{resolve, SourceOptions, Store};
    let Ok(store) = Store::open(&scratch.join("store")) else { return };
    let Ok(d) = store.put_bytes(data) else { return };
    let opts = SourceOptions { platform: Default::default(), source_date_epoch: 1, offline: true };
    if let Ok(r) = stagebox::reference::ImageRef::parse(&format!("registry.invalid/stagex/fuzz@{d}"), scratch) {
        let _ = resolve(&store, &r, &opts);
    }
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":{}}},"layers":[]}}"#,
        data.len()
    );
    let Ok(m) = store.put_bytes(manifest.as_bytes()) else { return };
    if let Ok(r) = stagebox::reference::ImageRef::parse(&format!("registry.invalid/stagex/fuzz@{m}"), scratch) {
        let _ = resolve(&store, &r, &opts);
    }
}

/// The bytes as an image archive file → `source::resolve` of `docker-archive:` (tar members,
/// `manifest.json`, the config, layers copied into the store) and of `oci-archive:` (the
/// member index, then the OCI layout inside: `index.json`, manifests, blobs read in place).
pub fn archive(data: &[u8], scratch: &Path) {
    use stagebox::source::{resolve, SourceOptions, Store};
    let file = scratch.join("image.tar");
    std::fs::write(&file, data).unwrap();
    let Ok(store) = Store::open(&scratch.join("store")) else { return };
    let opts = SourceOptions { platform: Default::default(), source_date_epoch: 1, offline: true };
    for kind in ["docker-archive", "oci-archive"] {
        if let Ok(r) = stagebox::reference::ImageRef::parse(&format!("{kind}:image.tar"), scratch) {
            let _ = resolve(&store, &r, &opts);
        }
    }
}

/// What a registry's auth server sends: the first line as a `WWW-Authenticate` challenge →
/// `auth::parse_challenge` (the realm's host through `Repo::parse`, every value through
/// `urlencode`, as a token request is built), the rest, and the whole, as the token
/// server's JSON answer → `auth::token_from_response`.
pub fn registry_token(data: &[u8]) {
    use stagebox::source::registry::{auth, Repo};
    let text = String::from_utf8_lossy(data);
    let (challenge, body) = text.split_once('\n').unwrap_or((&text, ""));
    let (_scheme, params) = auth::parse_challenge(challenge);
    for (k, v) in &params {
        if k == "realm" {
            let _ = Repo::parse(v.split("://").nth(1).unwrap_or("").split('/').next().unwrap_or(""));
        }
        let _ = auth::urlencode(v);
    }
    let _ = auth::token_from_response(body.as_bytes());
    let _ = auth::token_from_response(data);
}

/// An EROFS image → `emit::readback::erofs_entries` (superblock, compact and extended inodes,
/// inline and plain data, directory blocks) at offset 0 and through the sniffer, as `inspect`
/// and `diff` read it. `readback` reaches the same reader among every other format; this
/// target, seeded with `mkfs.erofs` images, spends its time there.
pub fn erofs(data: &[u8], scratch: &Path) {
    use stagebox::emit::readback;
    let p = scratch.join("image.erofs");
    std::fs::write(&p, data).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    let _ = readback::erofs_entries(&f, 0);
    if let Ok(format) = readback::Format::sniff(&p) {
        let _ = readback::entries(format, &p);
    }
}
