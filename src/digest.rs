//! Content digests (`sha256:<hex>`) and readers/writers that hash what passes through them.
//!
//! Only sha256 is accepted: it is what OCI registries, StageX's digest lists and our store use.

use crate::error::{Error, IoContext, Result};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// Parse `sha256:<hex>`; anything else (other algorithms, bad hex) is refused.
    pub fn parse(s: &str) -> Result<Self> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::other(format!("unsupported digest {s:?}: only sha256:<hex> is accepted")))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Error::other(format!("malformed digest {s:?}: expected sha256: and 64 lowercase hex digits")));
        }
        Ok(Digest(s.to_string()))
    }

    pub fn from_sha256(bytes: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex::encode(bytes)))
    }

    pub fn of_bytes(data: &[u8]) -> Self {
        Self::from_sha256(&Sha256::digest(data))
    }

    pub fn of_file(path: &Path) -> Result<(Self, u64)> {
        let mut f = std::fs::File::open(path).at(path)?;
        let mut w = HashWriter::new(io::sink());
        io::copy(&mut f, &mut w).at(path)?;
        Ok(w.finish())
    }

    /// The 32 bytes of the SHA-256 (what a TPM event or a verity superblock holds).
    pub fn sha256(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        hex::decode_to_slice(self.hex(), &mut b).expect("a parsed digest is 64 hex digits");
        b
    }

    /// The 64 hex digits without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Short form for messages: `sha256:0123456789ab`.
    pub fn short(&self) -> &str {
        &self.0[..19]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A reader that hashes and counts every byte read through it.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader { inner, hasher: Sha256::new(), count: 0 }
    }

    /// Read the rest of the stream (so trailing padding is hashed too) and return digest and size.
    pub fn drain_and_finish(mut self) -> io::Result<(Digest, u64, R)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_sha256(&self.hasher.finalize()), self.count, self.inner))
    }

    /// The inner reader, giving up the hash.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts every byte written through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter { inner, hasher: Sha256::new(), count: 0 }
    }

    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_sha256(&self.hasher.finalize()), self.count)
    }

    pub fn finish_with_inner(self) -> (Digest, u64, W) {
        (Digest::from_sha256(&self.hasher.finalize()), self.count, self.inner)
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_bad_digests() {
        assert!(Digest::parse("sha512:00").is_err());
        assert!(Digest::parse("sha256:ABCDEF").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        let d = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(d.hex(), "a".repeat(64));
    }

    #[test]
    fn empty_digest_is_known_value() {
        assert_eq!(
            Digest::of_bytes(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
