//! EIF → what `stagebox inspect` shows: a JSON description (the file, the header, the section
//! table, the command line, the signature, the smallest `--memory`; snake_case keys like all of
//! stagebox's JSON) that carries, under `describe_eif`, exactly what `nitro-cli describe-eif`
//! prints (EifVersion, Measurements, IsSigned, SigningCertificate, CheckCRC, SignatureCheck,
//! ImageName, ImageVersion, Metadata, as aws-nitro-enclaves-cli's `EifDescribeInfo` and the
//! image-format crate's `SignCertificateInfo` serialize them: its key names, so the two
//! compare), and a text dump of the same for review.
//!
//! `SigningCertificate` renders the certificate the way nitro-cli's OpenSSL calls print it:
//! issuer attributes by long name (`commonName`), the signature algorithm by long name
//! (`ecdsa-with-SHA384`), times as `ASN1_TIME_print` does (`Dec  2 11:09:15 2026 GMT`) and
//! the signature as upper-case hex bytes joined by `:`.

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

/// describe-eif's `SigningCertificate` (the image-format crate's `SignCertificateInfo`).
#[derive(Debug, Clone, Serialize)]
pub struct CertificateInfo {
    #[serde(rename = "IssuerName")]
    pub issuer_name: std::collections::BTreeMap<String, String>,
    #[serde(rename = "Algorithm")]
    pub algorithm: String,
    #[serde(rename = "NotBefore")]
    pub not_before: String,
    #[serde(rename = "NotAfter")]
    pub not_after: String,
    /// The certificate's signature, `XX:XX:…`.
    #[serde(rename = "Signature")]
    pub signature: String,
}

