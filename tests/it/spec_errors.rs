//! Malformed box, pallet and lock files: exit code 2 and a message that starts with
//! `PATH:LINE:COLUMN:` pointing at the offending token (1-based; columns count characters).

use std::path::{Path, PathBuf};
use std::process::Command;

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        let tmp = tempfile::Builder::new().prefix("stagebox-spec-").tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("rootfs")).unwrap();
        std::fs::write(tmp.path().join("rootfs/hello"), "hi\n").unwrap();
        Dir { tmp }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `stagebox build BOX` from this directory; returns exit code and stderr.
    fn build(&self, box_arg: &Path) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_stagebox"))
            .arg("build")
            .arg(box_arg)
            .arg("--out")
            .arg(self.p("out"))
            .arg("--cache")
            .arg(self.p("cache"))
            .arg("--quiet")
            .current_dir(self.tmp.path())
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("STAGEBOX_CACHE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (out.status.code().expect("exit code"), stderr)
    }
}

/// Build `box_text` (as `box.toml`, with `files` beside it) and expect exit 2 with an error
/// at `file:line:col` whose message contains `message`.
fn expect_at(files: &[(&str, &str)], box_text: &str, file: &str, line: usize, col: usize, message: &str) {
    let d = Dir::new();
    for (rel, text) in files {
        d.write(rel, text);
    }
    let box_path = d.write("box.toml", box_text);
    let (code, stderr) = d.build(&box_path);
    assert_eq!(code, 2, "exit code for\n{box_text}\nstderr: {stderr}");
    let loc = format!("{}:{line}:{col}: ", d.p(file).display());
    let rest = stderr
        .strip_prefix("stagebox: error: ")
        .unwrap_or_else(|| panic!("no error prefix: {stderr}"))
        .strip_prefix(&loc)
        .unwrap_or_else(|| panic!("expected the message to start with {loc:?} for\n{box_text}\ngot: {stderr}"));
    assert!(rest.contains(message), "expected {message:?} in {stderr:?}");
    assert!(!d.p("out").exists(), "a box-file error created the output directory");
}

fn box_at(text: &str, line: usize, col: usize, message: &str) {
    expect_at(&[], text, "box.toml", line, col, message);
}

// ---------------------------------------------------------------------------------------
// TOML syntax

#[test]
fn unterminated_string() {
    // the parser notices at the end of the line
    box_at("name = \"demo\nversion = \"1\"\n", 1, 13, "invalid basic string");
}

#[test]
fn missing_value() {
    box_at("name = \"demo\"\nversion = \n[[layer]]\ndir = \"rootfs\"\n", 2, 11, "invalid string");
}

#[test]
fn broken_table_header() {
    // at the lone `]` where `]]` should be
    box_at("name = \"demo\"\n\n[[layer]\ndir = \"rootfs\"\n", 3, 8, "invalid table header");
}

#[test]
fn duplicate_table() {
    box_at("name = \"demo\"\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\n[output.tar]\n", 5, 1, "duplicate key `tar`");
}

#[test]
fn duplicate_key() {
    box_at("name = \"demo\"\nname = \"again\"\n", 2, 1, "duplicate key `name`");
}

// ---------------------------------------------------------------------------------------
// Unknown keys and wrong types

#[test]
fn unknown_top_level_key() {
    box_at("name = \"demo\"\ncolour = \"red\"\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\n", 2, 1, "unknown field `colour`");
}

#[test]
fn unknown_key_in_a_layer() {
    box_at("name = \"demo\"\n[[layer]]\ndir = \"rootfs\"\n  tag = \"x\"\n[output.tar]\n", 4, 3, "unknown field `tag`");
}

#[test]
fn unknown_key_in_an_output() {
    box_at("name = \"demo\"\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\nlevel = 9\n", 5, 1, "unknown field `level`");
}

#[test]
fn wrong_type_for_source_date_epoch() {
    box_at("name = \"demo\"\nsource_date_epoch = \"1\"\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\n", 2, 21, "expected i64");
}

#[test]
fn wrong_type_for_version() {
    box_at("name = \"demo\"\nversion = 1.5\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\n", 2, 11, "invalid type: floating point");
}

#[test]
fn wrong_type_for_a_layer_dir() {
    box_at("name = \"demo\"\n[[layer]]\ndir = [\"rootfs\"]\n[output.tar]\n", 3, 7, "invalid type: sequence, expected a string");
}

