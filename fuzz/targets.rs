//! The fuzz targets' bodies, shared by the cargo-fuzz targets in `fuzz/fuzz_targets/` (long
//! local runs with libFuzzer) and by `tests/fuzz.rs` (a bounded, seeded mutation run on the
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
    let limits = stagebox::tree::layer::Limits { max_layer_bytes: 8 << 20, max_entries: 10_000 };
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
}
