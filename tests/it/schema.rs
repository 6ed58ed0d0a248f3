//! `docs/box.schema.json` is what `stagebox schema` generates from the parser's types, it
//! names exactly the keys the parser accepts in every table (read from the parser itself: an
//! unknown key's error lists every accepted one), and python3-jsonschema accepts every shipped
//! box, pallet, kernel and bootloader file with it and refuses a misspelt key.

use crate::common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

fn schema_path() -> PathBuf {
    manifest_dir().join("docs/box.schema.json")
}

#[test]
fn checked_in_schema_is_what_stagebox_generates() {
    let generated = run(&mut stagebox(["schema"])).stdout;
    let generated = String::from_utf8(generated).unwrap();
    if std::env::var_os("STAGEBOX_UPDATE_SCHEMA").is_some() {
        write(&schema_path(), &generated);
    }
    let shipped = std::fs::read_to_string(schema_path()).unwrap_or_default();
    assert!(
        shipped == generated,
        "docs/box.schema.json is out of date with the parser; if the change is intentional, run \
         `cargo run -- schema > docs/box.schema.json` (or this test with STAGEBOX_UPDATE_SCHEMA=1)"
    );
}

fn schema() -> Value {
    serde_json::from_slice(&read(&schema_path())).unwrap()
}

/// Follow `$ref`s to the schema they name.
fn deref<'a>(root: &'a Value, mut s: &'a Value) -> &'a Value {
    while let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/definitions/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
        s = &root["definitions"][name];
    }
    s
}

/// The schema of the table at `path` in file kind `file` (0 box, 1 pallet, 2 kernel
/// definition, 3 bootloader definition; the schema picks one with if/then/else): keys are
/// followed into `properties`, `[]` into array items, `*` into a map's values.
fn table<'a>(root: &'a Value, file: usize, path: &[&str]) -> &'a Value {
    let file_schema = match file {
        1 => &root["then"],
        3 => &root["else"]["then"],
        2 => &root["else"]["else"]["then"],
        _ => &root["else"]["else"]["else"],
    };
    let mut s = deref(root, file_schema);
    for step in path {
        s = match *step {
            "[]" => deref(root, &s["items"]),
            "*" => deref(root, &s["additionalProperties"]),
            k => deref(root, s["properties"].get(k).unwrap_or_else(|| panic!("no property {k} on the way to {path:?}"))),
        };
    }
    s
}

