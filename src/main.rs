//! The `stagebox` command: parse arguments, call the library, print results, exit with
//! 0 (success), 1 (build or verification failure) or 2 (usage or box-file error).
//!
//! Shell completions (`clap_complete`) and the man page (`clap_mangen`) are generated from
//! the same clap definition, so they never drift from the options.

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Compose pinned StageX OCI images into reproducible artifacts.
#[derive(Parser)]
#[command(name = "stagebox", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where images come from: the options every command that reads images shares.
#[derive(clap::Args)]
struct StoreArgs {
    /// Content store (default: $STAGEBOX_CACHE, else ~/.cache/stagebox).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Platform to pick from multi-platform images (default: linux/amd64).
    #[arg(long)]
    platform: Option<stagebox::source::Platform>,
    /// Use the content store only; never contact a registry (lists what is missing).
    #[arg(long)]
    offline: bool,
    /// Trust the CA certificates (*.crt) in DIR for every registry, instead of
    /// /etc/containers/certs.d/HOST:PORT and ~/.config/containers/certs.d/HOST:PORT.
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// Allow plain HTTP to HOST[:PORT] when HTTPS fails (a HOST without port: any port).
    /// Repeatable.
    #[arg(long, value_name = "HOST")]
    insecure_registry: Vec<String>,
}