/// Long names of the attribute OIDs certificates use (OpenSSL's `OBJ_obj2txt` names).
const ATTRIBUTE_NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "commonName"),
    ("2.5.4.4", "surname"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.6", "countryName"),
    ("2.5.4.7", "localityName"),
    ("2.5.4.8", "stateOrProvinceName"),
    ("2.5.4.9", "streetAddress"),
    ("2.5.4.10", "organizationName"),
    ("2.5.4.11", "organizationalUnitName"),
    ("2.5.4.12", "title"),
    ("2.5.4.42", "givenName"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
    ("0.9.2342.19200300.100.1.25", "domainComponent"),
    ("0.9.2342.19200300.100.1.1", "userId"),
];

/// Long names of signature algorithm OIDs.
const ALGORITHM_NAMES: &[(&str, &str)] = &[
    ("1.2.840.10045.4.3.2", "ecdsa-with-SHA256"),
    ("1.2.840.10045.4.3.3", "ecdsa-with-SHA384"),
    ("1.2.840.10045.4.3.4", "ecdsa-with-SHA512"),
    ("1.2.840.113549.1.1.11", "sha256WithRSAEncryption"),
    ("1.2.840.113549.1.1.12", "sha384WithRSAEncryption"),
    ("1.2.840.113549.1.1.13", "sha512WithRSAEncryption"),
];

fn long_name(table: &[(&str, &'static str)], oid: &str) -> String {
    table.iter().find(|(o, _)| *o == oid).map_or_else(|| oid.to_string(), |(_, n)| n.to_string())
}

/// `ASN1_TIME_print`'s form: `Mon DD HH:MM:SS YYYY GMT`, the day padded with a space.
fn asn1_time(t: u64) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (y, mo, d, h, mi, s) = crate::date::utc(t);
    format!("{} {d:2} {h:02}:{mi:02}:{s:02} {y} GMT", MONTHS[mo as usize - 1])
}

/// describe-eif's `SigningCertificate` for a DER certificate.
pub fn certificate_info(der: &[u8]) -> Result<CertificateInfo, String> {
    use x509_cert::der::{Decode, Tag, Tagged};
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| format!("signing certificate: {e}"))?;
    let mut issuer_name = std::collections::BTreeMap::new();
    for rdn in cert.tbs_certificate.issuer.0.iter() {
        for atv in rdn.0.iter() {
            let v = &atv.value;
            let text = match v.tag() {
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString | Tag::VisibleString => {
                    String::from_utf8_lossy(v.value()).into_owned()
                }
                Tag::BmpString => String::from_utf16_lossy(&v.value().chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect::<Vec<_>>()),
                _ => "error".to_string(),
            };
            // nitro-cli prints the value with Rust's `{:?}` and strips the quotes.
            issuer_name.insert(long_name(ATTRIBUTE_NAMES, &atv.oid.to_string()), format!("{text:?}").replace('"', ""));
        }
    }
    let v = &cert.tbs_certificate.validity;
    Ok(CertificateInfo {
        issuer_name,
        algorithm: long_name(ALGORITHM_NAMES, &cert.signature_algorithm.oid.to_string()),
        not_before: asn1_time(v.not_before.to_unix_duration().as_secs()),
        not_after: asn1_time(v.not_after.to_unix_duration().as_secs()),
        signature: cert.signature.raw_bytes().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"),
    })
}

/// What `nitro-cli describe-eif` prints, under its own key names and in its shapes.
#[derive(Debug, Clone, Serialize)]
pub struct DescribeEif {
    #[serde(rename = "EifVersion")]
    pub eif_version: u16,
    #[serde(rename = "Measurements")]
    pub measurements: serde_json::Map<String, serde_json::Value>,
    #[serde(rename = "IsSigned")]
    pub is_signed: bool,
    #[serde(rename = "SigningCertificate", skip_serializing_if = "Option::is_none")]
    pub signing_certificate: Option<CertificateInfo>,
    #[serde(rename = "CheckCRC")]
    pub check_crc: bool,
    /// Signed EIFs only: the COSE signature verifies and signs this file's PCR0.
    #[serde(rename = "SignatureCheck", skip_serializing_if = "Option::is_none")]
    pub signature_check: Option<bool>,
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
    /// The smallest `nitro-cli run-enclave --memory` (MiB) that takes this file.
    pub min_memory_mib: u64,
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
    // describe-eif's Metadata (`MetadataDescribeInfo`): BuildMetadata's fields, DockerInfo
    // (null included), then CustomMetadata's keys flattened in (nothing when it is null).
    let metadata = meta.as_ref().map(|m| {
        let mut o = serde_json::Map::new();
        if let Some(b) = m.get("BuildMetadata").and_then(|b| b.as_object()) {
            o.extend(b.clone());
        }
        o.insert("DockerInfo".into(), m.get("DockerInfo").cloned().unwrap_or(serde_json::Value::Null));
        match m.get("CustomMetadata") {
            Some(serde_json::Value::Object(c)) => o.extend(c.clone()),
            Some(serde_json::Value::Null) | None => {}
            Some(other) => {
                o.insert("CustomMetadata".into(), other.clone());
            }
        }
        serde_json::Value::Object(o)
    });
    let parsed = s.signature.as_ref().map(|sig| super::sign::parse_section(sig));
    let signing_certificate = match &parsed {
        Some(Ok(i)) => certificate_info(&i.cert_der).ok(),
        _ => None,
    };
    let signature = parsed.map(|p| match p {
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
            signing_certificate,
            check_crc: s.crc_ok(),
            signature_check: signature.as_ref().map(|x| x.check),
            image_name: text("ImageName"),
            image_version: text("ImageVersion"),
            metadata,
        },
        signature,
        file: file.to_string(),
        sha256: sha256.to_string(),
        size: s.file_len,
        min_memory_mib: format::min_memory_mib(s.file_len),
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
    s += &format!("memory  at least {} MiB (nitro-cli run-enclave --memory)\n", d.min_memory_mib);
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
    if let Some(c) = &n.signing_certificate {
        let issuer: Vec<String> = c.issuer_name.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s += &format!("certificate: issuer {}, {}, valid {} to {}\n", issuer.join(", "), c.algorithm, c.not_before, c.not_after);
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
