//! The integration tests of stagebox, one module per area, in one test binary (one link
//! of the library and of `common` instead of one per file). Run one area with
//! `cargo test --test it NAME::`, e.g. `cargo test --test it architecture`.

mod common;
mod registry_support;

mod architecture;
mod arm64;
mod arm64_boot;
mod boot;
mod bounds;
mod boxes;
mod completions;
mod day_one;
mod day_one_outputs;
mod disk;
mod disk_modules;
mod docs;
mod eif;
mod erofs;
mod example;
mod fuzz;
mod grub;
mod hostile;
mod initramfs;
mod iso;
mod iso_boot;
mod measured_boot;
mod oci_archive;
mod oracle;
mod packages;
mod placed;
mod progress;
mod prove;
mod registry;
mod reproducers;
mod reproducible;
mod schema;
mod shipped;
mod signatures;
mod sources;
mod spec_errors;
mod squashfs;
mod tarcorpus;
mod verity;
