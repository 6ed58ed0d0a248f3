//! Sections → EIF bytes, in the order AWS's `EifBuilder::write_to` writes them: header, kernel,
//! cmdline, metadata, ramdisks, signature.
//!
//! Lay out first ([`layout`]: every section's offset and the header's table, from sizes
//! alone), then write ([`write()`]): one pass over the data computes the CRC (which sits in the
//! header, before the data), a second writes. PCRs come from [`measure`], a separate pass,
//! because the signature section (and so the layout) depends on PCR0. Section data is either
//! in memory or in a file read with positioned reads, so a large ramdisk is never held in
//! memory. Nothing here reads a clock or the host: the same sections give the same bytes.

use super::format::{self, Header, SectionHeader, SectionType, HEADER_LEN, MAX_SECTIONS, SECTION_HEADER_LEN};
use crate::measure::pcr::{Measurer, Part, Pcrs};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

/// The bytes of one section.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    Bytes(&'a [u8]),
    /// `len` bytes from the start of `file`.
    File { file: &'a std::fs::File, len: u64 },
}

impl Data<'_> {
    pub fn len(&self) -> u64 {
        match self {
            Data::Bytes(b) => b.len() as u64,
            Data::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Call `f` on the data, in order, in chunks.
    pub fn for_each_chunk(&self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        match self {
            Data::Bytes(b) => f(b),
            Data::File { file, len } => {
                let mut buf = vec![0u8; (1 << 20).min(*len as usize).max(1)];
                let mut off = 0u64;
                while off < *len {
                    let n = ((*len - off) as usize).min(buf.len());
                    file.read_exact_at(&mut buf[..n], off)?;
                    f(&buf[..n])?;
                    off += n as u64;
                }
                Ok(())
            }
        }
    }
}

/// An EIF's contents (all but the signature, which depends on PCR0).
#[derive(Debug, Clone)]
pub struct Image<'a> {
    /// [`format::FLAG_AARCH64`] or 0.
    pub flags: u16,
    pub default_mem: u64,
    pub default_cpus: u64,
    pub kernel: Data<'a>,
    /// Stored and measured as is: no NUL terminator.
    pub cmdline: &'a [u8],
    /// The metadata JSON ([`format::Metadata::to_json`]).
    pub metadata: &'a [u8],
    /// Boot ramdisk first; each an uncompressed or compressed newc archive.
    pub ramdisks: Vec<Data<'a>>,
}

fn invalid(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, m)
}

impl Image<'_> {
    /// Refuse what AWS's tools or the Nitro hypervisor would refuse or misread.
    pub fn check(&self) -> io::Result<()> {
        if self.kernel.is_empty() {
            return Err(invalid("the kernel is empty".into()));
        }
        if self.ramdisks.is_empty() {
            return Err(invalid("an EIF needs at least one ramdisk".into()));
        }
        if let Some(i) = self.ramdisks.iter().position(|r| r.is_empty()) {
            return Err(invalid(format!("ramdisk {i} is empty: the enclave would boot without its files")));
        }
        if self.cmdline.contains(&0) {
            return Err(invalid("the kernel command line contains a NUL byte".into()));
        }
        if 3 + self.ramdisks.len() + 1 > MAX_SECTIONS {
            return Err(invalid(format!("{} ramdisks do not fit in the {MAX_SECTIONS}-section table", self.ramdisks.len())));
        }
        Ok(())
    }

    /// Sections in file order (the signature last, when given).
    fn sections<'s>(&'s self, signature: Option<&'s [u8]>) -> Vec<(SectionType, Data<'s>)> {
        let mut v = vec![
            (SectionType::Kernel, self.kernel),
            (SectionType::Cmdline, Data::Bytes(self.cmdline)),
            (SectionType::Metadata, Data::Bytes(self.metadata)),
        ];
        v.extend(self.ramdisks.iter().map(|r| (SectionType::Ramdisk, *r)));
        if let Some(s) = signature {
            v.push((SectionType::Signature, Data::Bytes(s)));
        }
        v
    }
}

