//! The `[output.eif]` of a build: the box's kernel, a command line, ramdisks made from the tree
//! (one initramfs, or nitro-cli's bootstrap + customer pair), reproducible metadata and an
//! optional deterministic signature, written as `NAME.eif` with its PCRs in `NAME.pcrs` and in
//! the manifest record.
//!
//! Before anything is written, [`check_kernel`] (the kernel gate, run by `build` once the tree
//! is flattened) reads the kernel's config for what an enclave needs ([`ENCLAVE_NEEDS`], the
//! NSM driver) and warns about a clang/LLD-built kernel; `kernel_checks = "warn"` makes its
//! refusals warnings. Then, while emitting: the kernel is the form Nitro loads for the box's
//! platform ([`kernel_form`]: a bzImage on x86_64; on aarch64, Graviton, the uncompressed arm64
//! `Image`, which is what nitro-cli's `blobs/aarch64/` ship, never `Image.gz` or an EFI zboot
//! image), the EIF header's aarch64 flag follows the platform, the command line fits the
//! kernel's limit, an `initrd=ADDR,SIZE`
//! names the real ramdisk size (`initrd=ADDR,auto` is filled in; Nitro loads the ramdisks
//! itself, so most command lines need no `initrd=` at all), and the signing key matches its
//! certificate. Ramdisks are spilled to temp files in the output directory, never held whole
//! in memory.

use crate::digest::{Digest, HashWriter};
use crate::emit::eif::{self, format, ramdisk, sign, Data, Image};
use crate::error::{Error, IoContext, Result};
use crate::boot::kernel::{Kernel, KernelConfig};
use crate::boot::Job;
use crate::measure::{stage_bytes, stage_file, InputRecord, OutputRecord};
use crate::spec::{EifLayout, EifOutput, KernelChecks, Location};
use crate::tree::{Kind, Tree};
use std::io::{BufWriter, Read, Write};
use std::path::Path;

/// nitro-cli's default x86_64 command line (DESIGN §7), used when neither the box nor its
/// kernel definition sets one.
pub const NITRO_DEFAULT_CMDLINE: &str =
    "reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on";

/// nitro-cli's default aarch64 command line (`blobs/aarch64/cmdline`): no i8042 switches (there
/// is no PC keyboard controller), and the ramdisk as root.
pub const NITRO_DEFAULT_CMDLINE_AARCH64: &str = "reboot=k panic=30 pci=off nomodules console=ttyS0 random.trust_cpu=on root=/dev/ram0";

/// arm64's `COMMAND_LINE_SIZE` (arch/arm64/include/uapi/asm/setup.h) is 2048 with the NUL; an
/// arm64 Image has no header field that states its own.
pub const ARM64_CMDLINE_MAX: usize = 2047;

/// The default command line for a box building for OCI architecture `arch`.
pub fn default_cmdline(arch: &str) -> &'static str {
    if arch == "arm64" {
        NITRO_DEFAULT_CMDLINE_AARCH64
    } else {
        NITRO_DEFAULT_CMDLINE
    }
}

/// The EIF header flags for a box building for OCI architecture `arch`: aarch64 sets
/// [`format::FLAG_AARCH64`] (AWS's `EIF_HDR_ARCH_ARM64`, what nitro-cli sets for an arm64
/// image), anything else is x86_64.
pub fn header_flags(arch: &str) -> u16 {
    if arch == "arm64" {
        format::FLAG_AARCH64
    } else {
        0
    }
}

