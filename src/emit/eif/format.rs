//! The EIF on-disk format (AWS Nitro Enclaves image format, version 4): constants, the 548-byte
//! header, the 12-byte section header, the metadata JSON, and a strict streaming reader.
//!
//! References: `aws-nitro-enclaves-image-format`'s `src/defs/mod.rs` (`EifHeader`,
//! `EifSectionHeader`, `EifIdentityInfo`) and `src/utils/mod.rs` (`EifBuilder`: layout, CRC),
//! DESIGN §7. Everything is big-endian; there is no padding anywhere: a section header is
//! followed by its data, then the next section header.
//!
//! Changing any value here changes every EIF and its CRC (PCRs change only if section data
//! does).

use crate::measure::pcr::{Measurer, Part, Pcrs};
use serde::{Deserialize, Serialize};
use std::io::{self, Read};

/// `.eif`.
pub const MAGIC: [u8; 4] = *b".eif";
/// The format version `nitro-cli` 1.x writes and accepts.
pub const VERSION: u16 = 4;
/// Header flag: the image is for aarch64 (else x86_64).
pub const FLAG_AARCH64: u16 = 1;
/// The section table has room for this many sections.
pub const MAX_SECTIONS: usize = 32;
/// magic 4 + version 2 + flags 2 + default_mem 8 + default_cpus 8 + reserved 2 +
/// num_sections 2 + offsets 32×8 + sizes 32×8 + unused 4 + crc 4.
pub const HEADER_LEN: usize = 548;
/// Where `eif_crc32` stands; the CRC covers the header up to here.
pub const CRC_OFFSET: usize = HEADER_LEN - 4;
/// type u16 + flags u16 + size u64.
pub const SECTION_HEADER_LEN: usize = 12;
/// What AWS's builder writes as the default enclave memory (1 GiB); `nitro-cli run-enclave`
/// takes its own `--memory`.
pub const DEFAULT_MEM: u64 = 1 << 30;
/// What AWS's builder writes as the default vCPU count.
pub const DEFAULT_CPUS: u64 = 2;

/// nitro-cli's `ENCLAVE_MEMORY_EIF_SIZE_RATIO` (enclave_proc/resource_manager.rs): run-enclave
/// refuses `--memory M` (MiB) when `4 × EIF size > M × 2^20` (E26).
pub const MEMORY_EIF_SIZE_RATIO: u64 = 4;

/// The smallest `--memory` (MiB) nitro-cli accepts for an EIF of `eif_size` bytes.
pub fn min_memory_mib(eif_size: u64) -> u64 {
    (MEMORY_EIF_SIZE_RATIO * eif_size).div_ceil(1 << 20)
}

/// Section types (0 and >= 6 are invalid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum SectionType {
    Kernel = 1,
    Cmdline = 2,
    Ramdisk = 3,
    Signature = 4,
    Metadata = 5,
}

impl SectionType {
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Kernel,
            2 => Self::Cmdline,
            3 => Self::Ramdisk,
            4 => Self::Signature,
            5 => Self::Metadata,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Cmdline => "cmdline",
            Self::Ramdisk => "ramdisk",
            Self::Signature => "signature",
            Self::Metadata => "metadata",
        }
    }
}

/// The file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub magic: [u8; 4],
    pub version: u16,
    pub flags: u16,
    pub default_mem: u64,
    pub default_cpus: u64,
    pub reserved: u16,
    pub num_sections: u16,
    /// File offset of each section's *header*, in file order; unused slots 0.
    pub section_offsets: [u64; MAX_SECTIONS],
    /// Data size of each section (without its header).
    pub section_sizes: [u64; MAX_SECTIONS],
    pub unused: u32,
    pub crc32: u32,
}

impl Header {
    /// The same header with `crc32` set.
    pub fn with_crc(mut self, crc: u32) -> Self {
        self.crc32 = crc;
        self
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        let mut w = &mut b[..];
        let mut put = |x: &[u8]| {
            let (a, rest) = std::mem::take(&mut w).split_at_mut(x.len());
            a.copy_from_slice(x);
            w = rest;
        };
        put(&self.magic);
        put(&self.version.to_be_bytes());
        put(&self.flags.to_be_bytes());
        put(&self.default_mem.to_be_bytes());
        put(&self.default_cpus.to_be_bytes());
        put(&self.reserved.to_be_bytes());
        put(&self.num_sections.to_be_bytes());
        for o in self.section_offsets {
            put(&o.to_be_bytes());
        }
        for s in self.section_sizes {
            put(&s.to_be_bytes());
        }
        put(&self.unused.to_be_bytes());
        put(&self.crc32.to_be_bytes());
        b
    }