/// PCR0/1/2 of an image (PCR8 is added by the signer: [`Pcrs::with_certificate`]).
pub fn measure(img: &Image) -> io::Result<Pcrs> {
    img.check()?;
    let mut m = Measurer::new();
    img.kernel.for_each_chunk(|c| {
        m.update(Part::Kernel, c);
        Ok(())
    })?;
    m.update(Part::Cmdline, img.cmdline);
    for (i, r) in img.ramdisks.iter().enumerate() {
        r.for_each_chunk(|c| {
            m.update(Part::Ramdisk(i), c);
            Ok(())
        })?;
    }
    Ok(m.finish())
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The header with its table filled and `crc32` still 0.
    pub header: Header,
    /// `(type, offset of its header, data size)` in file order.
    pub sections: Vec<(SectionType, u64, u64)>,
    pub total: u64,
}

/// Lay out the file from section sizes alone.
pub fn layout(img: &Image, signature: Option<&[u8]>) -> Layout {
    let mut header = Header {
        magic: format::MAGIC,
        version: format::VERSION,
        flags: img.flags,
        default_mem: img.default_mem,
        default_cpus: img.default_cpus,
        reserved: 0,
        num_sections: 0,
        section_offsets: [0; MAX_SECTIONS],
        section_sizes: [0; MAX_SECTIONS],
        unused: 0,
        crc32: 0,
    };
    let mut off = HEADER_LEN as u64;
    let mut sections = Vec::new();
    for (i, (kind, data)) in img.sections(signature).into_iter().enumerate() {
        header.section_offsets[i] = off;
        header.section_sizes[i] = data.len();
        sections.push((kind, off, data.len()));
        off += SECTION_HEADER_LEN as u64 + data.len();
    }
    header.num_sections = sections.len() as u16;
    Layout { header, sections, total: off }
}

/// What [`write()`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub layout: Layout,
    pub crc32: u32,
}