#[test]
fn missing_name() {
    box_at("version = \"1\"\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\n", 1, 1, "missing field `name`");
}

// ---------------------------------------------------------------------------------------
// Layers

#[test]
fn layer_with_image_and_dir() {
    // points at the offending [[layer]] (here the second one)
    let text = format!("name = \"demo\"\n[[layer]]\ndir = \"rootfs\"\n\n# two sources\n[[layer]]\nimage = \"oci:x@{D}\"\ndir = \"rootfs\"\n[output.tar]\n");
    box_at(&text, 6, 1, "each [[layer]] needs exactly one of `image`, `pallet` or `dir`");
}

#[test]
fn layer_with_image_and_pallet() {
    let text = format!("name = \"demo\"\n[[layer]]\nimage = \"oci:x@{D}\"\npallet = \"base\"\n[output.tar]\n");
    box_at(&text, 2, 1, "exactly one of");
}

#[test]
fn layer_with_all_three_or_none() {
    let text = format!("name = \"demo\"\n[[layer]]\npallet = \"p\"\nimage = \"oci:x@{D}\"\ndir = \"rootfs\"\n[output.tar]\n");
    box_at(&text, 2, 1, "exactly one of");
    box_at("name = \"demo\"\n[[layer]]\n[output.tar]\n", 2, 1, "exactly one of");
}

#[test]
fn layer_as_inline_table() {
    // columns count characters: `é` is one column (two bytes)
    let text = format!("name = \"demo\"\nlayer = [{{ dir = \"é\" }}, {{ dir = \"rootfs\", image = \"oci:x@{D}\" }}]\n[output.tar]\n");
    box_at(&text, 2, 25, "exactly one of");
}

#[test]
fn modes_on_an_image_layer() {
    let text = format!("name = \"demo\"\n[[layer]]\nimage = \"oci:x@{D}\"\nmodes = \"keep\"\n[output.tar]\n");
    box_at(&text, 4, 9, "`modes` applies to `dir` layers only");
}

#[test]
fn bad_modes_value() {
    box_at("name = \"demo\"\n[[layer]]\ndir = \"rootfs\"\nmodes = \"fast\"\n[output.tar]\n", 4, 9, "modes must be \"normalize\" or \"keep\"");
}

#[test]
fn bad_digest_format() {
    box_at("name = \"demo\"\n[[layer]]\n  image = \"oci:x@sha256:abc\"\n[output.tar]\n", 3, 11, "malformed digest \"sha256:abc\"");
    let upper = D.to_uppercase().replace("SHA256", "sha256");
    box_at(&format!("name = \"demo\"\n[[layer]]\nimage = \"oci:x@{upper}\"\n[output.tar]\n"), 3, 9, "malformed digest");
    box_at(&format!("name = \"demo\"\n[[layer]]\n\timage = \"oci:x@sha512:{}\"\n[output.tar]\n", &D[7..]), 3, 10, "unsupported digest");
}

#[test]
fn digest_on_a_dir_reference() {
    box_at(&format!("name = \"demo\"\n[[layer]]\nimage = \"dir:rootfs@{D}\"\n[output.tar]\n"), 3, 9, "dir: references take no digest");
}

#[test]
fn unpinned_image_without_lock() {
    box_at("name = \"demo\"\n[[layer]]\nimage = \"oci:img:1.0\"\n[output.tar]\n", 3, 9, "image \"oci:img:1.0\" is not pinned");
}

#[test]
fn missing_pallet() {
    box_at("name = \"demo\"\n[[layer]]\npallet =  \"nope\"\n[output.tar]\n", 3, 11, "pallet \"nope\" not found");
}

#[test]
fn no_layers() {
    box_at("name = \"demo\"\n[output.tar]\n", 1, 1, "a box needs at least one [[layer]]");
}

// ---------------------------------------------------------------------------------------
// Outputs

#[test]
fn unknown_output_format() {
    box_at("name = \"demo\"\n[[layer]]\ndir = \"rootfs\"\n[output.zip]\n", 4, 9, "unknown field `zip`");
}

#[test]
fn bad_compression_value() {
    box_at("name = \"demo\"\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\ncompression = \"lz4\"\n", 5, 15, "unknown variant `lz4`");
    box_at("name = \"demo\"\n[[layer]]\ndir = \"rootfs\"\n[output.initramfs]\ncompression   = \"bzip2\"\n", 5, 17, "unknown variant `bzip2`");
}