    /// Parse a header; checks only the magic (the reader checks the rest against the file).
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Self, String> {
        if b[..4] != MAGIC {
            return Err(format!("not an EIF: magic is {:02x?}, expected 2e 65 69 66 (\".eif\")", &b[..4]));
        }
        let u16_at = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
        let u64_at = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let mut section_offsets = [0u64; MAX_SECTIONS];
        let mut section_sizes = [0u64; MAX_SECTIONS];
        for i in 0..MAX_SECTIONS {
            section_offsets[i] = u64_at(28 + 8 * i);
            section_sizes[i] = u64_at(28 + 8 * MAX_SECTIONS + 8 * i);
        }
        Ok(Header {
            magic: MAGIC,
            version: u16_at(4),
            flags: u16_at(6),
            default_mem: u64_at(8),
            default_cpus: u64_at(16),
            reserved: u16_at(24),
            num_sections: u16_at(26),
            section_offsets,
            section_sizes,
            unused: u32::from_be_bytes(b[CRC_OFFSET - 4..CRC_OFFSET].try_into().expect("4 bytes")),
            crc32: u32::from_be_bytes(b[CRC_OFFSET..].try_into().expect("4 bytes")),
        })
    }
}

/// One section header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionHeader {
    pub kind: u16,
    pub flags: u16,
    pub size: u64,
}

impl SectionHeader {
    pub fn new(kind: SectionType, size: u64) -> Self {
        SectionHeader { kind: kind as u16, flags: 0, size }
    }

    pub fn to_bytes(&self) -> [u8; SECTION_HEADER_LEN] {
        let mut b = [0u8; SECTION_HEADER_LEN];
        b[..2].copy_from_slice(&self.kind.to_be_bytes());
        b[2..4].copy_from_slice(&self.flags.to_be_bytes());
        b[4..].copy_from_slice(&self.size.to_be_bytes());
        b
    }

    pub fn parse(b: &[u8; SECTION_HEADER_LEN]) -> Self {
        SectionHeader {
            kind: u16::from_be_bytes([b[0], b[1]]),
            flags: u16::from_be_bytes([b[2], b[3]]),
            size: u64::from_be_bytes(b[4..].try_into().expect("8 bytes")),
        }
    }
}

/// `BuildMetadata` of the metadata section; field order is the key order AWS writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    #[serde(rename = "BuildTime")]
    pub build_time: String,
    #[serde(rename = "BuildTool")]
    pub build_tool: String,
    #[serde(rename = "BuildToolVersion")]
    pub build_tool_version: String,
    #[serde(rename = "OperatingSystem")]
    pub operating_system: String,
    #[serde(rename = "KernelVersion")]
    pub kernel_version: String,
}

/// The metadata section (AWS's `EifIdentityInfo`), written as compact JSON with keys in this
/// order. `nitro-cli describe-eif` requires every key; the two last are `null` here (AWS puts
/// `docker inspect` output and user JSON there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(rename = "ImageName")]
    pub image_name: String,
    #[serde(rename = "ImageVersion")]
    pub image_version: String,
    #[serde(rename = "BuildMetadata")]
    pub build: BuildInfo,
    #[serde(rename = "DockerInfo")]
    pub docker_info: serde_json::Value,
    #[serde(rename = "CustomMetadata")]
    pub custom: serde_json::Value,
}

impl Metadata {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("metadata serializes")
    }
}

/// `BuildTime` for SOURCE_DATE_EPOCH, in the form chrono's `to_rfc3339` gives AWS's builder:
/// `1970-01-01T00:00:00+00:00`.
pub fn build_time(sde: u64) -> String {
    let z = crate::measure::rfc3339(sde);
    format!("{}+00:00", z.trim_end_matches('Z'))
}

/// One section as found by [`read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// File offset of the section header.
    pub offset: u64,
    pub kind: SectionType,
    pub flags: u16,
    pub size: u64,
}

/// Kernel bytes kept by [`read`] (enough for the bzImage setup header and version string).
pub const KERNEL_HEAD: usize = 64 << 10;

/// What [`read`] found in a whole EIF.
#[derive(Debug, Clone)]
pub struct Scan {
    pub header: Header,
    pub sections: Vec<Section>,
    /// CRC32 computed over the file (header up to the CRC, then every section).
    pub computed_crc: u32,
    /// PCR0/1/2 of the sections, PCR8 when a signature section names a certificate.
    pub pcrs: Pcrs,
    pub cmdline: Vec<u8>,
    pub metadata: Option<Vec<u8>>,
    pub signature: Option<Vec<u8>>,
    /// The first [`KERNEL_HEAD`] bytes of the kernel.
    pub kernel_head: Vec<u8>,
    pub file_len: u64,
}