/// Whether `k` (the whole kernel file) is the form Nitro loads on `arch` (OCI names): a bzImage
/// on amd64; on arm64 a little-endian uncompressed `Image` (with or without its EFI stub: Nitro
/// jumps to the Image header, not through UEFI). Returns the longest command line it takes
/// and where that limit comes from, or why the kernel cannot be used.
pub fn kernel_form(k: &[u8], arch: &str) -> std::result::Result<(usize, &'static str), String> {
    use crate::kernelfmt::{identify, Form};
    let form = identify(&k[..k.len().min(crate::kernelfmt::HEAD)]);
    match arch {
        "amd64" => {
            format::bzimage::check(k).map_err(|m| match &form {
                Ok(f @ (Form::Arm64Image { .. } | Form::Zboot { .. } | Form::Gzip)) => {
                    format!("{}, but the box builds for linux/amd64, where an EIF needs an x86 bzImage kernel", f.describe())
                }
                _ => format!("{m}; an EIF needs an x86 bzImage kernel"),
            })?;
            Ok(format::bzimage::cmdline_max(k))
        }
        "arm64" => match form {
            Ok(Form::Arm64Image { big_endian: false, .. }) => Ok((ARM64_CMDLINE_MAX, "arm64's COMMAND_LINE_SIZE of 2048 bytes with the NUL")),
            Ok(Form::Arm64Image { big_endian: true, .. }) => Err("a big-endian arm64 Image: Graviton runs little-endian kernels only".into()),
            Ok(f @ (Form::Gzip | Form::Zboot { .. })) => Err(format!(
                "{}: Nitro on Graviton loads the uncompressed arm64 Image (nitro-cli ships blobs/aarch64/Image) and does not decompress a kernel; point `path` at the kernel's Image (arch/arm64/boot/Image), or gunzip an Image.gz",
                f.describe()
            )),
            Ok(f @ Form::BzImage) => Err(format!("{}, but the box builds for linux/arm64: an aarch64 EIF needs an arm64 Image kernel", f.describe())),
            Err(m) => Err(format!("{m}; an aarch64 EIF needs an arm64 Image kernel")),
        },
        other => Err(format!("Nitro Enclaves run x86_64 and aarch64 only, not {other}")),
    }
}

/// The release an uncompressed kernel carries in its `linux_banner` ("Linux version 6.1.0-…
/// (…) #1 SMP …"), for an arm64 Image, whose header does not point to it.
fn banner_release(k: &[u8]) -> Option<String> {
    const NEEDLE: &[u8] = b"Linux version ";
    let at = k.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let rest = &k[at..k.len().min(at + 256)];
    let end = rest.iter().position(|b| *b == 0 || *b == b' ' || *b == b'\n')?;
    let v = std::str::from_utf8(&rest[..end]).ok()?;
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic())).then(|| v.to_string())
}

/// What a Nitro enclave needs built into its kernel (`=y`), each with why. The same on x86_64
/// and on Graviton: both enclaves' consoles are 8250 UARTs (nitro-cli's `blobs/aarch64/Image.config`
/// sets `CONFIG_SERIAL_8250_CONSOLE=y` too).
pub const ENCLAVE_NEEDS: &[(&str, &str)] = &[
    ("CONFIG_VSOCKETS", "vsock is the enclave's only channel to its parent: the boot heartbeat nitro-cli waits for (CID 3, port 9000) and every service"),
    ("CONFIG_VIRTIO_VSOCKETS", "the enclave's vsock device is a virtio one; without its driver AF_VSOCK has no transport"),
    ("CONFIG_VIRTIO_MMIO", "Nitro attaches the enclave's devices over virtio-mmio (there is no PCI: pci=off), so without it the vsock device is never found"),
    ("CONFIG_SERIAL_8250_CONSOLE", "the enclave's console (ttyS0, what `nitro-cli console` shows) is an 8250 UART"),
    ("CONFIG_BLK_DEV_INITRD", "Nitro loads the EIF's ramdisks as the initramfs: without it there is no root file system"),
    ("CONFIG_DEVTMPFS", "/dev/nsm and /dev/console appear only through devtmpfs (nothing in an enclave runs udev)"),
];

/// Why the NSM driver matters.
const NSM_WHY: &str = "the Nitro Secure Module driver gives /dev/nsm: attestation documents, PCRs and the enclave's entropy";

/// The report hashi's maintainers filed on StageX's clang/LLD-built nitro kernel.
pub const CLANG_REPORT: &str = "MystenLabs/hashi PR #789 reports StageX's clang/LLD-built linux-nitro (2026.01.0 on) never runs on Nitro (blank console, then nitro-cli's E36 VsockTimeout) while a gcc build of the same config boots; root cause unconfirmed";

