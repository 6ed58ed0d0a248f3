//! Booting: the kernel and bootloaders a box names, and the compositions that make bootable
//! outputs from a tree (initramfs, hybrid ISO, GPT disk, Nitro Enclave image, and the
//! dm-verity and kernel-module pieces they carry) by calling the emitters.
//!
//! Below `build`: nothing here reads the box's output table or calls a command.

pub mod bios;
pub mod bootloader;
pub mod disk;
pub mod enclave;
pub mod initramfs;
pub mod iso;
pub mod kernel;
pub mod verity;
pub mod modules;

use crate::spec::BoxSpec;
use crate::tree::Tree;
use std::path::Path;

/// Where kernel and bootloader images come from: the store, the lock that pins them, and the
/// settings of their flatten.
#[derive(Clone, Copy)]
pub struct Import<'a> {
    pub store: &'a crate::source::Store,
    pub sopts: &'a crate::source::SourceOptions,
    pub lock: Option<&'a crate::spec::LockFile>,
    pub lock_path: &'a Path,
    /// Worker threads as asked (0 = one per core).
    pub threads: usize,
    pub progress: &'a crate::progress::Progress,
}

impl Import<'_> {
    /// Pin (by the reference itself or the lock file), import and flatten one image whose
    /// files a build takes out (a kernel, a bootloader), contents spilled so they can be read
    /// at will. `what` names it in the progress line.
    pub fn image_tree(&self, image: &crate::reference::ImageRef, at: &crate::spec::Location, what: &str) -> crate::Result<(crate::source::ResolvedImage, Tree)> {
        let r = crate::spec::pin(image, at, self.lock, self.lock_path)?;
        self.progress.set_message(format!("import {what} {}", r.text));
        let resolved = crate::source::resolve(self.store, &r, self.sopts).map_err(|e| crate::spec::locate_pin(image, at, self.lock_path, e))?;
        crate::source::check_platform(&resolved, &self.sopts.platform).map_err(|found| {
            at.error(format!(
                "{what}, {}: {found}, but the box builds for {} (the box's `platform`, or --platform; default linux/amd64)",
                resolved.reference.text, self.sopts.platform
            ))
        })?;
        let mode = crate::tree::layer::ContentMode::Spill;
        let tree = crate::tree::images::flatten(self.store, std::slice::from_ref(&resolved), self.sopts.source_date_epoch, self.threads, mode, self.progress)?;
        Ok((resolved, tree))
    }
}

/// What every bootable composition needs from the build: the tree and the box, where to
/// write, and the build-wide settings. `build` makes it from its plan.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub tree: &'a Tree,
    pub spec: &'a BoxSpec,
    /// The directory outputs are written into (the build's staging directory).
    pub out: &'a Path,
    /// SOURCE_DATE_EPOCH.
    pub sde: u64,
    /// Worker threads as asked (0 = one per core), for compressors.
    pub threads: usize,
    /// Worker threads resolved (never 0), for emitters that lay out first.
    pub workers: usize,
    /// No progress output.
    pub quiet: bool,
    /// `[kernel] load_modules`, selected and checked (`boot::modules`).
    pub modules: Option<&'a modules::Modules>,
    /// The static busybox of the disk's early initrd (`[output.disk] busybox`).
    pub busybox: Option<&'a [u8]>,
}
