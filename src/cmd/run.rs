//! `stagebox run OUTPUT`: boot a built initramfs (with its box's kernel), ISO or disk image in
//! QEMU with the serial console on stdio, as `mkosi qemu` does: `qemu-system-x86_64` (a PC)
//! for amd64 outputs, `qemu-system-aarch64 -M virt` for arm64 ones.
//!
//! The kernel and command line of an initramfs come from the manifest beside it that lists
//! it (the `kernel` and `cmdline` records `stagebox build` writes), unless given with
//! `--kernel`; a command line that names no console gets `console=ttyS0` (`console=ttyAMA0`
//! on arm64; said on stderr), so the serial console on stdio shows the boot. A GPT disk image
//! boots with UEFI (OVMF; BIOS boot of disk images is not supported) from an NVMe disk, as the
//! tests boot it.
//!
//! The machine comes from the manifest: the `arch` of the booted output's record (or of the
//! box's kernel record; absent means amd64), else the form of the kernel file
//! (`kernelfmt`). An arm64 output boots on QEMU's `virt` board with a Cortex-A57 under TCG
//! (`-cpu host` with KVM on an arm64 host), ISOs and disks always with UEFI (AAVMF, Debian's
//! `qemu-efi-aarch64`, its variable store copied): an ISO as a CD on virtio-scsi (or, with
//! `--disk`, as a virtio disk), a GPT disk on virtio-blk.
//!
//! The console is always read by us (and echoed): the run fails as soon as it shows a kernel
//! panic, naming the panic line. With `--expect TEXT` the run ends with success as soon as
//! TEXT appears, and fails on timeout or when QEMU stops first, printing the console's last
//! lines; without it the terminal's input goes to QEMU (Ctrl-A X quits). Arguments after
//! `--` go to QEMU as they are. QEMU never outlives us: it is killed when the run ends, and
//! asked by the kernel (`PR_SET_PDEATHSIG`) to die if we do.

use crate::error::{Error, IoContext, Result};
use crate::kernelfmt::Arch;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The QEMU binary (Debian package `qemu-system-x86`).
pub const QEMU: &str = "qemu-system-x86_64";
/// The QEMU binary for arm64 outputs (Debian package `qemu-system-arm`).
pub const QEMU_ARM64: &str = "qemu-system-aarch64";

/// AAVMF (EDK2 for QEMU's arm `virt` board, Debian package `qemu-efi-aarch64`): code and
/// variable store, both 64 MiB pflash images.
pub const AAVMF_PAIRS: &[(&str, &str)] = &[("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd")];

/// The QEMU binary that boots `arch`, and the Debian package that has it.
pub fn qemu_for(arch: Arch) -> (&'static str, &'static str) {
    match arch {
        Arch::Amd64 => (QEMU, "qemu-system-x86"),
        Arch::Arm64 => (QEMU_ARM64, "qemu-system-arm"),
    }
}

/// OVMF code and variable stores to try, newest Debian layout first (package `ovmf`).
pub const OVMF_PAIRS: &[(&str, &str)] = &[
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/ovmf/OVMF.fd", ""),
];

/// Console bytes kept for the tail printed on failure.
const TAIL_BYTES: usize = 64 << 10;
/// Lines of console shown on failure.
const TAIL_LINES: usize = 40;

/// Whether to use KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kvm {
    /// Use KVM when `/dev/kvm` can be opened for reading and writing, else TCG.
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for Kvm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Kvm::Auto),
            "on" | "yes" | "true" => Ok(Kvm::On),
            "off" | "no" | "false" => Ok(Kvm::Off),
            _ => Err(format!("{s:?}: expected auto, on or off")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Guest memory as QEMU takes it (`1G`, `512M`).
    pub memory: String,
    pub uefi: bool,
    /// Attach an ISO as a raw disk instead of a CD.
    pub disk: bool,
    pub kvm: Kvm,
    /// Succeed once this text appears on the console.
    pub expect: Option<String>,
    /// Give up (and fail) after this long.
    pub timeout: Option<Duration>,
    /// A kernel to use instead of the one in the manifest.
    pub kernel: Option<PathBuf>,
    /// Extra kernel command-line arguments, appended to the box's.
    pub append: Option<String>,
    /// Echo the console to stdout while waiting for `expect`.
    pub echo: bool,
    /// More QEMU arguments, after ours (`stagebox run X -- ARGS`).
    pub qemu_extra: Vec<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { memory: "1G".into(), uefi: false, disk: false, kvm: Kvm::Auto, expect: None, timeout: None, kernel: None, append: None, echo: true, qemu_extra: Vec::new() }
    }
}