/// Where the box's ramdisks carry the NSM module, if they do: `nsm.ko` (also compressed)
/// anywhere in the tree, or for the nitro-cli layout the kernel image's `/nsm.ko` (which its
/// bootstrap ramdisk takes).
fn nsm_module(tree: &Tree, kernel: &Kernel, layout: EifLayout) -> Option<String> {
    if layout == EifLayout::NitroCli && kernel.tree.lookup(b"nsm.ko").is_ok() {
        return Some("/nsm.ko (bootstrap ramdisk, from the kernel image)".into());
    }
    tree.walk()
        .find(|(p, n)| {
            matches!(n.kind, Kind::File { .. })
                && [&b"nsm.ko"[..], b"nsm.ko.xz", b"nsm.ko.zst", b"nsm.ko.gz"].iter().any(|f| p == f || p.ends_with(&[b"/", *f].concat()))
        })
        .map(|(p, _)| format!("/{}", String::from_utf8_lossy(p)))
}

/// The gate's findings for a kernel config: (problems, warnings). `nsm_module` is where the
/// ramdisks carry `nsm.ko`, if they do; `cmdline` the command line the EIF will hold.
pub fn kernel_findings(cfg: &KernelConfig, cmdline: &str, nsm_module: Option<&str>) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let state = |o: &str| match cfg.options.get(o).map(String::as_str) {
        Some("m") => "a module (=m), not built in: nothing loads it before your init runs",
        _ => "not set",
    };
    for (option, why) in ENCLAVE_NEEDS {
        if !cfg.builtin(option) {
            problems.push(format!("{option} is {}: {why}", state(option)));
        }
    }
    let no_module_loading = cmdline.split_ascii_whitespace().any(|w| w == "nomodule");
    if !cfg.builtin("CONFIG_NSM") {
        match (cfg.module("CONFIG_NSM"), nsm_module) {
            (true, Some(_)) if !cfg.builtin("CONFIG_MODULES") => {
                problems.push(format!("CONFIG_NSM is a module but CONFIG_MODULES is not set, so it cannot be loaded: {NSM_WHY}"))
            }
            (true, Some(_)) if no_module_loading => problems.push(format!(
                "CONFIG_NSM is a module but `nomodule` on the command line forbids loading any: {NSM_WHY}"
            )),
            (true, Some(_)) => {}
            (true, None) => problems.push(format!(
                "CONFIG_NSM is a module (=m) but no nsm.ko is in the ramdisks; nothing loads modules on its own in an enclave (nitro-cli's `nomodules` is not a kernel switch, and there is no udev), so your init must insmod one the box carries: {NSM_WHY}"
            )),
            (false, _) => problems.push(format!("CONFIG_NSM is not set: {NSM_WHY}")),
        }
    }
    let mut warnings = Vec::new();
    let clang = ["CONFIG_CC_IS_CLANG", "CONFIG_LD_IS_LLD"].into_iter().filter(|o| cfg.builtin(o)).collect::<Vec<_>>();
    if !clang.is_empty() {
        warnings.push(format!("{} set: this kernel was built with clang/LLD; {CLANG_REPORT}", clang.join(" and ")));
    }
    (problems, warnings)
}