fn keys(s: &Value) -> BTreeSet<String> {
    assert_eq!(s["additionalProperties"], Value::Bool(false), "a table the parser checks must refuse other keys: {s}");
    s["properties"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

#[test]
fn schema_names_exactly_the_keys_the_parser_accepts() {
    let root = schema();
    let digest = format!("sha256:{}", "1".repeat(64));
    // (what, parser's keys, schema's keys)
    let mut cases: Vec<(String, BTreeSet<String>, BTreeSet<String>)> = vec![
        ("box".into(), in_box(""), keys(table(&root, 0, &[]))),
        ("[[layer]]".into(), in_box("[[layer]]\ndir = \"x\"\n"), keys(table(&root, 0, &["layer", "[]"]))),
        ("[kernel]".into(), in_box(&format!("[kernel]\nimage = \"oci:k@{digest}\"\n")), keys(table(&root, 0, &["kernel"]))),
        ("[policy]".into(), in_box("[policy]\n"), keys(table(&root, 0, &["policy"]))),
        (
            "[policy.images.\"REPO\"]".into(),
            in_box("[policy]\nquorum = 1\n[policy.images.\"stagex/x\"]\nquorum = 2\n"),
            keys(table(&root, 0, &["policy", "images", "*"])),
        ),
    ];
    let outputs = in_box("[output]\n");
    assert!(outputs.contains("tar") && outputs.contains("disk"), "{outputs:?}");
    cases.push(("[output]".into(), outputs.clone(), keys(table(&root, 0, &["output"]))));
    for o in &outputs {
        cases.push((format!("[output.{o}]"), in_box(&format!("[output.{o}]\n")), keys(table(&root, 0, &["output", o]))));
    }
    cases.push((
        "pallet file".into(),
        accepted(
            &[("box.toml", "name = \"n\"\n[[layer]]\npallet = \"p\"\n[output.tar]\n".into()), ("pallets/p.toml", "name = \"p\"\nbogus_key = 1\n".into())],
            "p.toml",
        ),
        keys(table(&root, 1, &[])),
    ));
    cases.push((
        "kernel definition".into(),
        accepted(
            &[
                ("box.toml", "name = \"n\"\n[[layer]]\ndir = \"x\"\n[kernel]\ndefinition = \"k.toml\"\n[output.tar]\n".into()),
                ("k.toml", "name = \"k\"\nbogus_key = 1\n".into()),
            ],
            "k.toml",
        ),
        keys(table(&root, 2, &[])),
    ));
    cases.push((
        "bootloader definition".into(),
        accepted(
            &[
                ("box.toml", format!("name = \"n\"\n[[layer]]\ndir = \"x\"\n[kernel]\nimage = \"oci:k@{digest}\"\n[output.iso]\nbootloader = \"b.toml\"\n")),
                ("b.toml", "kind = \"syslinux\"\nbogus_key = 1\n".into()),
            ],
            "b.toml",
        ),
        keys(table(&root, 3, &[])),
    ));
    cases.push((
        "[output.iso] bootloader = { definition, image }".into(),
        accepted(
            &[
                ("box.toml", format!("name = \"n\"\n[[layer]]\ndir = \"x\"\n[kernel]\nimage = \"oci:k@{digest}\"\n[output.iso.bootloader]\ndefinition = \"b.toml\"\nbogus_key = 1\n")),
            ],
            "box.toml",
        ),
        keys(table(&root, 0, &["output", "iso", "bootloader"]).pointer("/anyOf/0").map(|s| deref(&root, s)).map(|s| deref(&root, &s["anyOf"][1])).unwrap()),
    ));
    let problems: Vec<String> = cases
        .iter()
        .filter(|(_, parser, schema)| parser != schema)
        .map(|(what, parser, schema)| {
            format!(
                "`{what}`: in the schema only: {:?}; accepted by the parser only: {:?}",
                schema.difference(parser).collect::<Vec<_>>(),
                parser.difference(schema).collect::<Vec<_>>()
            )
        })
        .collect();
    assert!(problems.is_empty(), "docs/box.schema.json differs from the parser:\n{}", problems.join("\n"));
}

/// Validate TOML files with python3-jsonschema (Draft 7, the schema's `$schema`):
/// file → error messages (empty when valid).
fn validate(files: &[PathBuf]) -> BTreeMap<String, Vec<String>> {
    require_tool("python3");
    let script = r#"
import json, sys, tomllib
try:
    import jsonschema
except ImportError:
    sys.exit("python3-jsonschema is not installed: run scripts/install-test-deps.sh")
schema = json.load(open(sys.argv[1]))
assert schema["$schema"] == "http://json-schema.org/draft-07/schema#", schema["$schema"]
jsonschema.Draft7Validator.check_schema(schema)
v = jsonschema.Draft7Validator(schema)
out = {}
for f in sys.argv[2:]:
    with open(f, "rb") as fh:
        doc = tomllib.load(fh)
    out[f] = sorted(e.message for e in v.iter_errors(doc))
print(json.dumps(out))
"#;
    let o = run(Command::new("python3").arg("-c").arg(script).arg(schema_path()).args(files));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn every_shipped_file_validates_and_a_typo_does_not() {
    let mut files = Vec::new();
    for dir in ["boxes", "boxes/airgap", "pallets", "kernels", "examples/hello", "examples/rust-hello"] {
        for e in std::fs::read_dir(manifest_dir().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") && p.file_name().is_some_and(|n| n != "Cargo.toml") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 15, "{files:?}");
    let bad: Vec<_> = validate(&files).into_iter().filter(|(_, errs)| !errs.is_empty()).collect();
    assert!(bad.is_empty(), "shipped files the schema refuses: {bad:#?}");

    // The schema is not vacuous: a misspelt key, a wrong type and an unknown output are refused.
    let d = tempdir();
    let cases = [
        ("typo.toml", "name = \"n\"\n[[layer]]\nimgae = \"oci:x\"\n[output.tar]\n", "'imgae' was unexpected"),
        ("type.toml", "name = \"n\"\nsource_date_epoch = \"soon\"\n[[layer]]\ndir = \"x\"\n[output.tar]\n", "'soon' is not of type 'integer'"),
        ("output.toml", "name = \"n\"\n[[layer]]\ndir = \"x\"\n[output.zip]\n", "'zip' was unexpected"),
        ("compression.toml", "name = \"n\"\n[[layer]]\ndir = \"x\"\n[output.tar]\ncompression = \"lz4\"\n", "'lz4' is not one of"),
        ("pallet.toml", "name = \"p\"\nimages = [\"oci:x\"]\nlayer = []\n", "'layer' was unexpected"),
        ("kernel.toml", "name = \"k\"\nimage = \"oci:x\"\npaht = \"/bzImage\"\n", "'paht' was unexpected"),
        ("bootloader.toml", "kind = \"limine\"\nimage = \"oci:x\"\n", "'limine' is not one of"),
    ];
    let paths: Vec<PathBuf> = cases
        .iter()
        .map(|(n, text, _)| {
            let p = d.path().join(n);
            write(&p, text);
            p
        })
        .collect();
    let results = validate(&paths);
    for ((n, _, needle), p) in cases.iter().zip(&paths) {
        // The schema picks the file's kind, so the message names the one bad key or value.
        let errs = &results[&p.display().to_string()];
        assert!(errs.iter().any(|e| e.contains(needle)), "{n}: expected an error with {needle:?}, got {errs:?}");
        if !matches!(*n, "typo.toml" | "type.toml" | "output.toml" | "compression.toml") {
            continue;
        }
        // And the parser refuses it too (a box-file error, exit 2).
        let o = output(&mut stagebox(["build".as_ref(), p.as_os_str(), "--offline".as_ref()]));
        assert_eq!(o.status.code(), Some(2), "{n}: the parser accepts what the schema refuses: {}", String::from_utf8_lossy(&o.stderr));
    }
}