/// What is being booted and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    Initramfs { initrd: PathBuf, kernel: PathBuf, cmdline: String },
    Iso(PathBuf),
    /// An ISO attached as a raw disk (`--disk`: a USB stick written with dd).
    Disk(PathBuf),
    /// A GPT disk image: UEFI only, attached as NVMe.
    Gpt(PathBuf),
}

/// What the console shows when the kernel panics.
const PANIC: &[u8] = b"Kernel panic - not syncing";

fn usage(m: impl Into<String>) -> Error {
    Error::Usage(m.into())
}

/// The manifest that lists `file` in `dir` (boxes sharing a directory each have their
/// `NAME.manifest.json`); for a directory (`file` None), its only box's manifest. A path
/// that does not exist when nothing lists the file.
fn manifest_for(dir: &Path, file: Option<&str>) -> Result<std::path::PathBuf> {
    match file {
        Some(name) => Ok(crate::measure::manifest_listing(dir, name)?.map(|(p, _)| p).unwrap_or_else(|| dir.join("manifest.json"))),
        None => {
            let found = crate::measure::manifests_in(dir)?;
            let boxes: std::collections::BTreeSet<&str> = found.iter().map(|(_, m)| m.name.as_str()).collect();
            if boxes.len() > 1 {
                return Err(usage(format!(
                    "{} holds the outputs of {} boxes ({}): name the output to run, e.g. {}",
                    dir.display(),
                    boxes.len(),
                    boxes.iter().copied().collect::<Vec<_>>().join(", "),
                    dir.join("NAME.cpio.gz").display()
                )));
            }
            Ok(found.into_iter().next().map(|(p, _)| p).unwrap_or_else(|| dir.join("manifest.json")))
        }
    }
}

/// Work out what `output` is and what boots it, from the manifest beside it that lists it
/// (or, for a directory, in it: its first bootable output).
pub fn plan(output: &Path, opts: &RunOptions) -> Result<Boot> {
    Ok(plan_arch(output, opts)?.0)
}

