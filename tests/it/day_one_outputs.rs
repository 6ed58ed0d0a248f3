//! Day one as a new user (issue 24), after the first build: each test is what a user types
//! next — `inspect` on any output, two boxes building into one `out/`, `run` on what was
//! built, `diff` of two builds — and asserts what that user needs back (the listing an
//! independent tool gives, the manifest entry, the message, the exit code).
//!
//! The fixture box is made of `dir` layers from files the test writes (no image, no
//! network), and builds every output format that needs no kernel.

use crate::common;

use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Two small rootfs directories: `base` (etc/) and `app` (usr/bin/hello and a symlink).
fn write_rootfs(dir: &Path, hello: &str) {
    write(&dir.join("base/etc/hostname"), "day-one\n");
    write(&dir.join("base/etc/os-release"), "ID=dayone\n");
    let app = dir.join("app/usr/bin/hello");
    write(&app, format!("#!/bin/sh\necho {hello}\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = dir.join("app/usr/bin/hi");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("hello", &link).unwrap();
}

const EVERY_FORMAT: &str = "[output.tar]\ncompression = \"gzip\"\n[output.initramfs]\ncompression = \"zstd\"\n[output.iso]\n[output.squashfs]\n[output.erofs]\n[output.oci]\n[output.deb]\n[output.rpm]\n[output.arch]\n[output.apk]\n";

/// A box `name` of the two `dir` layers plus `outputs`, written beside them in `dir`.
fn day_box(dir: &Path, name: &str, outputs: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    write(&p, format!("name = \"{name}\"\nversion = \"1.0\"\nsource_date_epoch = 1\n[[layer]]\ndir = \"base\"\n[[layer]]\ndir = \"app\"\n{outputs}"));
    p
}

struct Built {
    dir: PathBuf,
    out: PathBuf,
    cache: PathBuf,
}

/// Every format built once into `out/`.
fn every_format() -> &'static Built {
    static F: OnceLock<Built> = OnceLock::new();
    F.get_or_init(|| {
        let dir = fixture_dir("day-one-every-format");
        write_rootfs(&dir, "hi");
        let bx = day_box(&dir, "day", EVERY_FORMAT);
        let (out, cache) = (dir.join("out"), dir.join("cache"));
        build(&bx, &out, &cache);
        Built { dir, out, cache }
    })
}

/// `stagebox inspect ARGS… --json`, which must succeed.
fn inspect_json(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let mut a: Vec<&std::ffi::OsStr> = vec!["inspect".as_ref(), "--json".as_ref()];
    a.extend(args);
    let o = run(&mut stagebox(a));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// A path as every tool spells it differently, made comparable: no `./`, `/`, trailing `/`.
fn norm(p: &str) -> String {
    let p = p.trim_end_matches('/');
    let p = p.strip_prefix("./").unwrap_or(p);
    p.trim_start_matches('/').to_string()
}

fn paths_of(entries: &serde_json::Value) -> BTreeSet<String> {
    entries.as_array().unwrap().iter().map(|e| norm(e["path"].as_str().unwrap())).filter(|p| !p.is_empty() && p != ".").collect()
}

fn lines_of(o: std::process::Output) -> BTreeSet<String> {
    String::from_utf8(o.stdout).unwrap().lines().map(|l| norm(l.split(" -> ").next().unwrap())).filter(|p| !p.is_empty() && p != ".").collect()
}

fn sh(script: &str) -> std::process::Output {
    run(Command::new("sh").arg("-c").arg(script))
}

/// Every path under `root` (relative), walked on the host.
fn walk(root: &Path) -> BTreeSet<String> {
    snapshot(root).into_keys().map(|p| norm(&p)).filter(|p| !p.is_empty()).collect()
}

fn file_named(out: &Path, suffix: &str) -> PathBuf {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("no *{suffix} in {}", out.display()))
}

#[test]
fn inspect_lists_every_output_format_as_independent_tools_do() {
    require_tools(&["bsdtar", "cpio", "zstd", "dpkg-deb", "rpm", "unsquashfs", "fsck.erofs", "isoinfo", "sh"]);
    let b = every_format();
    let scratch = tempdir();
    let want_app: BTreeSet<String> = ["usr/bin/hello", "usr/bin/hi"].into_iter().map(String::from).collect();
    let want_all: BTreeSet<String> = want_app.iter().cloned().chain(["etc", "etc/hostname", "etc/os-release"].map(String::from)).collect();
    // (file, the format inspect must report, what an independent tool lists).
    let q = |p: &Path| format!("'{}'", p.display());
    let cases: Vec<(PathBuf, &str, BTreeSet<String>)> = vec![
        (b.out.join("day.tar.gz"), "tar", lines_of(run(Command::new("bsdtar").arg("-tf").arg(b.out.join("day.tar.gz"))))),
        (b.out.join("day.cpio.zst"), "cpio", lines_of(sh(&format!("zstd -dc {} | cpio -it --quiet", q(&b.out.join("day.cpio.zst")))))),
        (file_named(&b.out, ".deb"), "deb", lines_of(sh(&format!("dpkg-deb --fsys-tarfile {} | bsdtar -tf -", q(&file_named(&b.out, ".deb")))))),
        (file_named(&b.out, ".rpm"), "rpm", lines_of(run(Command::new("rpm").args(["-qlp", "--nosignature", "--nodigest"]).arg(file_named(&b.out, ".rpm"))))),
        (file_named(&b.out, ".pkg.tar.zst"), "arch", lines_of(run(Command::new("bsdtar").arg("-tf").arg(file_named(&b.out, ".pkg.tar.zst"))))),
        (file_named(&b.out, ".apk"), "apk", lines_of(run(Command::new("bsdtar").arg("-tf").arg(file_named(&b.out, ".apk"))))),
        (b.out.join("day.squashfs"), "squashfs", {
            let o = run(Command::new("unsquashfs").args(["-d", "R", "-l"]).arg(b.out.join("day.squashfs")));
            lines_of(o).into_iter().filter(|l| l.starts_with("R/")).map(|l| l[2..].to_string()).collect()
        }),
        (b.out.join("day.erofs"), "erofs", {
            let x = scratch.path().join("erofs");
            run(Command::new("fsck.erofs").arg(format!("--extract={}", x.display())).arg(b.out.join("day.erofs")));
            walk(&x)
        }),
        (b.out.join("day.iso"), "iso", lines_of(run(Command::new("isoinfo").args(["-R", "-f", "-i"]).arg(b.out.join("day.iso"))))),
    ];
    for (file, format, tool) in &cases {
        // `--files`: the same uniform listing for every format.
        let v = inspect_json(&["--files".as_ref(), file.as_os_str()]);
        assert_eq!(v["format"], *format, "{}: {v}", file.display());
        let ours = paths_of(&v["files"]);
        let tool: BTreeSet<String> = tool.iter().filter(|p| !p.starts_with('.')).cloned().collect();
        let ours_no_meta: BTreeSet<String> = ours.iter().filter(|p| !p.starts_with('.')).cloned().collect();
        assert_eq!(ours_no_meta, tool, "{}: inspect --files and the independent tool list different paths", file.display());
        let want = if ["deb", "rpm", "arch", "apk"].contains(format) { &want_app } else { &want_all };
        assert!(want.is_subset(&ours_no_meta), "{}: {ours_no_meta:?} lacks some of {want:?}", file.display());
        let files = v["files"].as_array().unwrap();
        let hello = files.iter().find(|e| norm(e["path"].as_str().unwrap()) == "usr/bin/hello").unwrap();
        assert_eq!((hello["type"].as_str(), hello["mode"].as_str(), hello["size"].as_u64()), (Some("file"), Some("0755"), Some(18)), "{}", file.display());
        let hi = files.iter().find(|e| norm(e["path"].as_str().unwrap()) == "usr/bin/hi").unwrap();
        assert_eq!((hi["type"].as_str(), hi["link"].as_str()), (Some("symlink"), Some("hello")), "{}", file.display());
        // Without --files the command reads the format too, never as an empty tar.
        let o = run(&mut stagebox(["inspect".as_ref(), file.as_os_str()]));
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(text.contains("usr/bin/hello") && !text.contains(" 0 entries"), "{}:\n{text}", file.display());
    }
    // Packages say how their content is compressed (the .deb's data tar, the .rpm's payload).
    let deb = inspect_json(&[file_named(&b.out, ".deb").as_os_str()]);
    let rpm = inspect_json(&[file_named(&b.out, ".rpm").as_os_str()]);
    assert_eq!((deb["format"].as_str(), deb["compression"].as_str()), (Some("deb"), Some("xz")), "{deb}");
    assert_eq!((rpm["format"].as_str(), rpm["compression"].as_str()), (Some("rpm"), Some("zstd")), "{rpm}");
    // The name never decides: a cpio named .tar is still read as cpio.
    let misnamed = scratch.path().join("misnamed.tar");
    std::fs::copy(b.out.join("day.cpio.zst"), &misnamed).unwrap();
    assert_eq!(inspect_json(&[misnamed.as_os_str()])["format"], "cpio");
}

#[test]
fn inspect_refuses_what_stagebox_never_writes_instead_of_showing_zero_entries() {
    let d = tempdir();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("random.erofs", (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(), "not any of"),
        ("empty.tar", Vec::new(), "an empty file"),
        ("notes.txt.gz", {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(b"just some text\n").unwrap();
            e.finish().unwrap()
        }, "gzip-compressed, but what it holds is not any of"),
        ("zeros.cpio", vec![0u8; 4096], "not any of"),
    ];
    for (name, bytes, want) in cases {
        let p = d.path().join(name);
        write(&p, &bytes);
        let o = output(&mut stagebox(["inspect".as_ref(), p.as_os_str()]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(o.stdout.is_empty(), "{name}: nothing on stdout: {}", String::from_utf8_lossy(&o.stdout));
        assert!(err.contains(&p.display().to_string()) && err.contains(want), "{name}: {err}");
        assert!(err.contains("EROFS") && err.contains(".rpm"), "the message lists what is readable: {err}");
    }
}

#[test]
fn inspect_files_lists_an_images_flattened_tree() {
    require_tools(&["umoci"]);
    let b = every_format();
    let oci = b.out.join("day.oci");
    let v = inspect_json(&["--files".as_ref(), "--cache".as_ref(), b.cache.as_os_str(), format!("oci:{}", oci.display()).as_ref()]);
    assert_eq!(v["format"], "image");
    let ours = paths_of(&v["files"]);
    // umoci unpacks the same image: the same paths.
    let bundle = tempdir();
    let tag = read_json(&oci.join("index.json"))["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap().to_string();
    run(Command::new("umoci").args(["unpack", "--rootless", "--image"]).arg(format!("{}:{tag}", oci.display())).arg(bundle.path().join("b")));
    assert_eq!(ours, walk(&bundle.path().join("b/rootfs")));
    let files = v["files"].as_array().unwrap();
    assert!(files.iter().any(|e| e["path"] == "/usr/bin/hello" && e["type"] == "file" && e["size"] == 18), "{v}");
    // An OCI layout directory given as a path is the same image.
    let text = String::from_utf8(run(&mut stagebox(["inspect".as_ref(), "--files".as_ref(), "--cache".as_ref(), b.cache.as_os_str(), oci.as_os_str()])).stdout).unwrap();
    assert!(text.contains("/usr/bin/hi -> hello"), "{text}");
    let _ = &b.dir;
}

/// An OCI layout `dir/kernel-layout` holding a stand-in kernel (`/bzImage`, not bootable):
/// enough for a build and for `run` to name it on QEMU's command line.
fn stand_in_kernel(dir: &Path) -> String {
    let layout = dir.join("kernel-layout");
    let digest = umoci_image(&layout, "k", &[("kernel".into(), layer(&[common::Entry::file("bzImage", "stand-in kernel bytes\n")]))]);
    format!("oci:kernel-layout@{digest}")
}

/// A box `name` with an init, the stand-in kernel and `cmdline` (none when `None`), and an
/// initramfs of `compression`.
fn kernel_box(dir: &Path, name: &str, kernel: &str, cmdline: Option<&str>, compression: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bb = dir.join("app/bin/busybox");
    write(&bb, busybox());
    std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _ = std::fs::remove_file(dir.join("app/bin/sh"));
    std::os::unix::fs::symlink("busybox", dir.join("app/bin/sh")).unwrap();
    let init = dir.join("app/init");
    write(&init, "#!/bin/sh\necho hello from init\n");
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cmdline = cmdline.map(|c| format!("cmdline = \"{c}\"\n")).unwrap_or_default();
    day_box(dir, name, &format!("[kernel]\nimage = \"{kernel}\"\n{cmdline}\n[output.initramfs]\ncompression = \"{compression}\"\n"))
}

/// `stagebox run ARGS… --timeout 5` with QEMU failing at once on the stand-in kernel: the
/// command line `run` printed (the kernel, initrd and `-append` it chose) and its stderr.
fn run_line(args: &[&std::ffi::OsStr]) -> (String, String) {
    let mut a: Vec<&std::ffi::OsStr> = vec!["run".as_ref()];
    a.extend(args);
    a.extend(["--kvm", "off", "--timeout", "20"].map(std::ffi::OsStr::new));
    let o = output(&mut stagebox(a));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let line = err.lines().find(|l| l.starts_with("stagebox: qemu-system-x86_64 ")).unwrap_or_else(|| panic!("no QEMU command line on stderr:\n{err}")).to_string();
    (line, err)
}

#[test]
fn two_boxes_sharing_out_keep_their_own_manifests_and_clean_only_their_own_stale_outputs() {
    require_tools(&["umoci", "qemu-system-x86_64"]);
    let d = tempdir();
    write_rootfs(d.path(), "hi");
    let kernel = stand_in_kernel(d.path());
    // Both boxes also make a .deb of one package name: one file that both manifests list.
    let with_deb = |p: PathBuf| {
        let text = String::from_utf8(read(&p)).unwrap();
        write(&p, format!("{text}[output.deb]\nname = \"shared\"\npaths = [\"/usr\"]\n"));
        p
    };
    let a = with_deb(kernel_box(d.path(), "a", &kernel, Some("console=ttyS0 box=a"), "gzip"));
    let b = with_deb(kernel_box(d.path(), "b", &kernel, Some("console=ttyS0 box=b"), "gzip"));
    let (out, cache) = (d.path().join("out"), d.path().join("cache"));
    build(&a, &out, &cache);
    // One box so far: manifest.json is there, as in a single-box directory.
    assert_eq!(read_json(&out.join("manifest.json"))["box"], "a");
    build(&b, &out, &cache);
    let ma = read_json(&out.join("a.manifest.json"));
    let mb = read_json(&out.join("b.manifest.json"));
    let paths = |m: &serde_json::Value| m["outputs"].as_array().unwrap().iter().map(|o| o["path"].as_str().unwrap().to_string()).collect::<BTreeSet<_>>();
    assert_eq!((ma["box"].as_str(), mb["box"].as_str()), (Some("a"), Some("b")));
    assert!(paths(&ma).contains("a.cpio.gz") && paths(&mb).contains("b.cpio.gz"), "{ma} {mb}");
    assert!(!out.join("manifest.json").exists(), "a shared directory has no single manifest.json that names one box of two");
    // Each manifest records its box's files as they are (the shared .deb as b, the last to
    // build it, wrote it).
    for m in [&ma, &mb] {
        for o in m["outputs"].as_array().unwrap().iter().filter(|o| m == &mb || o["format"] != "deb") {
            assert_eq!(sha256_file(&out.join(o["path"].as_str().unwrap())), o["sha256"].as_str().unwrap(), "{o}");
        }
    }
    // `run out/a.cpio.gz` finds a's kernel and command line, though b built last.
    let (line, _) = run_line(&[out.join("a.cpio.gz").as_os_str()]);
    assert!(line.contains(&format!("-kernel {}", out.join("a.bzImage").display())) && line.contains("box=a") && !line.contains("box=b"), "{line}");
    let (line, _) = run_line(&[out.join("b.cpio.gz").as_os_str()]);
    assert!(line.contains("box=b"), "{line}");
    // The directory names no box to run: a usage error that lists them.
    let o = output(&mut stagebox(["run".as_ref(), out.as_os_str()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("a, b") && err.contains("name the output"), "{err}");

    // a switches gzip → zstd and drops its .deb: its .cpio.gz goes; the .deb stays, since
    // b's manifest lists it too; b's files stay byte for byte.
    let deb = file_named(&out, ".deb");
    let before_b: Vec<(String, String)> = paths(&mb).into_iter().map(|p| (p.clone(), sha256_file(&out.join(&p)))).collect();
    let a2 = kernel_box(d.path(), "a", &kernel, Some("console=ttyS0 box=a"), "zstd");
    let o = run(&mut stagebox(["build".as_ref(), a2.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), cache.as_os_str(), "-q".as_ref()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!out.join("a.cpio.gz").exists() && out.join("a.cpio.zst").is_file());
    assert!(err.contains(&format!("removed {}", out.join("a.cpio.gz").display())), "the build says what it removed: {err}");
    assert!(paths(&read_json(&out.join("a.manifest.json"))).contains("a.cpio.zst"));
    for (p, sha) in &before_b {
        assert_eq!(&sha256_file(&out.join(p)), sha, "b's {p} changed");
    }
    assert!(deb.is_file() && !err.contains(".deb"), "an output another box lists is never removed: {err}");
}

/// A FAT image (mkfs.vfat + mcopy, the real tools) holding `EFI/BOOT/NOTE.TXT` = `note`.
fn fat_image(p: &Path, note: &str) {
    require_tools(&["mkfs.vfat", "mcopy", "mmd"]);
    let _ = std::fs::remove_file(p);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    run(Command::new("mkfs.vfat").args(["-C", "-n", "ESP", "-i", "12345678"]).arg(p).arg("2048"));
    let src = p.with_extension("txt");
    write(&src, note);
    let img = format!("{}", p.display());
    run(Command::new("mmd").args(["-i", &img, "::/EFI", "::/EFI/BOOT"]));
    run(Command::new("mcopy").args(["-i", &img]).arg(&src).arg("::/EFI/BOOT/NOTE.TXT"));
    std::fs::remove_file(src).unwrap();
}

/// `stagebox diff [--json] A B`: (exit code, stdout, stderr).
fn diff(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let mut a: Vec<&std::ffi::OsStr> = vec!["diff".as_ref()];
    a.extend(args);
    let o = output(&mut stagebox(a));
    (o.status.code().unwrap(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn diff_reports_what_a_user_changed_by_path_inside_isos_and_fat_and_across_out_dirs() {
    let d = tempdir();
    let outs: Vec<PathBuf> = ["one", "two"]
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let dir = d.path().join(k);
            write_rootfs(&dir, "hi");
            // The second build: two files added, and one file changed inside a FAT image
            // the rootfs carries (as an ISO carries an ESP).
            fat_image(&dir.join("base/boot/esp.img"), if i == 0 { "first\n" } else { "second!\n" });
            if i == 1 {
                write(&dir.join("app/usr/bin/new-a"), "a\n");
                write(&dir.join("app/usr/bin/new-b"), "b\n");
            }
            let bx = day_box(&dir, "day", "[output.initramfs]\n[output.iso]\n");
            build(&bx, &dir.join("out"), &d.path().join("cache"));
            dir.join("out")
        })
        .collect();
    let (a, b) = (&outs[0], &outs[1]);

    // cpio by path: the 2 added files are 2 changes, with no inode renumbering of
    // everything after them; the FAT image the tree carries changed too.
    let (code, text, err) = diff(&[a.join("day.cpio").as_os_str(), b.join("day.cpio").as_os_str()]);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("error"), "a difference is output, not an error: {err}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(&lines[1..], ["added usr/bin/new-a", "added usr/bin/new-b", "3 change(s)"], "{text}");
    assert!(lines[0].starts_with("changed boot/esp.img: content: "), "{text}");

    // The ISO: the added files, and inside boot/esp.img (FAT) the one file that changed.
    let (code, text, _) = diff(&[a.join("day.iso").as_os_str(), b.join("day.iso").as_os_str()]);
    assert_eq!(code, 1);
    assert!(text.contains("added /usr/bin/new-a") || text.contains("added usr/bin/new-a"), "{text}");
    let inner = text.lines().find(|l| l.contains("esp.img: /EFI/BOOT/NOTE.TXT")).unwrap_or_else(|| panic!("no per-file result inside the FAT image:\n{text}"));
    assert!(inner.starts_with("changed ") && inner.contains("size: 6 -> 8"), "{inner}");

    // Two output directories: per output, and per entry inside each.
    let (code, text, _) = diff(&[a.as_os_str(), b.as_os_str()]);
    assert_eq!(code, 1);
    assert!(text.contains("changed day.manifest.json: output day.cpio: sha256: "), "{text}");
    assert!(text.contains("added day.cpio: usr/bin/new-a") && text.contains("changed day.iso: /boot/esp.img: /EFI/BOOT/NOTE.TXT: "), "{text}");
    // Two manifests: which outputs changed.
    let (code, text, _) = diff(&["--json".as_ref(), a.join("day.manifest.json").as_os_str(), b.join("day.manifest.json").as_os_str()]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], "manifest");
    let items: Vec<&str> = v["changes"].as_array().unwrap().iter().map(|c| c["item"].as_str().unwrap()).collect();
    assert!(items.contains(&"output day.cpio") && items.contains(&"output day.iso"), "{items:?}");

    // Identical: exit 0. Trouble (a missing file): exit 2 with the path.
    assert_eq!(diff(&[a.as_os_str(), a.as_os_str()]).0, 0);
    let (code, _, err) = diff(&[a.join("day.cpio").as_os_str(), a.join("nope.cpio").as_os_str()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope.cpio"), "{err}");
}

#[test]
fn run_adds_a_serial_console_when_the_kernel_command_line_names_none() {
    require_tools(&["umoci", "qemu-system-x86_64"]);
    let d = tempdir();
    write_rootfs(d.path(), "hi");
    let kernel = stand_in_kernel(d.path());
    let (out, cache) = (d.path().join("out"), d.path().join("cache"));
    // An inline [kernel] without cmdline: the boot would show nothing on the serial console.
    let bx = kernel_box(d.path(), "bare", &kernel, None, "gzip");
    build(&bx, &out, &cache);
    let (line, err) = run_line(&[out.join("bare.cpio.gz").as_os_str()]);
    assert!(line.contains("-append console=ttyS0"), "{line}");
    assert!(err.contains("names no console: added console=ttyS0"), "said on stderr: {err}");
    // Appended to a command line without a console; left alone when one is named.
    let bx = kernel_box(d.path(), "quiet", &kernel, Some("quiet"), "gzip");
    build(&bx, &out, &cache);
    let (line, _) = run_line(&[out.join("quiet.cpio.gz").as_os_str()]);
    assert!(line.contains("-append 'quiet console=ttyS0'"), "{line}");
    let (line, err) = run_line(&[out.join("quiet.cpio.gz").as_os_str(), "--append".as_ref(), "console=ttyS1".as_ref()]);
    assert!(line.contains("-append 'quiet console=ttyS1'") && !err.contains("added console"), "{line}\n{err}");
}

#[test]
fn run_boots_a_disk_image_with_uefi_from_nvme_and_passes_qemu_arguments_through() {
    require_tools(&["sgdisk", "qemu-system-x86_64", "truncate"]);
    let d = tempdir();
    // A GPT disk named without .img: recognized by its content.
    let disk = d.path().join("disk.bin");
    run(Command::new("truncate").args(["-s", "4M"]).arg(&disk));
    run(Command::new("sgdisk").args(["-n", "1:2048:0", "-t", "1:ef00"]).arg(&disk));
    // `-- -version`: QEMU prints its version and exits 0, so the run does too.
    let o = output(&mut stagebox(["run".as_ref(), disk.as_os_str(), "--kvm".as_ref(), "off".as_ref(), "--".as_ref(), "-version".as_ref()]));
    let (stdout, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(stdout.contains("QEMU emulator version"), "QEMU's own output comes through: {stdout}");
    assert!(err.contains("is a disk image: booting it with UEFI") && err.contains("BIOS boot of disk images is not supported"), "{err}");
    let line = err.lines().find(|l| l.starts_with("stagebox: qemu-system-x86_64 ")).unwrap();
    assert!(line.contains("if=pflash") && line.contains("OVMF_CODE"), "UEFI firmware: {line}");
    assert!(line.contains("if=none,id=disk0") && line.contains("-device nvme,drive=disk0"), "an NVMe disk: {line}");
    assert!(line.ends_with(" -version"), "the QEMU arguments come last: {line}");
}

#[test]
fn run_stops_at_a_kernel_panic_and_names_it() {
    require_tools(&["qemu-system-x86_64", "dpkg-deb"]);
    let d = tempdir();
    write_rootfs(d.path(), "hi");
    use std::os::unix::fs::PermissionsExt;
    let bb = d.path().join("app/bin/busybox");
    write(&bb, busybox());
    std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("busybox", d.path().join("app/bin/sh")).unwrap();
    // An init that returns: the kernel panics ("Attempted to kill init!") and, without
    // panic=N, would sit there for ever.
    let init = d.path().join("app/init");
    write(&init, "#!/bin/sh\necho init-ran-and-returns\n");
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bx = day_box(d.path(), "panics", "[output.initramfs]\n");
    let out = d.path().join("out");
    build(&bx, &out, &d.path().join("cache"));
    let scratch = d.path().join("kernel");
    run(Command::new("dpkg-deb").arg("-x").arg(cloud_kernel_deb()).arg(&scratch));
    let vmlinuz = std::fs::read_dir(scratch.join("boot")).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with("vmlinuz-")).unwrap();
    let t = std::time::Instant::now();
    let o = output(&mut stagebox(["run".as_ref(), out.join("panics.cpio").as_os_str(), "--kernel".as_ref(), vmlinuz.as_os_str(), "--kvm".as_ref(), "off".as_ref(), "--timeout".as_ref(), "600".as_ref()]));
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let said = err.lines().find(|l| l.contains("the kernel panicked: ")).unwrap_or_else(|| panic!("no panic line in the error:\n{err}"));
    assert!(said.contains("Kernel panic - not syncing: "), "{said}");
    assert!(took.as_secs() < 500, "stopped at the panic, not at the timeout ({took:?})");
    eprintln!("{said} (after {took:?})");
}
