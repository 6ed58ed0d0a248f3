//! EIF → what `stagebox inspect` shows: a JSON description (the file, the header, the section
//! table, the command line, the signature; snake_case keys like all of stagebox's JSON) that
//! carries, under `describe_eif`, exactly what `nitro-cli describe-eif` prints (EifVersion,
//! Measurements, IsSigned, CheckCRC, ImageName, ImageVersion, Metadata: its key names, so the
//! two compare), and a text dump of the same for review.

use super::format::{self, Scan, SectionType};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct SectionInfo {
    #[serde(rename = "type")]
    pub kind: String,
    /// File offset of the section header.
    pub offset: u64,
    /// Data size.
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeaderInfo {
    pub version: u16,
    pub flags: u16,
    pub arch: &'static str,
    pub default_mem: u64,
    pub default_cpus: u64,
    pub num_sections: u16,
    pub crc32: String,
    pub computed_crc32: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignatureInfo {
    pub certificate_sha256: String,
    pub register_index: i128,
    pub register_value: String,
    /// The COSE signature verifies with the certificate's key, and signs this file's PCR0.
    #[serde(rename = "signature_check")]
    pub check: bool,
}

/// What `nitro-cli describe-eif` prints, under its own key names.
#[derive(Debug, Clone, Serialize)]
pub struct DescribeEif {
    #[serde(rename = "EifVersion")]
    pub eif_version: u16,
    #[serde(rename = "Measurements")]
    pub measurements: serde_json::Map<String, serde_json::Value>,
    #[serde(rename = "IsSigned")]
    pub is_signed: bool,
    #[serde(rename = "CheckCRC")]
    pub check_crc: bool,
    #[serde(rename = "ImageName", skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    #[serde(rename = "ImageVersion", skip_serializing_if = "Option::is_none")]
    pub image_version: Option<String>,
    #[serde(rename = "Metadata", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// An EIF as `inspect` shows it: ours, and nitro-cli's view under `describe_eif`.
#[derive(Debug, Clone, Serialize)]
pub struct Description {
    pub describe_eif: DescribeEif,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureInfo>,
    pub file: String,
    pub sha256: String,
    pub size: u64,
    pub header: HeaderInfo,
    pub sections: Vec<SectionInfo>,
    pub cmdline: String,
    /// From the kernel's bzImage header, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
}

/// Describe a scanned EIF. `file` and `sha256` name it.
pub fn describe(s: &Scan, file: &str, sha256: &str) -> Description {
    let mut measurements = serde_json::Map::new();
    measurements.insert("HashAlgorithm".into(), crate::measure::pcr::HASH_ALGORITHM.into());
    for (k, v) in s.pcrs.entries() {
        measurements.insert(k.into(), hex::encode(v).into());
    }
    let meta: Option<serde_json::Value> = s.metadata.as_ref().map(|m| {
        serde_json::from_slice(m).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(m).into_owned()))
    });
    let text = |k: &str| meta.as_ref().and_then(|m| m.get(k)).and_then(|v| v.as_str()).map(str::to_string);
    // describe-eif's Metadata: BuildMetadata's fields, then DockerInfo and CustomMetadata.
    let metadata = meta.as_ref().map(|m| {
        let mut o = serde_json::Map::new();
        if let Some(b) = m.get("BuildMetadata").and_then(|b| b.as_object()) {
            o.extend(b.clone());
        }
        for k in ["DockerInfo", "CustomMetadata"] {
            if let Some(v) = m.get(k) {
                o.insert(k.into(), v.clone());
            }
        }
        if o.is_empty() { m.clone() } else { serde_json::Value::Object(o) }
    });
    let signature = s.signature.as_ref().map(|sig| match super::sign::parse_section(sig) {
        Ok(i) => SignatureInfo {
            certificate_sha256: crate::digest::Digest::of_bytes(&i.cert_der).hex().to_string(),
            register_index: i.register_index,
            check: i.verified == Some(true) && i.register_index == 0 && i.register_value == s.pcrs.pcr0,
            register_value: hex::encode(&i.register_value),
        },
        Err(e) => SignatureInfo { certificate_sha256: String::new(), register_index: -1, register_value: e, check: false },
    });
    let h = &s.header;
    Description {
        describe_eif: DescribeEif {
            eif_version: h.version,
            measurements,
            is_signed: s.signature.is_some(),
            check_crc: s.crc_ok(),
            image_name: text("ImageName"),
            image_version: text("ImageVersion"),
            metadata,
        },
        signature,
        file: file.to_string(),
        sha256: sha256.to_string(),
        size: s.file_len,
        header: HeaderInfo {
            version: h.version,
            flags: h.flags,
            arch: if h.flags & format::FLAG_AARCH64 != 0 { "aarch64" } else { "x86_64" },
            default_mem: h.default_mem,
            default_cpus: h.default_cpus,
            num_sections: h.num_sections,
            crc32: format!("0x{:08x}", h.crc32),
            computed_crc32: format!("0x{:08x}", s.computed_crc),
        },
        sections: s.sections.iter().map(|x| SectionInfo { kind: x.kind.name().into(), offset: x.offset, size: x.size }).collect(),
        cmdline: String::from_utf8_lossy(&s.cmdline).into_owned(),
        kernel_release: s
            .sections
            .iter()
            .any(|x| x.kind == SectionType::Kernel)
            .then(|| format::bzimage::version(&s.kernel_head))
            .flatten(),
    }
}

/// A readable dump of a description.
pub fn dump(d: &Description) -> String {
    let n = &d.describe_eif;
    let mut s = format!("# {} ({} bytes, sha256 {})\n", d.file, d.size, d.sha256);
    let h = &d.header;
    s += &format!(
        "eif version {}, flags {:#06x} ({}), default memory {} MiB, {} cpus, {} sections\n",
        h.version,
        h.flags,
        h.arch,
        h.default_mem >> 20,
        h.default_cpus,
        h.num_sections
    );
    s += &format!("crc32 {} ({})\n", h.crc32, if n.check_crc { "ok".to_string() } else { format!("MISMATCH: content gives {}", h.computed_crc32) });
    s += "sections:\n";
    for x in &d.sections {
        s += &format!("  {:<10} at {:>10}  {:>10} bytes\n", x.kind, x.offset, x.size);
    }
    s += &format!("cmdline {}\n", d.cmdline);
    if let Some(k) = &d.kernel_release {
        s += &format!("kernel  {k}\n");
    }
    if let Some(m) = &n.metadata {
        s += &format!("image   {} {}\n", n.image_name.as_deref().unwrap_or("?"), n.image_version.as_deref().unwrap_or("?"));
        if let Some(o) = m.as_object() {
            for (k, v) in o {
                s += &format!("  {k}: {v}\n");
            }
        }
    }
    s += "measurements (SHA-384):\n";
    for (k, v) in &n.measurements {
        if k != "HashAlgorithm" {
            s += &format!("  {k} {}\n", v.as_str().unwrap_or_default());
        }
    }
    if let Some(sig) = &d.signature {
        s += &format!(
            "signature: certificate sha256 {}, signs PCR{} = {}, {}\n",
            sig.certificate_sha256,
            sig.register_index,
            sig.register_value,
            if sig.check { "valid" } else { "INVALID" }
        );
    }
    s
}
