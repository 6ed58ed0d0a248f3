#![no_main]
//! libFuzzer target: see fuzz/targets.rs.

#[allow(dead_code)]
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = tempfile::tempdir().unwrap();
    targets::archive(data, scratch.path());
});