/// [`plan`], and the architecture of the machine that boots it (see the module doc).
pub fn plan_arch(output: &Path, opts: &RunOptions) -> Result<(Boot, Arch)> {
    let meta = std::fs::metadata(output).at(output)?;
    let (dir, file) = if meta.is_dir() { (output.to_path_buf(), None) } else {
        let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        (dir, output.file_name().map(|f| f.to_string_lossy().into_owned()))
    };
    let manifest_path = manifest_for(&dir, file.as_deref())?;
    let manifest: Option<crate::measure::BuildManifest> = match std::fs::read(&manifest_path) {
        Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| Error::other(format!("{}: {e}", manifest_path.display())))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&manifest_path, e)),
    };
    let records: &[crate::measure::OutputRecord] = manifest.as_ref().map(|m| m.outputs.as_slice()).unwrap_or_default();
    let find = |fmt: &str| records.iter().find(|o| o.format == fmt).map(|o| dir.join(&o.path));
    let (format, path) = match &file {
        Some(name) => {
            let sniffed = || match crate::emit::readback::Format::sniff(output) {
                Ok(crate::emit::readback::Format::Iso) => Some("iso".to_string()),
                Ok(crate::emit::readback::Format::Disk) => Some("disk".to_string()),
                Ok(crate::emit::readback::Format::Cpio) => Some("initramfs".to_string()),
                _ => None,
            };
            let fmt = records.iter().find(|o| o.path == *name).map(|o| o.format.clone()).or_else(sniffed).unwrap_or_else(|| {
                if name.ends_with(".iso") {
                    "iso".into()
                } else if name.ends_with(".img") || name.ends_with(".raw") {
                    "disk".into()
                } else if name.contains(".cpio") {
                    "initramfs".into()
                } else {
                    String::new()
                }
            });
            (fmt, output.to_path_buf())
        }
        None => records
            .iter()
            .find(|o| matches!(o.format.as_str(), "initramfs" | "iso" | "disk"))
            .map(|o| (o.format.clone(), dir.join(&o.path)))
            .ok_or_else(|| usage(format!("{}: the manifest lists no initramfs, ISO or disk image to boot", manifest_path.display())))?,
    };
    // The machine: the booted output's record, else the kernel's (absent `arch`: amd64).
    let named = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let recorded = records.iter().find(|o| o.path == named).or_else(|| records.iter().find(|o| o.format == "kernel")).map(|o| o.arch.clone());
    let shown = path.display().to_string();
    let arch_of = |a: Option<String>| -> Result<Arch> {
        match a {
            None => Ok(Arch::Amd64),
            Some(a) => Arch::from_oci(&a).ok_or_else(|| usage(format!("{}: {} records architecture {a:?}, which run cannot boot (amd64, arm64)", shown, manifest_path.display()))),
        }
    };
    let boot = match format.as_str() {
        "initramfs" => {
            let kernel = match (&opts.kernel, find("kernel")) {
                (Some(k), _) => k.clone(),
                (None, Some(k)) => k,
                (None, None) => {
                    return Err(usage(format!(
                        "{}: no kernel to boot it with: {} records none (give the box a [kernel], or pass --kernel)",
                        path.display(),
                        if manifest.is_some() { manifest_path.display().to_string() } else { format!("there is no {}", manifest_path.display()) }
                    )))
                }
            };
            let mut cmdline = match find("cmdline") {
                Some(p) => std::fs::read_to_string(&p).at(&p)?.trim().to_string(),
                None => String::new(),
            };
            if let Some(a) = &opts.append {
                cmdline = format!("{cmdline} {a}").trim().to_string();
            }
            // The kernel file's own form says its machine; the kernel record's `arch` when
            // the form names none (an Image.gz is a gzip stream).
            let kernel_rec = records.iter().find(|o| o.format == "kernel").and_then(|o| o.arch.clone());
            let arch = match sniff_kernel_arch(&kernel)? {
                Some(a) => a,
                None => arch_of(if opts.kernel.is_some() { None } else { kernel_rec })?,
            };
            // The console is the serial port on stdio: a command line naming none shows nothing.
            if !cmdline.split_whitespace().any(|w| w.starts_with("console=")) {
                let c = arch.console();
                cmdline = format!("{cmdline} console={c}").trim().to_string();
                eprintln!("stagebox: the kernel command line names no console: added console={c} (the serial console on stdio)");
            }
            (Boot::Initramfs { initrd: path, kernel, cmdline }, arch)
        }
        // An isohybrid ISO boots as a disk too (a USB stick written with dd).
        "iso" if opts.disk => (Boot::Disk(path), arch_of(recorded.flatten())?),
        "iso" => (Boot::Iso(path), arch_of(recorded.flatten())?),
        "disk" => (Boot::Gpt(path), arch_of(recorded.flatten())?),
        other => {
            return Err(usage(format!(
                "{}: cannot boot a {} output; run takes an initramfs (NAME.cpio*), ISO or disk image",
                path.display(),
                if other.is_empty() { "unknown" } else { other }
            )))
        }
    };
    Ok(boot)
}

/// The architecture a kernel file is for, from its first bytes (`kernelfmt`); None when its
/// form names none or is not known, or the file cannot be read (QEMU then says why).
fn sniff_kernel_arch(kernel: &Path) -> Result<Option<Arch>> {
    let mut head = Vec::new();
    let Ok(f) = std::fs::File::open(kernel) else { return Ok(None) };
    f.take(crate::kernelfmt::HEAD as u64).read_to_end(&mut head).at(kernel)?;
    Ok(crate::kernelfmt::identify(&head).ok().and_then(|f| f.arch()))
}

