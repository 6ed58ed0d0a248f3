//! The `[output.eif]` of a build: the box's kernel, a command line, ramdisks made from the tree
//! (one initramfs, or nitro-cli's bootstrap + customer pair), reproducible metadata and an
//! optional deterministic signature, written as `NAME.eif` with its PCRs in `NAME.pcrs` and in
//! the manifest record.
//!
//! Checks before anything is written: the kernel is a bzImage (`HdrS` at 0x202: Nitro boots
//! nothing else on x86_64), the command line fits the kernel's limit, an `initrd=ADDR,SIZE`
//! names the real ramdisk size (`initrd=ADDR,auto` is filled in; Nitro loads the ramdisks
//! itself, so most command lines need no `initrd=` at all), and the signing key matches its
//! certificate. Ramdisks are spilled to temp files in the output directory, never held whole
//! in memory.

use crate::digest::{Digest, HashWriter};
use crate::emit::eif::{self, format, ramdisk, sign, Data, Image};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::AtomicFile;
use crate::boot::kernel::Kernel;
use crate::boot::Job;
use crate::measure::{InputRecord, OutputRecord};
use crate::spec::{EifLayout, EifOutput, Location};
use crate::tree::{Kind, Tree};
use std::io::{BufWriter, Read, Write};
use std::path::Path;

/// nitro-cli's default x86_64 command line (DESIGN §7), used when neither the box nor its
/// kernel definition sets one.
pub const NITRO_DEFAULT_CMDLINE: &str =
    "reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on";

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
/// `cmd`/`env` defaults); `at` is the `[output.eif]` table.
pub fn emit(job: &Job, o: &EifOutput, kernel: &Kernel, config: Option<&serde_json::Value>) -> Result<(Vec<OutputRecord>, Vec<InputRecord>)> {
    let Job { tree, spec, out, sde, quiet, .. } = *job;
    let at: Location = spec.eif_at.clone().unwrap_or_else(|| kernel.spec.at.clone());
    let kref = &kernel.image.reference.text;
    let in_kernel = |m: String| Error::Resolve { reference: kref.clone(), message: format!("kernel {}: {m}", kernel.spec.def.path) };

    // The kernel: a bzImage, read whole (it is measured, CRC'd and written).
    if kernel.kernel.len > MAX_KERNEL {
        return Err(in_kernel(format!("{} bytes is too large for a kernel", kernel.kernel.len)));
    }
    let mut kbytes = Vec::with_capacity(kernel.kernel.len as usize);
    kernel.tree.open(&kernel.kernel).read_to_end(&mut kbytes).map_err(|e| in_kernel(e.to_string()))?;
    format::bzimage::check(&kbytes).map_err(|m| in_kernel(format!("{m}; an EIF needs an x86 bzImage kernel")))?;

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
    let cmdline = if kernel.spec.cmdline.trim().is_empty() { NITRO_DEFAULT_CMDLINE.to_string() } else { kernel.spec.cmdline.trim().to_string() };
    let cmdline = resolve_initrd(&cmdline, total).map_err(|m| kernel.spec.at.error(m))?;
    let (max, why) = format::bzimage::cmdline_max(&kbytes);
    if cmdline.len() > max {
        return Err(kernel.spec.at.error(format!(
            "the kernel command line is {} bytes; this kernel takes at most {max} ({why}), and Nitro would cut it off",
            cmdline.len()
        )));
    }

    let release = format::bzimage::version(&kbytes);
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
        flags: 0,
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
            inputs.push(InputRecord { reference: format!("file:{c}"), digest: Digest::of_bytes(&cert).to_string() });
            pcrs = pcrs.with_certificate(&id.cert_der);
            Some(id.signature_section(&pcrs.pcr0))
        }
        _ => None,
    };

    let name = format!("{}.eif", spec.name);
    let path = out.join(&name);
    let mut af = AtomicFile::create(&path)?;
    let (d, size) = {
        let mut hw = HashWriter::new(BufWriter::with_capacity(1 << 20, af.file()));
        eif::write(&img, signature.as_deref(), &mut hw).at(&path)?;
        let (d, size, mut bw) = hw.finish_with_inner();
        bw.flush().at(&path)?;
        (d, size)
    };
    af.commit()?;
    let mut rec = OutputRecord { format: "eif".into(), path: name.clone(), sha256: d.hex().to_string(), size, pcrs: None, ..Default::default() };
    rec.pcrs = Some(pcrs.to_map());

    let pname = format!("{}.pcrs", spec.name);
    let text = pcrs.to_pcrs_file();
    crate::fsutil::write_atomic(&out.join(&pname), text.as_bytes())?;
    let prec = OutputRecord { format: "pcrs".into(), path: pname, sha256: Digest::of_bytes(text.as_bytes()).hex().to_string(), size: text.len() as u64, pcrs: None, ..Default::default() };
    if !quiet {
        for (k, v) in pcrs.entries() {
            eprintln!("{name} {k} {}", hex::encode(v));
        }
    }
    Ok((vec![rec, prec], inputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_sizes_come_from_the_ramdisks() {
        assert_eq!(resolve_initrd("console=ttyS0", 5).unwrap(), "console=ttyS0");
        assert_eq!(resolve_initrd("a initrd=0x2000000,auto b", 1234).unwrap(), "a initrd=0x2000000,1234 b");
        assert_eq!(resolve_initrd("initrd=0x2000000,0x10", 16).unwrap(), "initrd=0x2000000,0x10");
        let e = resolve_initrd("initrd=0x2000000,3228672", 99).unwrap_err();
        assert!(e.contains("3228672 bytes but the ramdisks are 99") && e.contains("initrd=0x2000000,auto"), "{e}");
    }
}