/// The kernel gate of `[output.eif]`: the kernel's config (its file, else its IKCONFIG) checked
/// for what an enclave needs. `kernel_checks = "strict"` refuses the box naming every missing
/// option; `"warn"` turns them into warnings. Returns the warnings to print.
/// `arch` is the box's platform architecture (OCI names).
pub fn check_kernel(kernel: &Kernel, o: &EifOutput, tree: &Tree, at: &Location, arch: &str) -> Result<Vec<String>> {
    let name = &kernel.spec.def.name;
    let cmdline = if kernel.spec.cmdline.trim().is_empty() { default_cmdline(arch) } else { kernel.spec.cmdline.as_str() };
    let (problems, mut warnings) = match &kernel.config {
        Some(cfg) => kernel_findings(cfg, cmdline, nsm_module(tree, kernel, o.layout).as_deref()),
        None => (
            vec![format!(
                "it has no config to check: no {} in {} and no config built into the kernel (CONFIG_IKCONFIG); set `config` in the kernel definition",
                kernel.spec.def.config, kernel.image.reference.text
            )],
            Vec::new(),
        ),
    };
    if problems.is_empty() {
        return Ok(warnings);
    }
    let source = if kernel.config.is_some() { format!(" ({})", kernel.config_source()) } else { String::new() };
    match o.kernel_checks {
        KernelChecks::Strict => Err(at.error(format!(
            "kernel {name:?} cannot run a Nitro enclave{source}:\n  - {}\nuse a kernel built for Nitro (kernels/nitro.toml), or set `kernel_checks = \"warn\"` in [output.eif] for a test kernel",
            problems.join("\n  - ")
        ))),
        KernelChecks::Warn => {
            warnings.extend(problems.into_iter().map(|p| format!("kernel {name:?}{source}: {p} (kernel_checks = \"warn\")")));
            Ok(warnings)
        }
    }
}

/// Largest kernel read into memory (StageX's nitro bzImage is about 10 MiB).
const MAX_KERNEL: u64 = 256 << 20;

/// Apply the `initrd=ADDR,SIZE` rule to `cmdline` for ramdisks of `total` bytes: `auto` becomes
/// the size; a number must equal it.
pub fn resolve_initrd(cmdline: &str, total: u64) -> Result<String, String> {
    let mut words = Vec::new();
    for w in cmdline.split_ascii_whitespace() {
        match w.strip_prefix("initrd=").and_then(|v| v.split_once(',')) {
            Some((addr, "auto")) => words.push(format!("initrd={addr},{total}")),
            Some((_, size)) => {
                let n = parse_size(size).ok_or_else(|| format!("initrd= size {size:?} is not a number or `auto`"))?;
                if n != total {
                    return Err(format!(
                        "{w} names {n} bytes but the ramdisks are {total} bytes: write `initrd={},auto` to have it filled in, or drop it (Nitro loads the ramdisks itself)",
                        w.trim_start_matches("initrd=").split(',').next().unwrap_or("")
                    ));
                }
                words.push(w.to_string());
            }
            None => words.push(w.to_string()),
        }
    }
    Ok(words.join(" "))
}

fn parse_size(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `Entrypoint` + `Cmd` and `Env` of an OCI image config.
fn config_list(config: Option<&serde_json::Value>, keys: &[&str]) -> Vec<String> {
    let c = config.and_then(|c| c.get("config"));
    keys.iter()
        .filter_map(|k| c.and_then(|c| c.get(*k)).and_then(|v| v.as_array()))
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The bytes of a regular file at `path` in `tree` (symlinks followed), or why not.
fn tree_file(tree: &Tree, path: &str, executable: bool) -> Result<Vec<u8>, String> {
    let (key, node) = tree.lookup(path.as_bytes())?;
    let Kind::File { content, .. } = node.kind else {
        return Err(format!("/{} is not a regular file", String::from_utf8_lossy(&key)));
    };
    if executable && node.meta.mode & 0o111 == 0 {
        return Err(format!("/{} is not executable (mode {:04o})", String::from_utf8_lossy(&key), node.meta.mode));
    }
    let mut v = Vec::new();
    tree.open(&content).take(MAX_KERNEL).read_to_end(&mut v).map_err(|e| e.to_string())?;
    Ok(v)
}

/// A temp file in `dir` holding what `f` writes.
fn spill(dir: &Path, f: impl FnOnce(&mut BufWriter<&std::fs::File>) -> std::io::Result<()>) -> Result<(std::fs::File, u64)> {
    let file = tempfile::tempfile_in(dir).at(dir)?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, &file);
        f(&mut w).at(dir)?;
        w.flush().at(dir)?;
    }
    let len = file.metadata().at(dir)?.len();
    Ok((file, len))
}