/// True when QEMU can use KVM here: `/dev/kvm` opens for reading and writing, speaks API
/// version 12, and offers the CPU features of QEMU's default CPU model (SSE3 in CPUID leaf 1).
/// The last check matters: some sandboxes expose a `/dev/kvm` that runs a toy guest but
/// lacks SSE3, and QEMU on it warns "host doesn't support requested feature:
/// CPUID.01H:ECX.pni" and then hangs or aborts.
pub fn kvm_usable() -> bool {
    use std::os::fd::AsRawFd;
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    const KVM_GET_SUPPORTED_CPUID: libc::c_ulong = 0xC008_AE05;
    const ENTRY: usize = 40; // struct kvm_cpuid_entry2
    const MAX_ENTRIES: usize = 512;
    let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") else { return false };
    let fd = f.as_raw_fd();
    // SAFETY: plain ioctls on an open /dev/kvm; the CPUID buffer is sized for MAX_ENTRIES
    // entries as `nent` tells the kernel, and is u32-aligned.
    unsafe {
        if libc::ioctl(fd, KVM_GET_API_VERSION as _, 0) != 12 {
            return false;
        }
        let mut buf = vec![0u32; (8 + MAX_ENTRIES * ENTRY) / 4];
        buf[0] = MAX_ENTRIES as u32;
        if libc::ioctl(fd, KVM_GET_SUPPORTED_CPUID as _, buf.as_mut_ptr()) != 0 {
            return false;
        }
        let n = (buf[0] as usize).min(MAX_ENTRIES);
        (0..n).any(|i| {
            let e = &buf[2 + i * ENTRY / 4..2 + (i + 1) * ENTRY / 4];
            // function, index, flags, eax, ebx, ecx, edx: leaf 1 ECX bit 0 is SSE3.
            e[0] == 1 && e[5] & 1 == 1
        })
    }
}

/// The QEMU arguments for `boot` on a PC (`qemu-system-x86_64`). `vars` is a writable copy
/// of the OVMF variable store.
pub fn qemu_args(boot: &Boot, opts: &RunOptions, kvm: bool, ovmf: Option<(&Path, Option<&Path>)>, interactive: bool) -> Vec<String> {
    qemu_args_for(boot, Arch::Amd64, opts, kvm, ovmf, interactive)
}

/// The QEMU arguments for `boot` on the machine of `arch` ([`qemu_for`] names the binary):
/// for arm64 the `virt` board, a Cortex-A57 (TCG) or the host's CPU (KVM), an ISO as a CD on
/// virtio-scsi or as a virtio disk, a GPT disk on virtio-blk. `firmware` is the UEFI code
/// and a writable copy of its variable store (OVMF, AAVMF).
pub fn qemu_args_for(boot: &Boot, arch: Arch, opts: &RunOptions, kvm: bool, firmware: Option<(&Path, Option<&Path>)>, interactive: bool) -> Vec<String> {
    if arch == Arch::Arm64 {
        return qemu_args_arm64(boot, opts, kvm, firmware, interactive);
    }
    let mut a = machine_args(opts, &[], &[], kvm, interactive);
    firmware_args(&mut a, firmware);
    match boot {
        Boot::Initramfs { initrd, kernel, cmdline } => {
            a.extend(["-kernel".into(), kernel.display().to_string(), "-initrd".into(), initrd.display().to_string(), "-append".into(), cmdline.clone()]);
        }
        Boot::Iso(p) => {
            a.extend(["-drive".into(), format!("file={},format=raw,media=cdrom,readonly=on", p.display())]);
        }
        Boot::Disk(p) => {
            // snapshot=on, not readonly=on: QEMU's IDE refuses read-only block nodes.
            a.extend(["-drive".into(), format!("file={},format=raw,snapshot=on", p.display())]);
        }
        Boot::Gpt(p) => {
            a.extend(["-drive".into(), format!("file={},if=none,id=disk0,format=raw,snapshot=on", p.display())]);
            a.extend(["-device".into(), "nvme,drive=disk0,serial=stagebox".into()]);
        }
    }
    a.extend(opts.qemu_extra.iter().cloned());
    a
}

