//! Error kinds and their exit codes.
//!
//! Typed errors inside the library; the binary prints the whole chain and exits with
//! [`Error::exit_code`]: 2 for usage and box-file errors, 1 for build or verification failures.

use std::path::PathBuf;

/// Everything stagebox can fail with. Messages always name the file, layer or path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A box, pallet, kernel or lock file that does not parse or validate.
    /// `location` is `file:line:column`.
    #[error("{location}: {message}")]
    Spec { location: String, message: String },

    /// Bad command-line usage that clap could not catch.
    #[error("{0}")]
    Usage(String),

    /// A blob whose content does not match the digest that names it.
    #[error("digest mismatch for {what}: expected {expected}, found {found}")]
    DigestMismatch { what: String, expected: String, found: String },

    /// A blob whose size does not match its descriptor.
    #[error("size mismatch for {what}: descriptor says {expected} bytes, read {found}")]
    SizeMismatch { what: String, expected: u64, found: u64 },

    /// A layer entry that would break the rootfs (escape, dangling hardlink, bad type).
    #[error("layer {layer}: {path}: {message}")]
    Layer { layer: String, path: String, message: String },

    /// An image reference that cannot be resolved.
    #[error("{reference}: {message}")]
    Resolve { reference: String, message: String },

    /// A pinned digest that names nothing usable in its source (absent, or an image config):
    /// the box file (or command line) is wrong, not the build. `message` says what the source
    /// offers instead. [`crate::spec::Location::locate`] turns it into a [`Error::Spec`] at the
    /// reference.
    #[error("{reference}: {message}")]
    Pin { reference: String, message: String },

    /// I/O with the path it happened on.
    #[error("{path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },

    /// Anything else, with context already attached.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Process exit code for this error (DESIGN §6).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Spec { .. } | Error::Usage(_) | Error::Pin { .. } => 2,
            _ => 1,
        }
    }

    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn other(msg: impl Into<String>) -> Self {
        Error::Other(msg.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a path to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