/// Write the EIF: `signature` is the signature section ([`super::sign`]) or `None`.
pub fn write(img: &Image, signature: Option<&[u8]>, w: &mut impl Write) -> io::Result<Written> {
    img.check()?;
    let mut lay = layout(img, signature);
    let sections = img.sections(signature);

    let mut crc = crc32fast::Hasher::new();
    crc.update(&lay.header.to_bytes()[..format::CRC_OFFSET]);
    for (kind, data) in &sections {
        crc.update(&SectionHeader::new(*kind, data.len()).to_bytes());
        data.for_each_chunk(|c| {
            crc.update(c);
            Ok(())
        })?;
    }
    lay.header.crc32 = crc.finalize();

    let mut n = 0u64;
    w.write_all(&lay.header.to_bytes())?;
    n += HEADER_LEN as u64;
    for ((kind, data), (_, off, _)) in sections.iter().zip(&lay.sections) {
        debug_assert_eq!(n, *off);
        w.write_all(&SectionHeader::new(*kind, data.len()).to_bytes())?;
        data.for_each_chunk(|c| w.write_all(c))?;
        n += SECTION_HEADER_LEN as u64 + data.len();
    }
    debug_assert_eq!(n, lay.total);
    let crc32 = lay.header.crc32;
    Ok(Written { layout: lay, crc32 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::eif::format::{BuildInfo, Metadata};

    pub(crate) fn vector_metadata() -> Vec<u8> {
        Metadata {
            image_name: "test".into(),
            image_version: "1.0".into(),
            build: BuildInfo {
                build_time: format::build_time(0),
                build_tool: "t".into(),
                build_tool_version: "0".into(),
                operating_system: "OS".into(),
                kernel_version: "kernel".into(),
            },
            docker_info: serde_json::Value::Null,
            custom: serde_json::Value::Null,
        }
        .to_json()
    }

    fn vector_image<'a>(meta: &'a [u8]) -> Image<'a> {
        Image {
            flags: 0,
            default_mem: format::DEFAULT_MEM,
            default_cpus: format::DEFAULT_CPUS,
            kernel: Data::Bytes(b"KERNEL-BYTES"),
            cmdline: b"console=ttyS0",
            metadata: meta,
            ramdisks: vec![Data::Bytes(b"RAMDISK0"), Data::Bytes(b"RAMDISK1")],
        }
    }

    /// DESIGN §7's test vector (AWS's builder, checked by an independent reimplementation).
    /// If this fails, the format changed: update only if that is intentional and re-checked
    /// with the independent reader in tests/it/eif.rs (AWS's crate is not built here).
    #[test]
    fn design_test_vector() {
        let meta = vector_metadata();
        assert_eq!(
            std::str::from_utf8(&meta).unwrap(),
            r#"{"ImageName":"test","ImageVersion":"1.0","BuildMetadata":{"BuildTime":"1970-01-01T00:00:00+00:00","BuildTool":"t","BuildToolVersion":"0","OperatingSystem":"OS","KernelVersion":"kernel"},"DockerInfo":null,"CustomMetadata":null}"#
        );
        let img = vector_image(&meta);
        let mut out = Vec::new();
        let w = write(&img, None, &mut out).unwrap();
        assert_eq!(out.len(), 875);
        assert_eq!(w.layout.total, 875);
        assert_eq!(crate::digest::Digest::of_bytes(&out).hex(), "889a5c9e00c5b71419056b4769db02b1990e80f1454104182e49880874ce86e1");
        assert_eq!(w.crc32, 0x5d55e54d);
        let p = measure(&img).unwrap();
        assert_eq!(hex::encode(p.pcr0), "ea8eaacf9cf7fd4f4511a0dddfc35aa0ae8b48e0bd7cd791d983e6173efcdfe18efb5bfd3fba1cc14f5bb21b13c6f202");
        assert_eq!(hex::encode(p.pcr1), "6bb7349f29c689b9e470b08093e1ed4e44276099613cdecc7b412dd73c260880844b009ab65e14def6a9a7ce0346eb3c");
        assert_eq!(hex::encode(p.pcr2), "5f699ae4300525c628f5c96fc521729dd6ca1a2c07cb07b69e7ae9e3fa935cfd7cc83b3e26d89201a486d9db2405c562");

        // Read back: same CRC, PCRs, table and sections.
        let s = format::read(&mut &out[..], out.len() as u64).unwrap();
        assert!(s.crc_ok());
        assert_eq!(s.pcrs, p);
        assert_eq!(s.header, w.layout.header.clone().with_crc(w.crc32));
        let kinds: Vec<_> = s.sections.iter().map(|x| (x.kind.name(), x.offset, x.size)).collect();
        assert_eq!(
            kinds,
            [("kernel", 548, 12), ("cmdline", 572, 13), ("metadata", 597, 226), ("ramdisk", 835, 8), ("ramdisk", 855, 8)]
        );
        assert_eq!(s.cmdline, b"console=ttyS0");
        assert_eq!(s.metadata.as_deref(), Some(&meta[..]));
    }

    #[test]
    fn file_data_equals_bytes_data() {
        let meta = vector_metadata();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"RAMDISK1").unwrap();
        let mut img = vector_image(&meta);
        img.ramdisks[1] = Data::File { file: &f, len: 8 };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write(&img, None, &mut a).unwrap();
        write(&vector_image(&meta), None, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn refuses_empty_and_missing_ramdisks_and_nul() {
        let meta = vector_metadata();
        let mut img = vector_image(&meta);
        img.ramdisks[1] = Data::Bytes(b"");
        let e = write(&img, None, &mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("ramdisk 1 is empty"), "{e}");
        img.ramdisks.clear();
        assert!(measure(&img).unwrap_err().to_string().contains("at least one ramdisk"));
        let mut img = vector_image(&meta);
        img.cmdline = b"a\0b";
        assert!(write(&img, None, &mut Vec::new()).unwrap_err().to_string().contains("NUL"));
    }

    #[test]
    fn damaged_and_truncated_files_are_reported() {
        let meta = vector_metadata();
        let mut out = Vec::new();
        write(&vector_image(&meta), None, &mut out).unwrap();
        // A flipped data byte: reads, but the CRC check fails.
        let mut bad = out.clone();
        bad[600] ^= 1;
        let s = format::read(&mut &bad[..], bad.len() as u64).unwrap();
        assert!(!s.crc_ok());
        // Truncated inside a section, inside a section header, inside the header.
        for len in [870, 840, 300] {
            let e = format::read(&mut &out[..len], len as u64).unwrap_err().to_string();
            assert!(e.contains("truncated"), "{len}: {e}");
        }
        // A wrong magic.
        let mut bad = out.clone();
        bad[0] = b'x';
        assert!(format::read(&mut &bad[..], bad.len() as u64).unwrap_err().to_string().contains("not an EIF"));
        // An invalid section type.
        let mut bad = out.clone();
        bad[549] = 9;
        assert!(format::read(&mut &bad[..], bad.len() as u64).unwrap_err().to_string().contains("invalid type 9"));
    }
}