/// The arguments every boot starts with: no default devices or config, no display, no
/// reboot, the memory, the serial console on stdio (sharing QEMU's monitor when
/// interactive: Ctrl-A X quits, Ctrl-A C for the monitor), and the accelerator: KVM with the
/// host's CPU, else TCG with `tcg_cpu`. `machine` is the board (`-M virt`) when not the default.
fn machine_args(opts: &RunOptions, machine: &[&str], tcg_cpu: &[&str], kvm: bool, interactive: bool) -> Vec<String> {
    let mut a: Vec<String> = ["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"].map(String::from).to_vec();
    a.extend(machine.iter().map(|s| s.to_string()));
    a.extend(["-m".into(), opts.memory.clone(), "-serial".into(), if interactive { "mon:stdio" } else { "stdio" }.into()]);
    if kvm {
        a.extend(["-accel", "kvm", "-cpu", "host"].map(String::from));
    } else {
        a.extend(["-accel", "tcg"].map(String::from));
        a.extend(tcg_cpu.iter().map(|s| s.to_string()));
    }
    a
}

/// UEFI firmware (OVMF or AAVMF) as pflash: the code read-only, the variables (a copy)
/// writable.
fn firmware_args(a: &mut Vec<String>, fw: Option<(&Path, Option<&Path>)>) {
    if let Some((code, vars)) = fw {
        a.extend(["-drive".into(), format!("if=pflash,format=raw,unit=0,readonly=on,file={}", code.display())]);
        if let Some(v) = vars {
            a.extend(["-drive".into(), format!("if=pflash,format=raw,unit=1,file={}", v.display())]);
        }
    }
}

fn qemu_args_arm64(boot: &Boot, opts: &RunOptions, kvm: bool, aavmf: Option<(&Path, Option<&Path>)>, interactive: bool) -> Vec<String> {
    // The virt board's PL011 is the serial port (ttyAMA0).
    let mut a = machine_args(opts, &["-M", "virt"], &["-cpu", "cortex-a57"], kvm, interactive);
    firmware_args(&mut a, aavmf);
    match boot {
        Boot::Initramfs { initrd, kernel, cmdline } => {
            a.extend(["-kernel".into(), kernel.display().to_string(), "-initrd".into(), initrd.display().to_string(), "-append".into(), cmdline.clone()]);
        }
        Boot::Iso(p) => {
            a.extend(["-device".into(), "virtio-scsi-pci,id=scsi0".into()]);
            a.extend(["-drive".into(), format!("file={},if=none,id=cd0,format=raw,media=cdrom,readonly=on", p.display())]);
            a.extend(["-device".into(), "scsi-cd,drive=cd0,bus=scsi0.0".into()]);
        }
        Boot::Disk(p) | Boot::Gpt(p) => {
            a.extend(["-drive".into(), format!("file={},if=none,id=disk0,format=raw,snapshot=on", p.display())]);
            a.extend(["-device".into(), "virtio-blk-pci,drive=disk0".into()]);
        }
    }
    a.extend(opts.qemu_extra.iter().cloned());
    a
}

/// The panic line, once the console shows a complete one.
fn panic_line(console: &[u8]) -> Option<String> {
    let at = console.windows(PANIC.len()).position(|w| w == PANIC)?;
    let end = console[at..].iter().position(|&b| b == b'\n')?;
    Some(String::from_utf8_lossy(&console[at..at + end]).trim_end().to_string())
}

/// Kills QEMU when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(qemu: (&str, &str), args: &[String], interactive: bool) -> Result<Guard> {
    use std::os::unix::process::CommandExt;
    let (bin, package) = qemu;
    let mut cmd = Command::new(bin);
    cmd.args(args);
    if interactive {
        // The console is still read (and echoed) by us, to stop on a kernel panic.
        cmd.stdin(Stdio::inherit()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    } else {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::other(format!("{bin} not found: install Debian's {package} package (scripts/install-test-deps.sh does)"))
        } else {
            Error::other(format!("starting {bin}: {e}"))
        }
    })?;
    Ok(Guard(child))
}