impl Scan {
    pub fn crc_ok(&self) -> bool {
        self.computed_crc == self.header.crc32
    }
}

/// Largest metadata, cmdline or signature section [`read`] keeps in memory.
const MAX_SMALL_SECTION: u64 = 16 << 20;

fn bad(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m)
}

/// Read a whole EIF from `r` (of `file_len` bytes): header, then section after section to the
/// end, checking that each is complete and of a valid type and that the header's table
/// matches them; compute its CRC and PCRs on the way. A CRC mismatch is not an error here
/// (see [`Scan::crc_ok`]); a short or malformed file is.
pub fn read(r: &mut impl Read, file_len: u64) -> io::Result<Scan> {
    let mut hb = [0u8; HEADER_LEN];
    if file_len < HEADER_LEN as u64 {
        return Err(bad(format!("truncated: {file_len} bytes, shorter than the {HEADER_LEN}-byte EIF header")));
    }
    r.read_exact(&mut hb)?;
    let header = Header::parse(&hb).map_err(bad)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&hb[..CRC_OFFSET]);
    let mut pos = HEADER_LEN as u64;
    let mut sections = Vec::new();
    let mut m = Measurer::new();
    let (mut cmdline, mut metadata, mut signature, mut kernel_head) = (Vec::new(), None, None, Vec::new());
    let mut ramdisks = 0;
    let mut buf = vec![0u8; 1 << 20];
    while pos < file_len {
        let n = sections.len();
        if file_len - pos < SECTION_HEADER_LEN as u64 {
            return Err(bad(format!(
                "truncated: {} stray bytes at offset {pos} after section {n}, too short for a section header",
                file_len - pos
            )));
        }
        let mut sb = [0u8; SECTION_HEADER_LEN];
        r.read_exact(&mut sb)?;
        crc.update(&sb);
        let sh = SectionHeader::parse(&sb);
        let kind = SectionType::from_u16(sh.kind)
            .ok_or_else(|| bad(format!("section {n} at offset {pos} has invalid type {} (valid: 1 to 5)", sh.kind)))?;
        let data_at = pos + SECTION_HEADER_LEN as u64;
        if sh.size > file_len - data_at {
            return Err(bad(format!(
                "truncated: section {n} ({}) at offset {pos} declares {} bytes, only {} remain in the file",
                kind.name(),
                sh.size,
                file_len - data_at
            )));
        }
        if n >= MAX_SECTIONS {
            return Err(bad(format!("more than {MAX_SECTIONS} sections")));
        }
        let part = match kind {
            SectionType::Kernel => Some(Part::Kernel),
            SectionType::Cmdline => Some(Part::Cmdline),
            SectionType::Ramdisk => {
                ramdisks += 1;
                Some(Part::Ramdisk(ramdisks - 1))
            }
            _ => None,
        };
        let keep = matches!(kind, SectionType::Cmdline | SectionType::Metadata | SectionType::Signature);
        if keep && sh.size > MAX_SMALL_SECTION {
            return Err(bad(format!("section {n} ({}) of {} bytes is implausibly large", kind.name(), sh.size)));
        }
        let mut kept = Vec::new();
        let mut left = sh.size;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..k])?;
            crc.update(&buf[..k]);
            if let Some(p) = part {
                m.update(p, &buf[..k]);
            }
            if keep {
                kept.extend_from_slice(&buf[..k]);
            }
            if kind == SectionType::Kernel && kernel_head.len() < KERNEL_HEAD {
                let take = k.min(KERNEL_HEAD - kernel_head.len());
                kernel_head.extend_from_slice(&buf[..take]);
            }
            left -= k as u64;
        }
        match kind {
            SectionType::Cmdline => cmdline = kept,
            SectionType::Metadata => metadata = Some(kept),
            SectionType::Signature => signature = Some(kept),
            _ => {}
        }
        sections.push(Section { offset: pos, kind, flags: sh.flags, size: sh.size });
        pos = data_at + sh.size;
    }
    if header.num_sections as usize != sections.len() {
        return Err(bad(format!("the header counts {} sections, the file holds {}", header.num_sections, sections.len())));
    }
    for (i, s) in sections.iter().enumerate() {
        if header.section_offsets[i] != s.offset || header.section_sizes[i] != s.size {
            return Err(bad(format!(
                "the header's table says section {i} is at {} with {} bytes, the file has it at {} with {}",
                header.section_offsets[i], header.section_sizes[i], s.offset, s.size
            )));
        }
    }
    let mut pcrs = m.finish();
    if let Some(sig) = &signature {
        let cert = super::sign::certificate_der_from_section(sig).map_err(|e| bad(format!("signature section: {e}")))?;
        pcrs = pcrs.with_certificate(&cert);
    }
    Ok(Scan {
        header,
        sections,
        computed_crc: crc.finalize(),
        pcrs,
        cmdline,
        metadata,
        signature,
        kernel_head,
        file_len,
    })
}