#[test]
fn no_outputs() {
    box_at("name = \"demo\"\n[[layer]]\ndir = \"rootfs\"\n", 1, 1, "a box needs at least one [output.*] table");
}

#[test]
fn empty_output_table_points_at_it_not_at_a_comment() {
    // the comment mentions [output.tar] first; the error belongs to the real table
    box_at(
        "name = \"demo\"\n# outputs: [output.tar] or [output.oci]\n[[layer]]\ndir = \"rootfs\"\n\n  [output]\n",
        6,
        3,
        "a box needs at least one [output.*] table",
    );
}

// ---------------------------------------------------------------------------------------
// Name and version

#[test]
fn invalid_name() {
    box_at("name = \"my box\"\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\n", 1, 8, "invalid box name \"my box\"");
    box_at("name = \"\"\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\n", 1, 8, "invalid box name \"\"");
    box_at("# a box\nname = \"../escape\"\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\n", 2, 8, "invalid box name \"../escape\"");
}

#[test]
fn invalid_version_and_epoch() {
    box_at("name = \"demo\"\nversion = \"1 0\"\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\n", 2, 11, "version must be non-empty");
    box_at("name = \"demo\"\nsource_date_epoch = -5\n[[layer]]\ndir = \"rootfs\"\n[output.tar]\n", 2, 21, "source_date_epoch must be >= 0");
}

// ---------------------------------------------------------------------------------------
// Errors in other files point into those files

#[test]
fn bad_digest_in_a_pallet_file() {
    let pallet = format!("name = \"base\"\nimages = [\n  \"oci:a@{D}\",\n  \"oci:b@sha256:XYZ\",\n]\n");
    expect_at(
        &[("pallets/base.toml", &pallet)],
        "name = \"demo\"\n[[layer]]\npallet = \"base\"\n[output.tar]\n",
        "pallets/base.toml",
        4,
        3,
        "malformed digest \"sha256:XYZ\"",
    );
}

#[test]
fn unknown_key_and_unpinned_image_in_a_pallet_file() {
    let b = "name = \"demo\"\n[[layer]]\npallet = \"base\"\n[output.tar]\n";
    expect_at(&[("pallets/base.toml", "name = \"base\"\nimages = []\nextra = 1\n")], b, "pallets/base.toml", 3, 1, "unknown field `extra`");
    expect_at(&[("pallets/base.toml", "name = \"base\"\nimages = [\"oci:a\"]\n")], b, "pallets/base.toml", 2, 11, "image \"oci:a\" is not pinned");
}

#[test]
fn pallet_given_as_a_path_is_found_relative_to_the_box() {
    // a pallet named by path that does not exist points at the box's `pallet` value
    box_at("name = \"demo\"\n[[layer]]\npallet = \"sub/none.toml\"\n[output.tar]\n", 3, 10, "pallet \"sub/none.toml\" not found");
}

#[test]
fn bad_lock_file() {
    let b = "name = \"demo\"\n[[layer]]\nimage = \"oci:a\"\n[output.tar]\n";
    expect_at(&[("box.lock", "version = 1\n[[image]]\nref = \"oci:a\"\ndigest = \"sha256:nothex\"\n")], b, "box.lock", 4, 11, "malformed digest");
    expect_at(&[("box.lock", "# written by hand\nversion = 2\n")], b, "box.lock", 2, 1, "unsupported lock file version 2");
    expect_at(&[("box.lock", "version = 1\n[[image]]\nref = \"oci:a\"\n")], b, "box.lock", 2, 1, "missing field `digest`");
}

#[test]
fn relative_box_path_is_printed_as_given() {
    let d = Dir::new();
    d.write("box.toml", "name = \"demo\"\ncolour = 1\n");
    let (code, stderr) = d.build(Path::new("box.toml"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("stagebox: error: box.toml:2:1: unknown field `colour`"), "{stderr}");
}

#[test]
fn missing_box_file_is_an_error_naming_it() {
    let d = Dir::new();
    let (code, stderr) = d.build(&d.p("nothere.toml"));
    assert_ne!(code, 0);
    assert!(stderr.contains(&d.p("nothere.toml").display().to_string()), "{stderr}");
}