/// The last [`TAIL_LINES`] lines of `buf`, for messages.
fn tail(buf: &[u8]) -> String {
    let text = String::from_utf8_lossy(buf).replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Boot `output` and wait: for `--expect` text, or for QEMU to exit.
pub fn run(output: &Path, opts: &RunOptions) -> Result<()> {
    let (boot, arch) = plan_arch(output, opts)?;
    // KVM runs a guest of the host's own architecture only.
    let native = arch.uname() == std::env::consts::ARCH;
    let usable = || native && if arch == Arch::Amd64 { kvm_usable() } else { std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok() };
    let kvm = match opts.kvm {
        Kvm::Off => false,
        Kvm::On => {
            if !usable() {
                return Err(usage(format!("--kvm on, but /dev/kvm cannot run this {} guest here (it needs an {} host)", arch.uname(), arch.uname())));
            }
            true
        }
        Kvm::Auto => usable(),
    };
    let qemu = qemu_for(arch);
    let qemu_bin = qemu.0;
    // OVMF's variable store is written to by the firmware: give it a throwaway copy.
    let tmp = tempfile::tempdir().map_err(|e| Error::other(format!("temp dir: {e}")))?;
    if let (Boot::Gpt(p), false, Arch::Amd64) = (&boot, opts.uefi, arch) {
        eprintln!("stagebox: {} is a disk image: booting it with UEFI (OVMF); BIOS boot of disk images is not supported yet", p.display());
    }
    // arm64 machines boot ISOs and disks with UEFI only (AAVMF); `-kernel` needs none.
    let uefi = opts.uefi || matches!(boot, Boot::Gpt(_)) || (arch == Arch::Arm64 && !matches!(boot, Boot::Initramfs { .. }));
    let ovmf = if uefi {
        let (pairs, missing) = match arch {
            Arch::Amd64 => (OVMF_PAIRS, "UEFI boot needs OVMF: install Debian's ovmf package (/usr/share/OVMF/OVMF_CODE_4M.fd)"),
            Arch::Arm64 => (AAVMF_PAIRS, "arm64 UEFI boot needs AAVMF: install Debian's qemu-efi-aarch64 package (/usr/share/AAVMF/AAVMF_CODE.fd)"),
        };
        let (code, vars) = pairs.iter().find(|(c, _)| Path::new(c).is_file()).ok_or_else(|| usage(missing))?;
        let vars = if vars.is_empty() || !Path::new(vars).is_file() {
            None
        } else {
            let copy = tmp.path().join("VARS.fd");
            std::fs::copy(vars, &copy).at(&copy)?;
            Some(copy)
        };
        Some((PathBuf::from(code), vars))
    } else {
        None
    };
    let interactive = opts.expect.is_none();
    let args = qemu_args_for(&boot, arch, opts, kvm, ovmf.as_ref().map(|(c, v)| (c.as_path(), v.as_deref())), interactive);
    eprintln!("stagebox: {qemu_bin} {}", args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "));
    let mut guard = spawn(qemu, &args, interactive)?;
    let deadline = opts.timeout.map(|t| Instant::now() + t);

    let expect = opts.expect.clone().map(String::into_bytes);
    let (tx, rx) = std::sync::mpsc::channel::<Option<Vec<u8>>>();
    let mut out = guard.0.stdout.take().expect("piped stdout");
    let txo = tx.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 14];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if txo.send(Some(buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = txo.send(None);
    });
    let qemu_err = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    if let Some(mut err) = guard.0.stderr.take() {
        let qerr = qemu_err.clone();
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = err.read_to_end(&mut b);
            *qerr.lock().expect("stderr buffer") = b;
        });
    }

    let mut console: Vec<u8> = Vec::new();
    let mut searched = 0usize; // console[..searched] holds no match that ends there
    let longest = expect.as_ref().map_or(0, Vec::len).max(PANIC.len());
    let stdout = std::io::stdout();
    let panicked = |console: &[u8], guard: Guard| -> Error {
        drop(guard);
        let line = panic_line(console).unwrap_or_else(|| String::from_utf8_lossy(PANIC).into_owned());
        Error::other(format!("the kernel panicked: {line}\n--- console tail ---\n{}", tail(console)))
    };
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(Some(chunk)) => {
                if opts.echo || interactive {
                    let mut o = stdout.lock();
                    let _ = o.write_all(&chunk);
                    let _ = o.flush();
                }
                console.extend_from_slice(&chunk);
                let from = searched.saturating_sub(longest);
                if let Some(expect) = &expect {
                    if console[from..].windows(expect.len().max(1)).any(|w| w == expect.as_slice()) {
                        drop(guard);
                        eprintln!("\nstagebox: found {:?} on the console", String::from_utf8_lossy(expect));
                        return Ok(());
                    }
                }
                // Stop at a kernel panic once its line is complete (it names the cause).
                if panic_line(&console[from..]).is_some() {
                    return Err(panicked(&console, guard));
                }
                // Keep an incomplete panic line's start in the window searched next time.
                searched = match console[from..].windows(PANIC.len()).position(|w| w == PANIC) {
                    Some(i) => from + i + longest,
                    None => console.len(),
                };
                if console.len() > 2 * TAIL_BYTES {
                    let cut = (console.len() - TAIL_BYTES).min(searched.saturating_sub(longest));
                    console.drain(..cut);
                    searched -= cut;
                }
            }
            Ok(None) => {
                // Console closed: QEMU is gone.
                let st = guard.0.wait().map_err(|e| Error::other(format!("waiting for {qemu_bin}: {e}")))?;
                if console.windows(PANIC.len()).any(|w| w == PANIC) {
                    return Err(panicked(&console, guard));
                }
                std::thread::sleep(Duration::from_millis(50));
                let qe = String::from_utf8_lossy(&qemu_err.lock().expect("stderr buffer")).trim().to_string();
                let said = if qe.is_empty() { String::new() } else { format!("; it said: {qe}") };
                return match &expect {
                    None if st.success() => Ok(()),
                    None => Err(Error::other(format!("{qemu_bin} exited with {st}{said}"))),
                    Some(expect) => Err(Error::other(format!(
                        "{qemu_bin} exited ({st}) before {:?} appeared on the console{said}\n--- console tail ---\n{}",
                        String::from_utf8_lossy(expect),
                        tail(&console)
                    ))),
                };
            }
            Err(_) => {
                drop(guard);
                let what = match &expect {
                    Some(e) => format!(" waiting for {:?} on the console", String::from_utf8_lossy(e)),
                    None => String::new(),
                };
                return Err(Error::other(format!(
                    "timed out after {}s{what}\n--- console tail ---\n{}",
                    opts.timeout.unwrap_or_default().as_secs(),
                    tail(&console)
                )));
            }
        }
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=,./:+@".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_reads_kernel_and_cmdline_from_the_manifest() {
        let d = tempfile::tempdir().unwrap();
        let m = r#"{"box":"b","version":"1","source_date_epoch":0,"inputs":[],"outputs":[{"format":"initramfs","path":"b.cpio.gz","sha256":"","size":0},{"format":"kernel","path":"b.bzImage","sha256":"","size":0},{"format":"cmdline","path":"b.cmdline","sha256":"","size":0}]}"#;
        std::fs::write(d.path().join("manifest.json"), m).unwrap();
        std::fs::write(d.path().join("b.cpio.gz"), b"").unwrap();
        std::fs::write(d.path().join("b.cmdline"), b"console=ttyS0 quiet\n").unwrap();
        let opts = RunOptions { append: Some("rdinit=/bin/sh".into()), ..RunOptions::default() };
        let want = Boot::Initramfs {
            initrd: d.path().join("b.cpio.gz"),
            kernel: d.path().join("b.bzImage"),
            cmdline: "console=ttyS0 quiet rdinit=/bin/sh".into(),
        };
        assert_eq!(plan(&d.path().join("b.cpio.gz"), &opts).unwrap(), want);
        assert_eq!(plan(d.path(), &opts).unwrap(), want);
        let args = qemu_args(&want, &opts, false, None, false);
        let s = args.join(" ");
        assert!(s.contains("-serial stdio") && s.contains("-accel tcg") && s.contains("-no-reboot") && s.contains("-m 1G"), "{s}");

        std::fs::remove_file(d.path().join("manifest.json")).unwrap();
        let e = plan(&d.path().join("b.cpio.gz"), &RunOptions::default()).unwrap_err().to_string();
        assert!(e.contains("no kernel") && e.contains("--kernel"), "{e}");
    }

    #[test]
    fn an_iso_boots_as_a_cd_or_with_disk_as_a_raw_disk() {
        let d = tempfile::tempdir().unwrap();
        let iso = d.path().join("x.iso");
        std::fs::write(&iso, b"").unwrap();
        assert_eq!(plan(&iso, &RunOptions::default()).unwrap(), Boot::Iso(iso.clone()));
        let disk = RunOptions { disk: true, ..RunOptions::default() };
        assert_eq!(plan(&iso, &disk).unwrap(), Boot::Disk(iso.clone()));
        let s = qemu_args(&Boot::Disk(iso.clone()), &disk, false, None, false).join(" ");
        assert!(s.contains("format=raw,snapshot=on") && !s.contains("media=cdrom"), "{s}");
    }

    #[test]
    fn arm64_outputs_boot_on_virt_with_ttyama0() {
        let d = tempfile::tempdir().unwrap();
        let m = r#"{"box":"b","version":"1","source_date_epoch":0,"inputs":[],"outputs":[{"format":"initramfs","path":"b.cpio.gz","sha256":"","size":0},{"format":"kernel","path":"b.Image.gz","sha256":"","size":0,"arch":"arm64"},{"format":"iso","path":"b.iso","sha256":"","size":0,"arch":"arm64"},{"format":"disk","path":"b.img","sha256":"","size":0,"arch":"arm64"}]}"#;
        std::fs::write(d.path().join("manifest.json"), m).unwrap();
        for f in ["b.cpio.gz", "b.iso", "b.img"] {
            std::fs::write(d.path().join(f), b"").unwrap();
        }
        // A gzip kernel names no machine: the kernel record's arch does.
        std::fs::write(d.path().join("b.Image.gz"), [0x1f, 0x8b, 8, 0]).unwrap();
        let (boot, arch) = plan_arch(&d.path().join("b.cpio.gz"), &RunOptions::default()).unwrap();
        assert_eq!(arch, Arch::Arm64);
        assert!(matches!(&boot, Boot::Initramfs { cmdline, .. } if cmdline == "console=ttyAMA0"), "{boot:?}");
        let s = qemu_args_for(&boot, arch, &RunOptions::default(), false, None, false).join(" ");
        assert!(s.contains("-M virt") && s.contains("-cpu cortex-a57") && s.contains("-kernel"), "{s}");
        let (iso, arch) = plan_arch(&d.path().join("b.iso"), &RunOptions::default()).unwrap();
        assert_eq!((iso.clone(), arch), (Boot::Iso(d.path().join("b.iso")), Arch::Arm64));
        let fw = (Path::new("/c.fd"), Some(Path::new("/v.fd")));
        let s = qemu_args_for(&iso, arch, &RunOptions::default(), false, Some(fw), false).join(" ");
        assert!(s.contains("virtio-scsi-pci") && s.contains("scsi-cd,drive=cd0") && s.contains("unit=1,file=/v.fd"), "{s}");
        let (disk, arch) = plan_arch(&d.path().join("b.img"), &RunOptions::default()).unwrap();
        let s = qemu_args_for(&disk, arch, &RunOptions::default(), false, Some(fw), false).join(" ");
        assert!(s.contains("virtio-blk-pci,drive=disk0") && s.contains("snapshot=on"), "{s}");
        assert_eq!(qemu_for(arch).0, "qemu-system-aarch64");
    }

    #[test]
    fn tail_keeps_last_lines() {
        let text: String = (0..100).map(|i| format!("line {i}\r\n")).collect();
        let t = tail(text.as_bytes());
        assert!(t.starts_with("line 60") && t.ends_with("line 99"), "{t}");
    }
}
