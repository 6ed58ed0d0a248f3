//! `[output.deb]`, `[output.rpm]`, `[output.arch]` and `[output.apk]`: the box's content as
//! a package for another distribution. One table shape for the four formats; every key has a
//! default taken from the box, so an empty table already makes an installable package.
//!
//! ```toml
//! [output.deb]
//! name = "curl"                 # default: the box name, lowercased, '_' → '-'
//! version = "8.9.1"             # default: the box version
//! release = 1                   # default 1
//! architecture = "amd64"        # default: from the platform (amd64 / x86_64 / x86_64 / x86_64; arm64: arm64 / aarch64 / aarch64 / aarch64)
//! summary = "..."               # one line; default "Content of the BOX box, built by stagebox"
//! description = "..."           # longer text; the source image digests are always appended
//! maintainer = "Jane <j@example.org>"
//! license = "MIT"
//! url = "https://..."
//! depends = ["libc6 (>= 2.36)"] # written in the target format's own syntax
//! conflicts = []
//! provides = []
//! replaces = []                 # deb, arch and apk (rpm has no such relation)
//! layers = [1, 2]               # which [[layer]] tables go in (0 = the first)
//! paths = ["/usr/bin/curl"]     # keep only these paths and what lies below them
//! ```

use super::{Location, Source};
use crate::error::Result;
use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

/// Which distribution's package an output table describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PackageFormat {
    Deb,
    Rpm,
    Arch,
    Apk,
}

impl PackageFormat {
    pub const ALL: [PackageFormat; 4] = [PackageFormat::Deb, PackageFormat::Rpm, PackageFormat::Arch, PackageFormat::Apk];

    /// The table name (`[output.deb]`) and the manifest's `format`.
    pub fn key(self) -> &'static str {
        match self {
            PackageFormat::Deb => "deb",
            PackageFormat::Rpm => "rpm",
            PackageFormat::Arch => "arch",
            PackageFormat::Apk => "apk",
        }
    }
}

/// One `[output.deb|rpm|arch|apk]` table as written. Values keep their spans so errors can
/// point at them.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageOutput {
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub version: Option<Spanned<String>>,
    #[schemars(with = "Option<i64>")]
    pub release: Option<Spanned<i64>>,
    #[schemars(with = "Option<String>")]
    pub architecture: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub summary: Option<Spanned<String>>,
    pub description: Option<String>,
    #[schemars(with = "Option<String>")]
    pub maintainer: Option<Spanned<String>>,
    pub license: Option<String>,
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub depends: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub conflicts: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub provides: Vec<Spanned<String>>,
    #[schemars(with = "Option<Vec<String>>")]
    pub replaces: Option<Spanned<Vec<Spanned<String>>>>,
    /// Indexes of the box's `[[layer]]` tables that go in (default: all but the first).
    #[schemars(with = "Option<Vec<i64>>")]
    pub layers: Option<Spanned<Vec<Spanned<i64>>>>,
    /// Absolute path prefixes to keep (default: everything the layers hold).
    #[schemars(with = "Option<Vec<String>>")]
    pub paths: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A package output after validation: every value checked for its format, defaults still
/// open where they depend on the build (architecture, from the platform).
#[derive(Debug, Clone)]
pub struct PackageSpec {
    pub format: PackageFormat,
    /// Where the table stands in the box file.
    pub at: Location,
    pub name: String,
    pub version: String,
    pub release: u32,
    pub architecture: Option<String>,
    pub summary: String,
    pub description: Option<String>,
    pub maintainer: Option<String>,
    pub license: Option<String>,
    pub url: Option<String>,
    pub depends: Vec<String>,
    pub conflicts: Vec<String>,
    pub provides: Vec<String>,
    pub replaces: Vec<String>,
    /// `[[layer]]` indexes, ascending; `None`: the default selection.
    pub layers: Option<Vec<usize>>,
    /// Path prefixes without the leading `/` (an empty prefix keeps everything).
    pub paths: Option<Vec<Vec<u8>>>,
}

fn one_line(s: &str) -> bool {
    !s.is_empty() && !s.contains(['\n', '\r']) && s.trim() == s
}

