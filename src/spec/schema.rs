//! The JSON Schema of box, pallet, kernel and bootloader definition files
//! (`docs/box.schema.json`, `stagebox schema`), derived with `schemars` from the same serde
//! types the parser reads, so editors (taplo, Even Better TOML) complete and check exactly the
//! keys the parser accepts.
//!
//! The parser stays the authority: its `deny_unknown_fields` types become
//! `additionalProperties: false`, but checks beyond the shape of a file (one of `image`,
//! `pallet`, `dir`; names; digests; paths) are made only when a file is loaded, with
//! `file:line:column` errors.

use schemars::generate::SchemaSettings;
use serde_json::{json, Value};

/// The schema: a box file, a pallet file, a kernel definition or a bootloader definition.
/// Which one a file is follows from its keys (`images`: a pallet; `kind`: a bootloader; a
/// kernel's own keys such as `image`: a kernel; else a box), chosen with `if`/`then`/`else`
/// so an editor reports the one misspelt key rather than "matches none of four schemas".
pub fn schema() -> Value {
    // Draft 7: what taplo's validator and most editors' JSON Schema support reliably read.
    let mut g = SchemaSettings::draft07()
        .for_deserialize()
        .with_transform(schemars::transform::RecursiveTransform(no_null))
        .into_generator();
    let [boxfile, pallet, kernel, bootloader] = [
        super::boxfile::schema(&mut g),
        super::pallet::schema(&mut g),
        super::kernel::schema(&mut g),
        super::bootloader::schema(&mut g),
    ]
    .map(|s| s.to_value());
    let defs = g.take_definitions(true);
    let props = |r: &Value| -> Vec<String> {
        let name = r["$ref"].as_str().and_then(|r| r.rsplit('/').next()).unwrap_or_default();
        defs.get(name).and_then(|d| d["properties"].as_object()).map(|p| p.keys().cloned().collect()).unwrap_or_default()
    };
    // A kernel definition's keys that a box file does not have (`name` and `description` are
    // everyone's).
    let box_keys = props(&boxfile);
    let kernel_only: Vec<Value> = props(&kernel)
        .into_iter()
        .filter(|k| !box_keys.contains(k) && k != "name" && k != "description")
        .map(|k| json!({"required": [k]}))
        .collect();
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "stagebox box, pallet, kernel and bootloader definition files",
        "description": "Generated from stagebox's parser (`stagebox schema`); see docs/box-file.md. The parser checks more than the shape: its errors name file:line:column.",
        "if": {"required": ["images"]},
        "then": pallet,
        "else": {
            "if": {"required": ["kind"]},
            "then": bootloader,
            "else": {"if": {"anyOf": kernel_only}, "then": kernel, "else": boxfile},
        },
        "definitions": defs,
    })
}

/// TOML has no null: an `Option` is a key left out, so drop the `null` alternatives (and
/// `default: null`) schemars gives it.
fn no_null(s: &mut schemars::Schema) {
    let Some(obj) = s.as_object_mut() else { return };
    if obj.get("default").is_some_and(Value::is_null) {
        obj.remove("default");
    }
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t != "null");
        if let [one] = types.as_slice() {
            let one = one.clone();
            obj.insert("type".into(), one);
        }
    }
    if let Some(Value::Array(alts)) = obj.get_mut("anyOf") {
        alts.retain(|a| a != &json!({"type": "null"}));
        if let [one] = alts.as_slice() {
            let Value::Object(one) = one.clone() else { return };
            obj.remove("anyOf");
            obj.extend(one);
        }
    }
}

/// The schema as `docs/box.schema.json` holds it: pretty JSON and a final newline.
pub fn schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).expect("json");
    s.push('\n');
    s
}
