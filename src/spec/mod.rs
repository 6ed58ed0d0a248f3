//! Box, pallet, kernel and lock files: serde types, validation, and errors that point at
//! `file:line:column`.
//!
//! No I/O beyond reading the named files. Relative paths inside a file are resolved against
//! that file's directory here, so later stages only see absolute paths.

mod bootloader;
mod boxfile;
mod kernel;
mod lockfile;
mod modules;
mod package;
mod pallet;
mod policy;
mod schema;

pub use bootloader::*;
pub use boxfile::*;
pub use kernel::*;
pub use lockfile::*;
pub use modules::ModuleSelection;
pub use package::*;
pub use pallet::*;
pub use policy::*;
pub use schema::{schema, schema_text};

use crate::error::{Error, Result};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A point in a spec file, printed as `file:line:column` (1-based, columns in characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

impl Location {
    /// The location of byte offset `at` in `text`.
    pub fn at(file: &Path, text: &str, at: usize) -> Self {
        let at = at.min(text.len());
        let before = &text[..at];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = text[line_start..at].chars().count() + 1;
        Location { file: file.to_path_buf(), line, column }
    }

    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::Spec { location: self.to_string(), message: message.into() }
    }

    /// `e` at this reference: a wrong pin ([`Error::Pin`]) becomes an error of the file that
    /// wrote it; any other error is left as it is.
    pub fn locate(&self, e: Error) -> Error {
        match e {
            Error::Pin { reference, message } => self.error(format!("{reference}: {message}")),
            e => e,
        }
    }
}

/// A spec file's text, kept to turn byte spans into locations.
pub(crate) struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Self> {
        // A file named on the command line that is not there is a usage error (exit 2).
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory => Error::Usage(format!("{}: {e}", path.display())),
            _ => Error::io(path, e),
        })?;
        Ok(Source { path: path.to_path_buf(), text })
    }

    pub fn loc(&self, span: Range<usize>) -> Location {
        Location::at(&self.path, &self.text, span.start)
    }

    /// Parse the whole file, mapping TOML and serde errors to `file:line:column: message`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        toml::from_str(&self.text).map_err(|e| {
            let loc = self.loc(e.span().unwrap_or(0..0));
            let mut m = e.message().trim_end().to_string();
            if m.starts_with("unknown field `verity`") {
                m = format!("`verity` applies to outputs that are block images: [output.squashfs], [output.erofs] and [output.disk] ({m})");
            }
            loc.error(m)
        })
    }

    /// Byte offset of the first line that starts (after blanks) with `prefix`: a table
    /// header or a key, never the same words in a comment. For places `toml::Spanned` cannot
    /// mark (it fails on the implicit `output` table of `[output.tar]`).
    pub fn line_start(&self, prefix: &str) -> Option<usize> {
        let mut at = 0;
        for line in self.text.split_inclusive('\n') {
            let t = line.trim_start();
            if t.starts_with(prefix) {
                return Some(at + line.len() - t.len());
            }
            at += line.len();
        }
        None
    }

    /// The directory relative paths in this file are resolved against.
    pub fn dir(&self) -> PathBuf {
        let parent = self.path.parent().unwrap_or(Path::new("."));
        if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_path_buf() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        let l = Location::at(Path::new("f.toml"), text, text.find('=').unwrap());
        assert_eq!((l.line, l.column), (1, 3));
        let l = Location::at(Path::new("f.toml"), text, text.rfind('=').unwrap());
        assert_eq!((l.line, l.column), (2, 4));
        assert_eq!(l.to_string(), "f.toml:2:4");
    }
}