/// bzImage facts from the x86 boot protocol's setup header (Linux
/// `Documentation/arch/x86/boot.rst`).
pub mod bzimage {
    /// `HdrS` at 0x202 marks a kernel with a setup header (boot protocol >= 2.00).
    pub const HDRS_OFFSET: usize = 0x202;
    /// `cmdline_size` (boot protocol >= 2.06): the longest command line, without its NUL.
    pub const CMDLINE_SIZE_OFFSET: usize = 0x238;
    /// x86's `COMMAND_LINE_SIZE` (2048 with the NUL) for kernels too old to state theirs.
    pub const DEFAULT_CMDLINE_MAX: usize = 2047;

    /// Whether `k` starts like a bzImage (boot sector signature and `HdrS`).
    pub fn check(k: &[u8]) -> Result<(), String> {
        if k.len() < 0x250 {
            return Err(format!("{} bytes: too short for a bzImage", k.len()));
        }
        if &k[HDRS_OFFSET..HDRS_OFFSET + 4] != b"HdrS" {
            return Err(format!(
                "no \"HdrS\" magic at offset 0x202 (found {:02x?}): not a Linux bzImage",
                &k[HDRS_OFFSET..HDRS_OFFSET + 4]
            ));
        }
        Ok(())
    }

    /// The boot protocol version, e.g. 0x020f.
    pub fn protocol(k: &[u8]) -> u16 {
        u16::from_le_bytes([k[0x206], k[0x207]])
    }

    /// The longest command line this kernel takes (bytes, without the NUL), and where that
    /// limit comes from.
    pub fn cmdline_max(k: &[u8]) -> (usize, &'static str) {
        if check(k).is_ok() && protocol(k) >= 0x0206 {
            let o = CMDLINE_SIZE_OFFSET;
            let v = u32::from_le_bytes([k[o], k[o + 1], k[o + 2], k[o + 3]]) as usize;
            if v > 0 {
                return (v, "the kernel's setup header (cmdline_size)");
            }
        }
        (DEFAULT_CMDLINE_MAX, "x86's COMMAND_LINE_SIZE of 2048 bytes with the NUL")
    }

    /// The version string the kernel carries (`kernel_version` at 0x20e points to it, + 0x200),
    /// e.g. `6.1.0-18-cloud-amd64 (debian-kernel@…) #1 SMP …`.
    pub fn version(k: &[u8]) -> Option<String> {
        check(k).ok()?;
        let p = u16::from_le_bytes([k[0x20e], k[0x20f]]) as usize;
        if p == 0 {
            return None;
        }
        let s = k.get(p + 0x200..)?;
        let end = s.iter().take(256).position(|b| *b == 0)?;
        let v = std::str::from_utf8(&s[..end]).ok()?;
        (!v.is_empty()).then(|| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut h = Header {
            magic: MAGIC,
            version: VERSION,
            flags: FLAG_AARCH64,
            default_mem: DEFAULT_MEM,
            default_cpus: DEFAULT_CPUS,
            reserved: 0,
            num_sections: 2,
            section_offsets: [0; MAX_SECTIONS],
            section_sizes: [0; MAX_SECTIONS],
            unused: 0,
            crc32: 0xdeadbeef,
        };
        h.section_offsets[1] = 600;
        h.section_sizes[31] = 7;
        let b = h.to_bytes();
        assert_eq!(&b[..8], b".eif\0\x04\0\x01");
        assert_eq!(&b[CRC_OFFSET..], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(Header::parse(&b).unwrap(), h);
        let s = SectionHeader::new(SectionType::Metadata, 0x0102);
        assert_eq!(s.to_bytes(), [0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn build_time_matches_chrono() {
        assert_eq!(build_time(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(build_time(1700000000), "2023-11-14T22:13:20+00:00");
    }

    #[test]
    fn bzimage_checks() {
        let mut k = vec![0u8; 0x1000];
        assert!(bzimage::check(&k).unwrap_err().contains("HdrS"));
        assert!(bzimage::check(b"KERNEL-BYTES").unwrap_err().contains("too short"));
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        k[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
        k[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        k[0x500..0x508].copy_from_slice(b"6.1.0 x\0");
        assert!(bzimage::check(&k).is_ok());
        assert_eq!(bzimage::cmdline_max(&k).0, 2047);
        assert_eq!(bzimage::version(&k).as_deref(), Some("6.1.0 x"));
    }
}