/// Write `NAME.eif` and `NAME.pcrs` into `out`. `config` is the top image's config (for
/// `cmd`/`env` defaults); `at` is the `[output.eif]` table; `arch` the box's platform
/// architecture (OCI names: `amd64`, `arm64`).
pub fn emit(job: &Job, o: &EifOutput, kernel: &Kernel, config: Option<&serde_json::Value>, arch: &str) -> Result<(Vec<OutputRecord>, Vec<InputRecord>)> {
    let Job { tree, spec, out, sde, quiet, .. } = *job;
    let at: Location = spec.eif_at.clone().unwrap_or_else(|| kernel.spec.at.clone());
    let kref = &kernel.image.reference.text;
    let in_kernel = |m: String| Error::Resolve { reference: kref.clone(), message: format!("kernel {}: {m}", kernel.spec.def.path) };

    // The kernel: the form Nitro loads on this architecture, read whole (it is measured, CRC'd
    // and written).
    if kernel.kernel.len > MAX_KERNEL {
        return Err(in_kernel(format!("{} bytes is too large for a kernel", kernel.kernel.len)));
    }
    let mut kbytes = Vec::with_capacity(kernel.kernel.len as usize);
    kernel.tree.open(&kernel.kernel).read_to_end(&mut kbytes).map_err(|e| in_kernel(e.to_string()))?;
    let (max, why) = kernel_form(&kbytes, arch).map_err(in_kernel)?;

    // Ramdisks.
    let mut inputs = Vec::new();
    let mut rd_files = Vec::new();
    let mut rd_bytes: Vec<Vec<u8>> = Vec::new();
    match o.layout {
        EifLayout::Initramfs => {
            rd_files.push(spill(out, |w| crate::emit::cpio::write(tree, sde, w).map(|_| ()))?);
        }
        EifLayout::NitroCli => {
            let Some(init_path) = &o.bootstrap_init else {
                return Err(at.error(
                    "layout = \"nitro-cli\" needs `bootstrap_init = \"/path\"`: the static init binary of the bootstrap ramdisk (nitro-cli ships it as `init`; add it to the box with a layer and name its path here)",
                ));
            };
            let init = tree_file(tree, init_path, true).map_err(|m| at.error(format!("bootstrap_init {init_path:?}: {m}")))?;
            let nsm = match kernel.tree.lookup(b"nsm.ko") {
                Ok(_) => Some(tree_file(&kernel.tree, "/nsm.ko", false).map_err(|m| in_kernel(format!("nsm.ko: {m}")))?),
                Err(_) => None,
            };
            let cmd = o.cmd.clone().unwrap_or_else(|| config_list(config, &["Entrypoint", "Cmd"]));
            if cmd.is_empty() {
                return Err(at.error(
                    "layout = \"nitro-cli\" needs a command: the image config has no Entrypoint or Cmd; set `cmd = [\"/bin/app\", ...]` in [output.eif]",
                ));
            }
            let env = o.env.clone().unwrap_or_else(|| config_list(config, &["Env"]));
            let cmd = ramdisk::lines(&cmd, "cmd").map_err(|m| at.error(m))?;
            let env = ramdisk::lines(&env, "env").map_err(|m| at.error(m))?;
            let mut rd0 = Vec::new();
            ramdisk::write_bootstrap(sde, &init, nsm.as_deref(), &mut rd0).at(out)?;
            rd_bytes.push(rd0);
            rd_files.push(spill(out, |w| ramdisk::write_customer(tree, sde, &cmd, &env, w))?);
        }
    }
    let mut ramdisks: Vec<Data> = rd_bytes.iter().map(|b| Data::Bytes(b)).collect();
    ramdisks.extend(rd_files.iter().map(|(file, len)| Data::File { file, len: *len }));
    let total: u64 = ramdisks.iter().map(Data::len).sum();

    // The command line: the box's, else the definition's, else nitro-cli's default.
    let cmdline = if kernel.spec.cmdline.trim().is_empty() { default_cmdline(arch).to_string() } else { kernel.spec.cmdline.trim().to_string() };
    let cmdline = resolve_initrd(&cmdline, total).map_err(|m| kernel.spec.at.error(m))?;
    if cmdline.len() > max {
        return Err(kernel.spec.at.error(format!(
            "the kernel command line is {} bytes; this kernel takes at most {max} ({why}), and Nitro would cut it off",
            cmdline.len()
        )));
    }

    let release = format::bzimage::version(&kbytes).or_else(|| banner_release(&kbytes));
    let metadata = format::Metadata {
        image_name: spec.name.clone(),
        image_version: spec.version.clone(),
        build: format::BuildInfo {
            build_time: format::build_time(sde),
            build_tool: "stagebox".into(),
            build_tool_version: env!("CARGO_PKG_VERSION").into(),
            operating_system: config.and_then(|c| c.get("os")).and_then(|v| v.as_str()).unwrap_or("linux").to_string(),
            kernel_version: release.as_deref().and_then(|r| r.split_whitespace().next()).unwrap_or("unknown").to_string(),
        },
        docker_info: serde_json::Value::Null,
        custom: serde_json::Value::Null,
    }
    .to_json();

    let img = Image {
        flags: header_flags(arch),
        default_mem: format::DEFAULT_MEM,
        default_cpus: format::DEFAULT_CPUS,
        kernel: Data::Bytes(&kbytes),
        cmdline: cmdline.as_bytes(),
        metadata: &metadata,
        ramdisks,
    };
    let mut pcrs = eif::measure(&img).map_err(|e| at.error(e.to_string()))?;

    let signature = match (&o.signing_certificate, &o.signing_key) {
        (Some(c), Some(k)) => {
            let (cp, kp) = (spec.dir.join(c), spec.dir.join(k));
            let cert = std::fs::read(&cp).map_err(|e| at.error(format!("signing_certificate {c:?}: {e}")))?;
            let key = std::fs::read(&kp).map_err(|e| at.error(format!("signing_key {k:?}: {e}")))?;
            let id = sign::SigningIdentity::from_pem(&cert, &key).map_err(|m| at.error(format!("{m} ({c}, {k})")))?;
            // Checked against the clock as well as SOURCE_DATE_EPOCH: nitro-cli checks it when
            // the enclave starts. Only the refusal depends on the clock, never the bytes.
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let window = sign::validity(&id.cert_der).map_err(|m| at.error(format!("{m} ({c})")))?;
            if let Some(w) = sign::check_validity(window, sde, now).map_err(|m| at.error(format!("signing_certificate {c:?}: {m}")))? {
                eprintln!("stagebox: warning: signing_certificate {c:?}: {w}");
            }
            inputs.push(InputRecord { reference: format!("file:{c}"), digest: Digest::of_bytes(&cert).to_string() });
            pcrs = pcrs.with_certificate(&id.cert_der);
            Some(id.signature_section(&pcrs.pcr0))
        }
        _ => None,
    };

    let name = format!("{}.eif", spec.name);
    let mut rec = stage_file(out, "eif", name.clone(), |file, path| {
        let mut hw = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
        eif::write(&img, signature.as_deref(), &mut hw).at(path)?;
        let (d, size, mut bw) = hw.finish_with_inner();
        bw.flush().at(path)?;
        Ok(Some((d, size)))
    })?;
    rec.pcrs = Some(pcrs.to_map());
    let size = rec.size;
    let prec = stage_bytes(out, "pcrs", format!("{}.pcrs", spec.name), pcrs.to_pcrs_file().as_bytes())?;
    if !quiet {
        for (k, v) in pcrs.entries() {
            eprintln!("{name} {k} {}", hex::encode(v));
        }
        eprintln!(
            "{name}: run it with nitro-cli run-enclave --memory {} or more (nitro-cli wants {}× the EIF's {size} bytes)",
            format::min_memory_mib(size),
            format::MEMORY_EIF_SIZE_RATIO
        );
    }
    Ok((vec![rec, prec], inputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &str = "CONFIG_BLK_DEV_INITRD=y\nCONFIG_VSOCKETS=y\nCONFIG_VIRTIO_VSOCKETS=y\nCONFIG_VIRTIO_MMIO=y\nCONFIG_SERIAL_8250_CONSOLE=y\nCONFIG_DEVTMPFS=y\nCONFIG_MODULES=y\n";

    #[test]
    fn kernel_gate_findings() {
        let cfg = |extra: &str| KernelConfig::parse(&format!("{ALL}{extra}"));
        assert_eq!(kernel_findings(&cfg("CONFIG_NSM=y\n"), NITRO_DEFAULT_CMDLINE, None), (vec![], vec![]));
        // NSM as a module: fine when the ramdisk carries it (nitro-cli's `nomodules` is no kernel
        // switch), refused without it or with `nomodule`, which forbids loading any.
        let m = cfg("CONFIG_NSM=m\n");
        assert!(kernel_findings(&m, NITRO_DEFAULT_CMDLINE, Some("/nsm.ko")).0.is_empty());
        assert!(kernel_findings(&m, NITRO_DEFAULT_CMDLINE, None).0[0].contains("no nsm.ko is in the ramdisks"));
        assert!(kernel_findings(&m, "console=ttyS0 nomodule", Some("/nsm.ko")).0[0].contains("`nomodule`"));
        let (p, _) = kernel_findings(&KernelConfig::parse("CONFIG_VSOCKETS=m\n"), "", None);
        assert_eq!(p.len(), ENCLAVE_NEEDS.len() + 1, "{p:?}");
        assert!(p[0].starts_with("CONFIG_VSOCKETS is a module") && p.last().unwrap().starts_with("CONFIG_NSM is not set"), "{p:?}");
        let (p, w) = kernel_findings(&cfg("CONFIG_NSM=y\nCONFIG_CC_IS_CLANG=y\n"), "", None);
        assert!(p.is_empty() && w.len() == 1 && w[0].contains("CONFIG_CC_IS_CLANG set") && w[0].contains("hashi PR #789"), "{w:?}");
    }

    #[test]
    fn kernel_form_per_architecture() {
        let mut image = vec![0u8; 8192];
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        image[5000..5030].copy_from_slice(b"Linux version 6.1.0-1-arm64 (d");
        assert_eq!(kernel_form(&image, "arm64").unwrap().0, ARM64_CMDLINE_MAX);
        assert_eq!(banner_release(&image).as_deref(), Some("6.1.0-1-arm64"));
        let e = kernel_form(&image, "amd64").unwrap_err();
        assert!(e.contains("an arm64 Image without an EFI stub, but the box builds for linux/amd64"), "{e}");
        let mut be = image.clone();
        be[24] = 1;
        assert!(kernel_form(&be, "arm64").unwrap_err().contains("big-endian"));
        let e = kernel_form(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0], "arm64").unwrap_err();
        assert!(e.contains("Image.gz") && e.contains("uncompressed arm64 Image"), "{e}");
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(kernel_form(&bz, "arm64").unwrap_err().contains("x86 bzImage, but the box builds for linux/arm64"));
        assert!(kernel_form(&bz, "amd64").is_ok());
        assert!(kernel_form(&bz, "riscv64").unwrap_err().contains("x86_64 and aarch64 only"));
        assert_eq!((header_flags("arm64"), header_flags("amd64")), (format::FLAG_AARCH64, 0));
        assert!(!default_cmdline("arm64").contains("i8042") && default_cmdline("amd64").contains("i8042"));
    }

    #[test]
    fn initrd_sizes_come_from_the_ramdisks() {
        assert_eq!(resolve_initrd("console=ttyS0", 5).unwrap(), "console=ttyS0");
        assert_eq!(resolve_initrd("a initrd=0x2000000,auto b", 1234).unwrap(), "a initrd=0x2000000,1234 b");
        assert_eq!(resolve_initrd("initrd=0x2000000,0x10", 16).unwrap(), "initrd=0x2000000,0x10");
        let e = resolve_initrd("initrd=0x2000000,3228672", 99).unwrap_err();
        assert!(e.contains("3228672 bytes but the ramdisks are 99") && e.contains("initrd=0x2000000,auto"), "{e}");
    }
}
