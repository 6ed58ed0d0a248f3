//! Nitro Enclave PCRs of an EIF, computed exactly as AWS's `aws-nitro-enclaves-image-format`
//! (`EifBuilder::measure`, `EifReader::from_eif`, `get_pcrs`) and the Nitro hypervisor do.
//!
//! Each PCR is one TPM-style extend of a zero register with the SHA-384 of a concatenation of
//! section data, in file order: `ext(d) = SHA384([0; 48] || SHA384(d))`.
//! - PCR0 (the image): kernel || cmdline || every ramdisk;
//! - PCR1 (kernel and boot ramdisk): kernel || cmdline || first ramdisk;
//! - PCR2 (the application): the second ramdisk || the third ... (with a single ramdisk this is
//!   `ext` of nothing, `21b9efbc…fc500a`);
//! - PCR8 (only for a signed EIF): `ext(DER of the signing certificate)`.
//!
//! Metadata and signature sections are never measured, and section headers are not either:
//! only the data. The cmdline is measured as stored (no NUL terminator).

use sha2::{Digest as _, Sha384};
use std::collections::BTreeMap;

/// Bytes of one PCR (SHA-384).
pub const PCR_LEN: usize = 48;

/// What `nitro-cli describe-eif` prints as `HashAlgorithm` (the `Debug` of sha2 0.9's hasher,
/// which AWS's code formats into its measurements).
pub const HASH_ALGORITHM: &str = "Sha384 { ... }";

/// `SHA384([0; 48] || digest)`: extend a zero PCR with a SHA-384 digest.
pub fn extend_zero(digest: &[u8]) -> [u8; PCR_LEN] {
    let mut h = Sha384::new();
    h.update([0u8; PCR_LEN]);
    h.update(digest);
    h.finalize().into()
}

/// `ext(data)`: extend a zero PCR with the SHA-384 of `data`.
pub fn ext(data: &[u8]) -> [u8; PCR_LEN] {
    extend_zero(&Sha384::digest(data))
}

/// The measurements of one EIF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pcrs {
    pub pcr0: [u8; PCR_LEN],
    pub pcr1: [u8; PCR_LEN],
    pub pcr2: [u8; PCR_LEN],
    /// Present only for a signed EIF.
    pub pcr8: Option<[u8; PCR_LEN]>,
}

impl Pcrs {
    /// `(name, value)` pairs in register order: PCR0, PCR1, PCR2 and PCR8 when signed.
    pub fn entries(&self) -> Vec<(&'static str, &[u8; PCR_LEN])> {
        let mut v = vec![("PCR0", &self.pcr0), ("PCR1", &self.pcr1), ("PCR2", &self.pcr2)];
        if let Some(p) = &self.pcr8 {
            v.push(("PCR8", p));
        }
        v
    }

    /// `{"PCR0": hex, ...}` for manifest.json.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.entries().into_iter().map(|(k, v)| (k.to_string(), hex::encode(v))).collect()
    }

    /// The `NAME.pcrs` text, in the format of StageX's `eif_build --pcrs_output`:
    /// `<hex> PCR0\n<hex> PCR1\n<hex> PCR2\n` (and a PCR8 line for a signed EIF).
    pub fn to_pcrs_file(&self) -> String {
        self.entries().into_iter().map(|(k, v)| format!("{} {k}\n", hex::encode(v))).collect()
    }

    /// Set PCR8 from the DER of the signing certificate.
    pub fn with_certificate(mut self, cert_der: &[u8]) -> Self {
        self.pcr8 = Some(ext(cert_der));
        self
    }
}

/// The measured sections, in the order they are fed to a [`Measurer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Kernel,
    Cmdline,
    /// Ramdisk number `n` (0 is the boot ramdisk), in file order.
    Ramdisk(usize),
}

/// Streaming PCR0/1/2 computation: feed section data in file order, in chunks of any size.
#[derive(Clone, Default)]
pub struct Measurer {
    image: Sha384,
    boot: Sha384,
    app: Sha384,
}

impl Measurer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next bytes of a section. Call order must follow the file: kernel, cmdline,
    /// ramdisk 0, ramdisk 1, ...
    pub fn update(&mut self, part: Part, data: &[u8]) {
        self.image.update(data);
        match part {
            Part::Kernel | Part::Cmdline | Part::Ramdisk(0) => self.boot.update(data),
            Part::Ramdisk(_) => self.app.update(data),
        }
    }

    /// PCR0, PCR1 and PCR2 (no PCR8: see [`Pcrs::with_certificate`]).
    pub fn finish(self) -> Pcrs {
        Pcrs {
            pcr0: extend_zero(&self.image.finalize()),
            pcr1: extend_zero(&self.boot.finalize()),
            pcr2: extend_zero(&self.app.finalize()),
            pcr8: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_of_nothing_is_the_single_ramdisk_pcr2() {
        let e = hex::encode(ext(b""));
        assert!(e.starts_with("21b9efbc") && e.ends_with("fc500a"), "{e}");
        assert_eq!(hex::encode(Measurer::new().finish().pcr2), e);
    }

    /// DESIGN §7's test vector: the PCRs depend only on section data.
    #[test]
    fn test_vector_pcrs() {
        let mut m = Measurer::new();
        m.update(Part::Kernel, b"KERNEL-");
        m.update(Part::Kernel, b"BYTES");
        m.update(Part::Cmdline, b"console=ttyS0");
        m.update(Part::Ramdisk(0), b"RAMDISK0");
        m.update(Part::Ramdisk(1), b"RAMDISK1");
        let p = m.finish();
        assert_eq!(hex::encode(p.pcr0), "ea8eaacf9cf7fd4f4511a0dddfc35aa0ae8b48e0bd7cd791d983e6173efcdfe18efb5bfd3fba1cc14f5bb21b13c6f202");
        assert_eq!(hex::encode(p.pcr1), "6bb7349f29c689b9e470b08093e1ed4e44276099613cdecc7b412dd73c260880844b009ab65e14def6a9a7ce0346eb3c");
        assert_eq!(hex::encode(p.pcr2), "5f699ae4300525c628f5c96fc521729dd6ca1a2c07cb07b69e7ae9e3fa935cfd7cc83b3e26d89201a486d9db2405c562");
        let text = p.to_pcrs_file();
        assert_eq!(text.lines().count(), 3);
        assert!(text.starts_with("ea8eaacf") && text.contains(" PCR0\n") && text.ends_with(" PCR2\n"));
        let signed = p.with_certificate(b"DER");
        assert_eq!(signed.pcr8, Some(ext(b"DER")));
        assert_eq!(signed.to_map().keys().cloned().collect::<Vec<_>>(), ["PCR0", "PCR1", "PCR2", "PCR8"]);
    }
}