/// Package names: what every format accepts (Debian is the strictest): lowercase letters,
/// digits, `+ - .`, starting with a letter or digit, at least two characters.
fn valid_name(s: &str) -> bool {
    s.len() >= 2
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// The default package name for a box name.
pub fn default_package_name(box_name: &str) -> String {
    box_name.to_ascii_lowercase().replace('_', "-")
}

/// Check a version for `format`; returns the reason it is refused.
fn check_version(format: PackageFormat, v: &str) -> Result<(), String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be non-empty printable ASCII without spaces".into());
    }
    match format {
        PackageFormat::Deb => {
            if !v.as_bytes()[0].is_ascii_digit() {
                return Err("a Debian version must start with a digit".into());
            }
            if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b".+~".contains(&b)) {
                return Err("a Debian upstream version (before -RELEASE) may hold letters, digits and . + ~ only".into());
            }
        }
        PackageFormat::Rpm => {
            if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+~^".contains(&b)) {
                return Err("an RPM version may hold letters, digits and . _ + ~ ^ only (no '-')".into());
            }
        }
        PackageFormat::Arch => {
            if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+".contains(&b)) || v.starts_with('.') {
                return Err("an Arch pkgver may hold letters, digits and . _ + only (no '-' or ':')".into());
            }
        }
        PackageFormat::Apk => {
            // apk-tools' version grammar: digits{.digits}[letter]{_suffix[digits]}
            let (core, suffixes) = v.split_once('_').map(|(a, b)| (a, Some(b))).unwrap_or((v, None));
            let core_ok = {
                let (nums, letter) = match core.as_bytes().last() {
                    Some(b) if b.is_ascii_lowercase() => (&core[..core.len() - 1], true),
                    _ => (core, false),
                };
                let _ = letter;
                !nums.is_empty() && nums.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            };
            let suffix_ok = suffixes.is_none_or(|s| {
                s.split('_').all(|part| {
                    let word = part.trim_end_matches(|c: char| c.is_ascii_digit());
                    ["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"].contains(&word)
                })
            });
            if !core_ok || !suffix_ok {
                return Err("an Alpine version must look like 1.2.3, 1.2.3a or 1.2.3_rc1 (digits and dots, an optional letter, _alpha/_beta/_pre/_rc/_p suffixes)".into());
            }
        }
    }
    Ok(())
}

