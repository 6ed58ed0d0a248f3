//! The documentation stays true to the code: `docs/box-file.md` lists exactly the keys the
//! parser accepts in every table (read from the parser itself: an unknown key's error lists
//! every accepted one), and has a section for every `[output.*]` table.

use crate::common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `### SECTION` headings (backticks stripped) of docs/box-file.md → the keys in the first column of their table.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(manifest_dir().join("docs/box-file.md")).unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = None;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("### ").map(|h| h.trim_matches('`')) {
            section = Some(h.to_string());
            out.entry(h.to_string()).or_default();
        } else if let (Some(s), Some(row)) = (&section, line.strip_prefix("| `")) {
            let key = row.split('`').next().unwrap();
            out.get_mut(s).unwrap().insert(key.to_string());
        }
    }
    out
}

#[test]
fn box_file_reference_lists_exactly_the_keys_the_parser_accepts() {
    let docs = documented();
    let digest = format!("sha256:{}", "1".repeat(64));
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    want.insert("box".into(), in_box(""));
    want.insert("[[layer]]".into(), in_box("[[layer]]\ndir = \"x\"\n"));
    want.insert("[kernel]".into(), in_box(&format!("[kernel]\nimage = \"oci:k@{digest}\"\n")));
    want.insert("[policy]".into(), in_box("[policy]\n"));
    want.insert("[policy.outputs]".into(), in_box("[policy.outputs]\n"));
    want.insert("[policy.images.\"REPO\"]".into(), in_box("[policy]\nquorum = 1\n[policy.images.\"stagex/x\"]\nquorum = 2\n"));
    let outputs = in_box("[output]\n");
    for o in &outputs {
        want.insert(format!("[output.{o}]"), in_box(&format!("[output.{o}]\n")));
    }
    want.insert(
        "pallet file".into(),
        accepted(
            &[("box.toml", "name = \"n\"\n[[layer]]\npallet = \"p\"\n[output.tar]\n".into()), ("pallets/p.toml", "name = \"p\"\nbogus_key = 1\n".into())],
            "p.toml",
        ),
    );
    want.insert(
        "kernel definition".into(),
        accepted(
            &[
                ("box.toml", "name = \"n\"\n[[layer]]\ndir = \"x\"\n[kernel]\ndefinition = \"k.toml\"\n[output.tar]\n".into()),
                ("k.toml", "name = \"k\"\nbogus_key = 1\n".into()),
            ],
            "k.toml",
        ),
    );
    want.insert(
        "bootloader definition".into(),
        accepted(
            &[
                ("box.toml", "name = \"n\"\n[[layer]]\ndir = \"x\"\n[kernel]\nimage = \"oci:k@sha256:1111111111111111111111111111111111111111111111111111111111111111\"\n[output.iso]\nbootloader = \"b.toml\"\n".into()),
                ("b.toml", "kind = \"syslinux\"\nbogus_key = 1\n".into()),
            ],
            "b.toml",
        ),
    );
    assert!(want["[output.tar]"].contains("compression"), "{want:?}");
    let mut problems = Vec::new();
    for (section, keys) in &want {
        match docs.get(section) {
            None => problems.push(format!("docs/box-file.md has no section `{section}` (keys: {keys:?})")),
            Some(d) if d != keys => problems.push(format!(
                "`{section}`: documented but not accepted: {:?}; accepted but not documented: {:?}",
                d.difference(keys).collect::<Vec<_>>(),
                keys.difference(d).collect::<Vec<_>>()
            )),
            Some(_) => {}
        }
    }
    for section in docs.keys().filter(|s| !want.contains_key(*s)) {
        problems.push(format!("docs/box-file.md documents `{section}`, which the parser does not have"));
    }
    assert!(problems.is_empty(), "docs/box-file.md has drifted from the parser:\n{}", problems.join("\n"));
}

#[test]
fn documented_example_boxes_parse() {
    // The README's box-file sketch uses placeholders; the reference's tables are checked
    // above. Here: every box in examples/ and boxes/ parses (a box-file error is exit 2).
    for dir in ["examples/hello", "boxes"] {
        for e in std::fs::read_dir(manifest_dir().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "toml") || p.file_name().is_some_and(|n| n == "base.toml" && dir != "boxes") {
                continue;
            }
            check_parses(&p);
        }
    }
}

fn check_parses(p: &Path) {
    let d = tempdir();
    let o = output(&mut stagebox(["lock".as_ref(), "--check".as_ref(), "--offline".as_ref(), "--cache".as_ref(), d.path().as_os_str(), p.as_os_str()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(2), "{} does not parse: {err}", p.display());
}

/// The ```sh blocks of the docs that start with `# offline`: (file, block).
fn offline_blocks() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest_dir().join("docs")).unwrap().map(|e| e.unwrap().path()).collect();
    files.push(manifest_dir().join("README.md"));
    files.sort();
    for f in files.iter().filter(|f| f.extension().is_some_and(|x| x == "md")) {
        let text = std::fs::read_to_string(f).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("```sh\n") {
            let body = &rest[i + 6..];
            let end = body.find("```").expect("unclosed code block");
            if body.starts_with("# offline\n") {
                out.push((f.file_name().unwrap().to_string_lossy().into_owned(), body[..end].to_string()));
            }
            rest = &body[end + 3..];
        }
    }
    out
}

#[test]
fn offline_commands_in_the_docs_run_as_written() {
    let blocks = offline_blocks();
    assert!(blocks.len() >= 4, "{blocks:?}");
    // A copy of what the commands read, so they write into a scratch tree.
    let d = tempdir();
    for t in ["examples", "boxes", "pallets", "kernels"] {
        run(Command::new("cp").arg("-a").arg(manifest_dir().join(t)).arg(d.path()));
    }
    let _ = std::fs::remove_dir_all(d.path().join("examples/hello/out"));
    let bin_dir = stagebox_bin().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    for (file, block) in &blocks {
        let o = output(
            Command::new("bash")
                .args(["-euo", "pipefail", "-c", block])
                .current_dir(d.path())
                .env("PATH", &path)
                .env("STAGEBOX_CACHE", d.path().join("cache"))
                .env_remove("SOURCE_DATE_EPOCH"),
        );
        assert!(
            o.status.success(),
            "{file}: this block failed:\n{block}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