impl StoreArgs {
    /// Hand the registry options to the library (and to any build this process starts) through
    /// the environment it reads: $STAGEBOX_CERT_DIR, $STAGEBOX_INSECURE_REGISTRIES.
    fn export_registry_env(&self) {
        use stagebox::source::registry::{ENV_CERT_DIR, ENV_INSECURE};
        if let Some(d) = &self.cert_dir {
            std::env::set_var(ENV_CERT_DIR, d);
        }
        if !self.insecure_registry.is_empty() {
            let mut list: Vec<String> = std::env::var(ENV_INSECURE).ok().into_iter().filter(|v| !v.is_empty()).collect();
            list.extend(self.insecure_registry.iter().cloned());
            std::env::set_var(ENV_INSECURE, list.join(","));
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Build every output a box file names.
    Build {
        /// The box file (TOML).
        box_file: PathBuf,
        /// Output directory (default: out/ beside the box file).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        /// Threads for reading layers (0 = one per core). Never changes the output.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// No progress display and no summary line on stderr.
        #[arg(long, short)]
        quiet: bool,
        /// Fail (exit 2) when BOX.lock is missing, incomplete or stale.
        #[arg(long)]
        locked: bool,
        /// Build everything twice, the second time under another umask, TZ, locale, working
        /// directory, thread count and file order; fail (exit 1) naming the first differing
        /// output, byte and entry; publish the outputs only when both builds agree.
        #[arg(long)]
        check: bool,
        /// Internal: the second build of --check (dir layers read from copies in DIR).
        #[arg(long, hide = true, value_name = "DIR")]
        check_variant: Option<PathBuf>,
        /// Print manifest.json's content (outputs, sha256, sizes, PCRs) and the output
        /// directory as JSON on stdout, instead of `sha256  path` lines.
        #[arg(long)]
        json: bool,
    },
    /// Show which entries or sections of two outputs of one format differ and how (an ISO's
    /// or disk image's files and partitions, images inside them), or of two output
    /// directories, or two manifests. Exit 0 when identical, 1 when they differ (the
    /// differences on stdout), 2 on errors.
    Diff {
        /// The first output (a file, an OCI layout or output directory, or a manifest).
        a: PathBuf,
        /// The second output, of the same format.
        b: PathBuf,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
    },
    /// Show what an image reference, OCI layout or tarball holds.
    Inspect {
        /// oci:DIR[:TAG|@DIGEST], docker-archive:FILE, a registry reference, an OCI layout
        /// directory, or any output file (format found by content).
        target: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// List the file tree instead: an image's layers flattened, or what an output holds
        /// (an ISO's or disk image's partitions included).
        #[arg(long)]
        files: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Pin every image reference of a box in BOX.lock.
    Lock {
        box_file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// A StageX digest list (`<hex> <stage>-<name>` lines, e.g. digests/core.txt) whose
        /// entries pin `stagex/<stage>-<name>` references. Repeatable.
        #[arg(long, value_name = "FILE")]
        import_digests: Vec<PathBuf>,
        /// Write nothing; resolve every reference again and report each pin as current,
        /// stale or missing (exit 1 unless all are current). With --import-digests, compare
        /// `stagex/...` pins with the digest lists instead (offline).
        #[arg(long)]
        check: bool,
        /// Machine-readable: the pins written (or, with --check, each reference's status).
        #[arg(long)]
        json: bool,
    },
    /// Fill the content store with every image the box files need (layers, pallets, kernel,
    /// bootloaders; pinned by the box or BOX.lock), or with the images named, so that a later
    /// `build --offline` needs no network. Prints `digest  reference` per image.
    Pull {
        /// Box files (*.toml) and image references.
        #[arg(required = true, value_name = "BOX.toml|REF")]
        targets: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
        /// Machine-readable: the images now in the store.
        #[arg(long)]
        json: bool,
    },
    /// Check the signatures of a registry image (or of a local oci: copy of one) against a
    /// keyring and a quorum of distinct keys; report who signed what. Exit 0 only when the
    /// quorum holds.
    Verify {
        /// A registry reference, e.g. stagex/core-busybox@sha256:<manifest digest>, or a local
        /// copy: oci:DIR[:TAG|@DIGEST], oci-archive:FILE.
        reference: String,
        /// Trusted OpenPGP public keys: a file (armored or binary, many keys) or a directory.
        #[arg(long)]
        keyring: PathBuf,
        /// Signature lookaside: a directory, or an https:// base URL.
        #[arg(long, value_name = "DIR|URL")]
        signatures: String,
        /// How many distinct trusted keys must have signed.
        #[arg(long, value_name = "M")]
        quorum: usize,
        /// Fail on any bad signature (damaged, not verifying, over another digest) even when
        /// the quorum is met; without it they are reported and do not count.
        #[arg(long)]
        strict: bool,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
        /// For a local copy (oci:DIR, oci-archive:FILE): the repository it was signed as,
        /// e.g. stagex/core-busybox (default: the one the lookaside directory has signatures
        /// of this digest for).
        #[arg(long, value_name = "NAME")]
        repository: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check that at least M distinct trusted reproducers signed a statement attesting exactly
    /// the outputs in OUT_DIR, and that no trusted reproducer attests different outputs for
    /// the same box and inputs (a split view). Exit 0 only then.
    VerifyBuild {
        /// The output directory of a build with [output.provenance] (holds manifest.json).
        out_dir: PathBuf,
        /// Trusted OpenPGP public keys of the reproducers: a file or a directory.
        #[arg(long)]
        keyring: Option<PathBuf>,
        /// Reproducers' signature files: a directory (any *.sig, *.asc, *.gpg; or
        /// DIR/<box>/<version>/), or an https:// base of <box>/<version>/<FINGERPRINT>.sig.
        #[arg(long, value_name = "DIR|URL")]
        signatures: Option<String>,
        /// How many distinct trusted keys must attest the outputs.
        #[arg(long, value_name = "M")]
        quorum: Option<usize>,
        /// The box file built: checked against the statement; its [policy.outputs] gives what
        /// the options above leave out.
        #[arg(long = "box", value_name = "BOX.toml")]
        box_file: Option<PathBuf>,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
    },
    /// Boot a built initramfs (with its box's kernel), ISO or disk image in QEMU, with the
    /// serial console on stdio.
    Run {
        /// NAME.cpio[.gz|.zst|.xz], NAME.iso, NAME.img, or an output directory.
        output: PathBuf,
        /// Guest memory.
        #[arg(long, default_value = "1G")]
        memory: String,
        /// Boot with UEFI firmware (OVMF) instead of BIOS (SeaBIOS). A disk image always
        /// boots with UEFI (BIOS boot of disk images is not supported yet).
        #[arg(long)]
        uefi: bool,
        /// Attach an ISO as a raw disk (as if written to a USB stick; snapshot=on, never
        /// modified) instead of a CD.
        #[arg(long)]
        disk: bool,
        /// Use KVM: auto (when /dev/kvm is usable), on or off.
        #[arg(long, default_value = "auto")]
        kvm: stagebox::cmd::run::Kvm,
        /// Exit 0 as soon as TEXT appears on the console (non-zero on timeout).
        #[arg(long, value_name = "TEXT")]
        expect: Option<String>,
        /// Stop QEMU and fail after this many seconds.
        #[arg(long, value_name = "S")]
        timeout: Option<u64>,
        /// Kernel to boot an initramfs with (default: the box's, from manifest.json).
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Extra kernel command-line arguments.
        #[arg(long, value_name = "ARGS")]
        append: Option<String>,
        /// More QEMU arguments, after `--` (e.g. `-- -smp 2 -device virtio-rng-pci`).
        #[arg(last = true, value_name = "QEMU ARGS")]
        qemu: Vec<String>,
    },
    /// Print a shell completion script, e.g. `stagebox completions bash >
    /// ~/.local/share/bash-completion/completions/stagebox`.
    Completions {
        shell: clap_complete::Shell,
    },
    /// Print the JSON Schema of box, pallet, kernel and bootloader definition files (the one
    /// in docs/box.schema.json), for editors such as taplo / Even Better TOML.
    Schema,
    /// Print the man page (roff), e.g. `stagebox man > stagebox.1; man -l stagebox.1`.
    /// With --dir, write stagebox.1 and one stagebox-COMMAND.1 page per command there.
    Man {
        /// Write the pages into this directory instead of printing stagebox.1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `stagebox man`: the top page on stdout, or with `dir` every page (`stagebox.1`,
/// `stagebox-build.1`, ...) written there by clap_mangen.
fn man(dir: Option<PathBuf>) -> stagebox::Result<()> {
    use stagebox::error::IoContext;
    let cmd = Cli::command();
    match dir {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout().lock()).at("stdout"),
        Some(dir) => {
            std::fs::create_dir_all(&dir).at(&dir)?;
            clap_mangen::generate_to(cmd, &dir).at(&dir)
        }
    }
}

/// Write `text` to stdout; a closed pipe (`stagebox inspect X | head`) is an
/// [`stagebox::Error::Io`] on "stdout" that `main` ends quietly on.
fn out(text: impl AsRef<str>) -> stagebox::Result<()> {
    use stagebox::error::IoContext;
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_ref().as_bytes()).and_then(|()| o.flush()).at("stdout")
}

/// `value` as pretty JSON and a newline.
fn out_json(value: &impl serde::Serialize) -> stagebox::Result<()> {
    out(format!("{}\n", serde_json::to_string_pretty(value).expect("json")))
}

fn run(cli: Cli) -> stagebox::Result<ExitCode> {
    match cli.command {
        Command::Completions { shell } => {
            use std::io::Write;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "stagebox", &mut script);
            std::io::stdout().write_all(&script).map_err(|e| stagebox::Error::io("stdout", e))?;
        }
        Command::Man { dir } => man(dir)?,
        Command::Schema => out(stagebox::spec::schema_text())?,
        Command::Build { box_file, out: out_dir, store: StoreArgs { cache, platform, offline, .. }, threads, quiet, locked, check, check_variant, json } => {
            let opts = stagebox::cmd::build::BuildOptions { out: out_dir, cache, platform, threads, quiet, offline, locked, check_variant };
            let started = std::time::Instant::now();
            let res = if check {
                let (res, varied) = stagebox::cmd::check::check(&box_file, &opts)?;
                eprintln!("checked: {} output(s) and manifest.json identical byte for byte in a second build with {varied}", res.manifest.outputs.len());
                res
            } else {
                stagebox::cmd::build::build(&box_file, &opts)?
            };
            if json {
                out_json(&stagebox::cmd::build::json(&res))?;
            } else {
                for o in &res.manifest.outputs {
                    out(format!("{}  {}\n", o.sha256, res.out_dir.join(&o.path).display()))?;
                }
            }
            for r in &res.removed {
                eprintln!("removed {} (written by this box's previous build, no longer an output)", res.out_dir.join(r).display());
            }
            if !quiet {
                let sizes: Vec<(String, u64)> = res.manifest.outputs.iter().map(|o| (o.path.clone(), o.size)).collect();
                eprintln!("{}", stagebox::progress::summary(&sizes, started.elapsed()));
            }
        }
        Command::Diff { a, b, json } => {
            // Like diff(1): 0 identical, 1 different (the differences are the output), 2 trouble.
            let r = match stagebox::cmd::diff::diff(&a, &b) {
                Ok(r) => r,
                Err(e) => return Ok(failed(&e, stagebox::cmd::diff::TROUBLE)),
            };
            if json {
                out_json(&r)?;
            } else {
                out(r.render())?;
            }
            return Ok(ExitCode::from(r.status()));
        }
        Command::Inspect { target, json, files, store: StoreArgs { cache, platform, offline, .. } } => {
            let i = stagebox::cmd::inspect::inspect_opts(&target, cache.as_deref(), platform, offline, files)?;
            if json {
                out_json(&i)?;
            } else {
                out(stagebox::cmd::inspect::render(&i))?;
            }
        }
        Command::Run { output, memory, uefi, disk, kvm, expect, timeout, kernel, append, qemu } => {
            if expect.as_deref() == Some("") {
                return Err(stagebox::Error::Usage("--expect needs some text".into()));
            }
            let timeout = timeout.map(std::time::Duration::from_secs);
            let opts = stagebox::cmd::run::RunOptions { memory, uefi, disk, kvm, expect, timeout, kernel, append, echo: true, qemu_extra: qemu };
            stagebox::cmd::run::run(&output, &opts)?;
        }
        Command::Verify { reference, keyring, signatures, quorum, strict, json, repository, store: StoreArgs { cache, platform, offline, .. } } => {
            let opts = stagebox::cmd::verify::VerifyOptions { keyring, signatures, quorum, strict, cache, platform, offline, repository };
            let report = stagebox::cmd::verify::verify(&reference, &opts)?;
            if json {
                out_json(&report)?;
            } else {
                out(report.render())?;
            }
            if !report.ok() {
                return Err(report.error());
            }
        }
        Command::VerifyBuild { out_dir, keyring, signatures, quorum, box_file, json } => {
            let opts = stagebox::cmd::verify_build::VerifyBuildOptions { keyring, signatures, quorum, box_file };
            let report = stagebox::cmd::verify_build::verify_build(&out_dir, &opts)?;
            if json {
                out_json(&report)?;
            } else {
                out(report.render())?;
            }
            if !report.ok {
                return Err(report.error());
            }
        }
        Command::Pull { targets, store: StoreArgs { cache, platform, offline, .. }, json } => {
            if offline {
                return Err(stagebox::Error::Usage("pull fetches images: it cannot run --offline".into()));
            }
            let pulled = stagebox::cmd::pull::pull(&targets, &stagebox::cmd::pull::PullOptions { cache, platform })?;
            if json {
                out_json(&serde_json::json!({ "images": pulled }))?;
            } else {
                for p in &pulled {
                    out(format!("{}  {}\n", p.digest, p.reference))?;
                }
            }
        }
        Command::Lock { box_file, store: StoreArgs { cache, platform, offline, .. }, import_digests, check, json } => {
            let opts = stagebox::cmd::lock::LockOptions { cache, platform, offline, import_digests };
            if check {
                let checks = stagebox::cmd::lock::check(&box_file, &opts)?;
                if json {
                    out_json(&serde_json::json!({ "images": checks.iter().map(|c| c.json()).collect::<Vec<_>>() }))?;
                } else {
                    for c in &checks {
                        out(format!("{}\n", c.line()))?;
                    }
                }
                let bad = checks.iter().filter(|c| !c.ok()).count();
                if bad > 0 {
                    return Err(stagebox::Error::other(format!("{bad} of {} pins are not current", checks.len())));
                }
                return Ok(ExitCode::SUCCESS);
            }
            let lock = stagebox::cmd::lock::lock_with(&box_file, &opts)?;
            if json {
                let file = stagebox::spec::lock_path(&box_file).display().to_string();
                out_json(&serde_json::json!({ "lock_file": file, "images": lock.images }))?;
            } else {
                for i in &lock.images {
                    out(format!("{}  {}\n", i.digest, i.reference))?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Say what went wrong on stderr and give the exit status `code`.
fn failed(e: &stagebox::Error, code: u8) -> ExitCode {
    // Every variant's message already includes its cause.
    eprintln!("stagebox: error: {e}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Still one thread here: setting the environment is safe.
    match &cli.command {
        Command::Build { store, .. }
        | Command::Inspect { store, .. }
        | Command::Lock { store, .. }
        | Command::Pull { store, .. }
        | Command::Verify { store, .. } => {
            store.export_registry_env()
        }
        Command::Diff { .. } | Command::Run { .. } | Command::VerifyBuild { .. } | Command::Completions { .. } | Command::Man { .. } | Command::Schema => {}
    }
    match run(cli) {
        Ok(code) => code,
        // The reader went away (`| head`): nothing left to say to anyone.
        Err(stagebox::Error::Io { path, source }) if source.kind() == std::io::ErrorKind::BrokenPipe && path.as_os_str() == "stdout" => {
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e, e.exit_code() as u8),
    }
}