/// Validate one package table of the box at `src`.
pub(crate) fn package_spec(
    src: &Source,
    format: PackageFormat,
    raw: &PackageOutput,
    box_name: &str,
    box_version: &str,
    box_version_at: Location,
    layer_count: usize,
) -> Result<PackageSpec> {
    let header = format!("[output.{}]", format.key());
    let i = src.line_start(&header).unwrap_or(0);
    let at = src.loc(i..i);
    let loc = |span: std::ops::Range<usize>| src.loc(span);

    let name = match &raw.name {
        Some(n) if !valid_name(n.get_ref()) => {
            return Err(loc(n.span()).error(format!(
                "package name {:?}: use lowercase letters, digits, '+', '-' and '.', starting with a letter or digit (at least 2 characters)",
                n.get_ref()
            )))
        }
        Some(n) => n.get_ref().clone(),
        None => {
            let n = default_package_name(box_name);
            if !valid_name(&n) {
                return Err(at.error(format!(
                    "the box name {box_name:?} is not a valid package name ({n:?}); set `name` in {header}"
                )));
            }
            n
        }
    };
    let (version, vat) = match &raw.version {
        Some(v) => (v.get_ref().clone(), loc(v.span())),
        None => (box_version.to_string(), box_version_at),
    };
    check_version(format, &version).map_err(|m| vat.error(format!("version {version:?} for {header}: {m}")))?;
    let release = match &raw.release {
        Some(r) if !(1..=i64::from(u32::MAX)).contains(r.get_ref()) => {
            return Err(loc(r.span()).error("release must be a positive integer"));
        }
        Some(r) => *r.get_ref() as u32,
        None => 1,
    };
    let architecture = match &raw.architecture {
        Some(a) if a.get_ref().is_empty() || !a.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)) => {
            return Err(loc(a.span()).error("architecture must be letters, digits, '_' and '-' (e.g. amd64, x86_64, noarch, all, any)"));
        }
        Some(a) => Some(a.get_ref().clone()),
        None => None,
    };
    let summary = match &raw.summary {
        Some(s) if !one_line(s.get_ref()) => return Err(loc(s.span()).error("summary must be one non-empty line")),
        Some(s) => s.get_ref().clone(),
        None => format!("Content of the {box_name} box, built by stagebox"),
    };
    let maintainer = match &raw.maintainer {
        Some(m) if !one_line(m.get_ref()) => return Err(loc(m.span()).error("maintainer must be one non-empty line")),
        Some(m) => Some(m.get_ref().clone()),
        None => None,
    };
    let url = match &raw.url {
        Some(u) if !one_line(u.get_ref()) || u.get_ref().contains(' ') => return Err(loc(u.span()).error("url must be one word")),
        Some(u) => Some(u.get_ref().clone()),
        None => None,
    };
    let relations = |v: &[Spanned<String>], what: &str| -> Result<Vec<String>> {
        v.iter()
            .map(|d| {
                if !one_line(d.get_ref()) || d.get_ref().contains(',') {
                    Err(loc(d.span()).error(format!("each {what} entry must be one relation on one line (no commas: use one entry each)")))
                } else {
                    Ok(d.get_ref().clone())
                }
            })
            .collect()
    };
    let depends = relations(&raw.depends, "depends")?;
    let conflicts = relations(&raw.conflicts, "conflicts")?;
    let provides = relations(&raw.provides, "provides")?;
    let replaces = match &raw.replaces {
        Some(r) if format == PackageFormat::Rpm => {
            return Err(loc(r.span()).error("RPM has no `replaces` relation (use `conflicts` and `provides`)"));
        }
        Some(r) => relations(r.get_ref(), "replaces")?,
        None => Vec::new(),
    };
    let layers = match &raw.layers {
        Some(l) if l.get_ref().is_empty() => return Err(loc(l.span()).error("layers must name at least one [[layer]] index")),
        Some(l) => {
            let mut v = Vec::new();
            for x in l.get_ref() {
                let i = *x.get_ref();
                if i < 0 || i as usize >= layer_count {
                    return Err(loc(x.span()).error(format!(
                        "layer index {i} is out of range: the box has {layer_count} [[layer]] table(s), numbered from 0"
                    )));
                }
                v.push(i as usize);
            }
            v.sort_unstable();
            v.dedup();
            Some(v)
        }
        None => None,
    };
    let paths = match &raw.paths {
        Some(p) if p.get_ref().is_empty() => return Err(loc(p.span()).error("paths must name at least one path")),
        Some(p) => {
            let mut v = Vec::new();
            for x in p.get_ref() {
                let s = x.get_ref();
                if !s.starts_with('/') || s.split('/').any(|c| c == "." || c == "..") || s.contains('\0') {
                    return Err(loc(x.span()).error(format!("path {s:?} must be absolute, without '.' or '..' components")));
                }
                let trimmed: Vec<&str> = s.split('/').filter(|c| !c.is_empty()).collect();
                v.push(trimmed.join("/").into_bytes());
            }
            Some(v)
        }
        None => None,
    };
    Ok(PackageSpec {
        format,
        at,
        name,
        version,
        release,
        architecture,
        summary,
        description: raw.description.clone(),
        maintainer,
        license: raw.license.clone(),
        url,
        depends,
        conflicts,
        provides,
        replaces,
        layers,
        paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_per_format() {
        assert!(check_version(PackageFormat::Deb, "1.2.3").is_ok());
        assert!(check_version(PackageFormat::Deb, "v1").is_err());
        assert!(check_version(PackageFormat::Rpm, "1.2-3").is_err());
        assert!(check_version(PackageFormat::Arch, "1:2").is_err());
        assert!(check_version(PackageFormat::Apk, "1.2.3_rc1").is_ok());
        assert!(check_version(PackageFormat::Apk, "1.2.3a").is_ok());
        assert!(check_version(PackageFormat::Apk, "1.2.x").is_err());
        assert!(check_version(PackageFormat::Apk, "0").is_ok());
    }

    #[test]
    fn names() {
        assert_eq!(default_package_name("My_Box"), "my-box");
        assert!(valid_name("curl"));
        assert!(!valid_name("c"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("Curl"));
    }
}
