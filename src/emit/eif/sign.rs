//! EIF signing: the signature section and PCR8, as `nitro-cli build-enclave --signing-certificate
//! --private-key` makes them, but deterministic (RFC 6979 nonces) so a signed EIF reproduces.
//!
//! The section is the CBOR of `[{signing_certificate, signature}]`: the certificate as the PEM
//! file's bytes, and a COSE_Sign1 (RFC 8152 §4.2, untagged) whose payload is the CBOR of
//! `{register_index: 0, register_value: PCR0}`, protected header `{1: -35}` (ES384), empty
//! unprotected header, signature `r || s` (48 bytes each) over the SHA-384 of the
//! `Sig_structure` `["Signature1", protected, h'', payload]`. AWS serializes with serde_cbor,
//! whose habit is to write a `Vec<u8>` field as an *array of integers* (not a byte string):
//! that is how `signing_certificate`, `signature` and `register_value` appear, while the COSE
//! fields are real byte strings (serde_bytes). PCR8 is `ext(DER of the certificate)`.
//!
//! The CBOR here is a handful of items with fixed shapes, so it is written by [`Cbor`] (about
//! 30 lines, shortest-form heads as serde_cbor writes them) rather than through a general
//! CBOR crate whose serde mapping of `Vec<u8>` we would have to bend back into arrays anyway.
//! [`decode`] reads the same subset back for `inspect` and for PCR8 of an existing file.

use p384::ecdsa::signature::{Signer as _, Verifier as _};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use x509_cert::der::{Decode, DecodePem, Encode};

/// COSE algorithm ES384 (ECDSA with SHA-384), RFC 8152 table 5.
pub const COSE_ES384: i64 = -35;

/// A small CBOR writer: definite lengths, shortest heads (RFC 8949 §4.2.1, serde_cbor's output).
#[derive(Default)]
pub struct Cbor(pub Vec<u8>);

impl Cbor {
    fn head(&mut self, major: u8, n: u64) -> &mut Self {
        let m = major << 5;
        match n {
            0..=23 => self.0.push(m | n as u8),
            24..=0xff => self.0.extend_from_slice(&[m | 24, n as u8]),
            0x100..=0xffff => {
                self.0.push(m | 25);
                self.0.extend_from_slice(&(n as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.0.push(m | 26);
                self.0.extend_from_slice(&(n as u32).to_be_bytes());
            }
            _ => {
                self.0.push(m | 27);
                self.0.extend_from_slice(&n.to_be_bytes());
            }
        }
        self
    }
    pub fn int(&mut self, v: i64) -> &mut Self {
        if v >= 0 { self.head(0, v as u64) } else { self.head(1, (-1 - v) as u64) }
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.head(2, b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    pub fn text(&mut self, s: &str) -> &mut Self {
        self.head(3, s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn array(&mut self, n: usize) -> &mut Self {
        self.head(4, n as u64)
    }
    pub fn map(&mut self, n: usize) -> &mut Self {
        self.head(5, n as u64)
    }
    /// A byte vector the way serde_cbor writes a `Vec<u8>`: an array of integers.
    pub fn byte_array(&mut self, b: &[u8]) -> &mut Self {
        self.array(b.len());
        for x in b {
            self.int(i64::from(*x));
        }
        self
    }
}

/// The COSE protected header `{1: -35}`, serialized.
pub fn protected_header() -> Vec<u8> {
    let mut c = Cbor::default();
    c.map(1).int(1).int(COSE_ES384);
    c.0
}

/// The signed payload: `{register_index: index, register_value: value}` (AWS's `PcrInfo`).
pub fn pcr_payload(index: i64, value: &[u8]) -> Vec<u8> {
    let mut c = Cbor::default();
    c.map(2).text("register_index").int(index).text("register_value").byte_array(value);
    c.0
}

/// The bytes that are hashed and signed: `["Signature1", protected, h'', payload]`.
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut c = Cbor::default();
    c.array(4).text("Signature1").bytes(protected).bytes(&[]).bytes(payload);
    c.0
}

/// The validity window of a DER certificate: (notBefore, notAfter) in seconds since the epoch.
pub fn validity(cert_der: &[u8]) -> Result<(u64, u64), String> {
    let cert = x509_cert::Certificate::from_der(cert_der).map_err(|e| format!("signing certificate: {e}"))?;
    let v = &cert.tbs_certificate.validity;
    Ok((v.not_before.to_unix_duration().as_secs(), v.not_after.to_unix_duration().as_secs()))
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
fn when(t: u64) -> String {
    let (y, mo, d, h, mi, s) = crate::date::utc(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// A warning is due when the certificate expires within this many seconds of now (30 days).
pub const EXPIRY_WARNING: u64 = 30 * 24 * 3600;

/// Check a certificate's window against SOURCE_DATE_EPOCH (`sde`, the build's time) and the
/// current time (`now`, when nitro-cli will check it: it refuses an expired or not yet valid
/// certificate with E59). Err names which of the two times falls outside; Ok carries a warning
/// when it expires within 30 days of `now`. Neither time reaches the output.
pub fn check_validity((not_before, not_after): (u64, u64), sde: u64, now: u64) -> Result<Option<String>, String> {
    let window = format!("valid from {} to {}", when(not_before), when(not_after));
    let mut bad = Vec::new();
    for (t, what) in [(sde, "SOURCE_DATE_EPOCH"), (now, "the current time")] {
        if t > not_after {
            bad.push(format!("expired at {what} ({})", when(t)));
        } else if t < not_before {
            bad.push(format!("not yet valid at {what} ({})", when(t)));
        }
    }
    if !bad.is_empty() {
        return Err(format!("signing certificate is {} ({window}); nitro-cli refuses it (E59)", bad.join(" and ")));
    }
    if not_after - now < EXPIRY_WARNING {
        return Ok(Some(format!("signing certificate expires in {} days, on {} ({window})", (not_after - now) / 86400, when(not_after))));
    }
    Ok(None)
}

/// A signing certificate and its P-384 key, checked to belong together.
pub struct SigningIdentity {
    /// The certificate file as it was read (PEM), stored as such in the section.
    pub cert_pem: Vec<u8>,
    pub cert_der: Vec<u8>,
    key: SigningKey,
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningIdentity").field("cert_der_len", &self.cert_der.len()).finish_non_exhaustive()
    }
}

/// The DER of a PEM certificate (one `CERTIFICATE` block).
pub fn certificate_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let cert = x509_cert::Certificate::from_pem(pem).map_err(|e| format!("not a PEM X.509 certificate: {e}"))?;
    cert.to_der().map_err(|e| format!("certificate does not re-encode: {e}"))
}

impl SigningIdentity {
    /// From the PEM certificate and PEM private key (SEC1 `EC PRIVATE KEY` or PKCS#8
    /// `PRIVATE KEY`) as read from their files. Errors say which of the two is wrong.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, String> {
        let cert_der = certificate_der(cert_pem).map_err(|e| format!("signing certificate: {e}"))?;
        let cert = x509_cert::Certificate::from_der(&cert_der).map_err(|e| format!("signing certificate: {e}"))?;
        let key_text = std::str::from_utf8(key_pem).map_err(|_| "signing key: not a PEM file".to_string())?;
        use p384::pkcs8::DecodePrivateKey;
        let secret = p384::SecretKey::from_sec1_pem(key_text)
            .or_else(|_| p384::SecretKey::from_pkcs8_pem(key_text))
            .map_err(|_| "signing key: not a P-384 (secp384r1) private key in PEM (SEC1 \"EC PRIVATE KEY\" or PKCS#8 \"PRIVATE KEY\"); Nitro signs with ECDSA P-384".to_string())?;
        let key = SigningKey::from(&secret);
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| format!("signing certificate: public key: {e}"))?;
        use p384::pkcs8::DecodePublicKey;
        let cert_key = p384::PublicKey::from_public_key_der(&spki)
            .map_err(|_| "signing certificate: its public key is not a P-384 key; Nitro signs with ECDSA P-384".to_string())?;
        if cert_key != secret.public_key() {
            return Err("the signing key does not match the signing certificate's public key".into());
        }
        Ok(SigningIdentity { cert_pem: cert_pem.to_vec(), cert_der, key })
    }

    /// The untagged COSE_Sign1 over `payload`. Deterministic: RFC 6979 nonces.
    pub fn cose_sign1(&self, payload: &[u8]) -> Vec<u8> {
        let protected = protected_header();
        let sig: Signature = self.key.sign(&sig_structure(&protected, payload));
        let mut c = Cbor::default();
        c.array(4).bytes(&protected).map(0).bytes(payload).bytes(&sig.to_bytes());
        c.0
    }

    /// The signature section for an EIF whose PCR0 is `pcr0`.
    pub fn signature_section(&self, pcr0: &[u8]) -> Vec<u8> {
        let cose = self.cose_sign1(&pcr_payload(0, pcr0));
        let mut c = Cbor::default();
        c.array(1).map(2).text("signing_certificate").byte_array(&self.cert_pem).text("signature").byte_array(&cose);
        c.0
    }
}

/// A decoded CBOR item (the subset EIF signatures use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i128),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Tag(u64, Box<Value>),
    Simple(u8),
}

impl Value {
    /// A byte string, or an array of integers 0..=255 (serde_cbor's `Vec<u8>`).
    pub fn as_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Value::Bytes(b) => Some(b.clone()),
            Value::Array(a) => a.iter().map(|v| if let Value::Int(i) = v { u8::try_from(*i).ok() } else { None }).collect(),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m.iter().find(|(k, _)| matches!(k, Value::Text(t) if t == key)).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Decode one CBOR item that fills `b` exactly.
pub fn decode(b: &[u8]) -> Result<Value, String> {
    let mut pos = 0;
    let v = item(b, &mut pos, 0)?;
    if pos != b.len() {
        return Err(format!("{} trailing bytes after the CBOR item", b.len() - pos));
    }
    Ok(v)
}

fn item(b: &[u8], pos: &mut usize, depth: usize) -> Result<Value, String> {
    if depth > 16 {
        return Err("CBOR nested too deeply".into());
    }
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = b.get(*pos..*pos + n).ok_or_else(|| "CBOR item runs past the end".to_string())?;
        *pos += n;
        Ok(s)
    };
    let ib = take(pos, 1)?[0];
    let (major, info) = (ib >> 5, ib & 31);
    let n: u64 = match info {
        0..=23 => u64::from(info),
        24 => u64::from(take(pos, 1)?[0]),
        25 => u64::from(u16::from_be_bytes(take(pos, 2)?.try_into().expect("2"))),
        26 => u64::from(u32::from_be_bytes(take(pos, 4)?.try_into().expect("4"))),
        27 => u64::from_be_bytes(take(pos, 8)?.try_into().expect("8")),
        _ => return Err(format!("unsupported CBOR head 0x{ib:02x} (indefinite lengths are not used here)")),
    };
    let len = |n: u64| usize::try_from(n).ok().filter(|n| *n <= b.len()).ok_or_else(|| "CBOR length too large".to_string());
    Ok(match major {
        0 => Value::Int(i128::from(n)),
        1 => Value::Int(-1 - i128::from(n)),
        2 => Value::Bytes(take(pos, len(n)?)?.to_vec()),
        3 => Value::Text(String::from_utf8(take(pos, len(n)?)?.to_vec()).map_err(|_| "CBOR text is not UTF-8".to_string())?),
        4 => Value::Array((0..len(n)?).map(|_| item(b, pos, depth + 1)).collect::<Result<_, _>>()?),
        5 => Value::Map((0..len(n)?).map(|_| Ok((item(b, pos, depth + 1)?, item(b, pos, depth + 1)?))).collect::<Result<_, String>>()?),
        6 => Value::Tag(n, Box::new(item(b, pos, depth + 1)?)),
        _ => Value::Simple(info),
    })
}

/// What a signature section holds, decoded.
#[derive(Debug, Clone)]
pub struct SignatureInfo {
    pub cert_pem: Vec<u8>,
    pub cert_der: Vec<u8>,
    /// The PCR index and value the COSE payload names.
    pub register_index: i128,
    pub register_value: Vec<u8>,
    /// Whether the COSE signature verifies with the certificate's key (None: not checkable,
    /// e.g. a key that is not P-384).
    pub verified: Option<bool>,
}

/// Decode a signature section: the first entry's certificate and COSE_Sign1, verified.
pub fn parse_section(section: &[u8]) -> Result<SignatureInfo, String> {
    let v = decode(section)?;
    let first = match &v {
        Value::Array(a) if !a.is_empty() => &a[0],
        _ => return Err("not a CBOR array of signatures".into()),
    };
    let cert_pem = first.get("signing_certificate").and_then(Value::as_bytes).ok_or("no signing_certificate")?;
    let cose = first.get("signature").and_then(Value::as_bytes).ok_or("no signature")?;
    let cert_der = certificate_der(&cert_pem)?;
    let c = match decode(&cose)? {
        Value::Tag(18, inner) => *inner,
        c => c,
    };
    let Value::Array(parts) = c else { return Err("COSE_Sign1 is not an array".into()) };
    let [Value::Bytes(protected), _, Value::Bytes(payload), Value::Bytes(sig)] = &parts[..] else {
        return Err("COSE_Sign1 is not [protected, unprotected, payload, signature]".into());
    };
    let p = decode(payload)?;
    let register_index = match p.get("register_index") {
        Some(Value::Int(i)) => *i,
        _ => return Err("COSE payload has no register_index".into()),
    };
    let register_value = p.get("register_value").and_then(Value::as_bytes).ok_or("COSE payload has no register_value")?;
    let verified = (|| {
        let cert = x509_cert::Certificate::from_der(&cert_der).ok()?;
        use p384::pkcs8::DecodePublicKey;
        let spki = cert.tbs_certificate.subject_public_key_info.to_der().ok()?;
        let vk = VerifyingKey::from_public_key_der(&spki).ok()?;
        let s = Signature::from_slice(sig).ok()?;
        Some(vk.verify(&sig_structure(protected, payload), &s).is_ok())
    })();
    Ok(SignatureInfo { cert_pem, cert_der, register_index, register_value, verified })
}

/// The DER of the certificate in a signature section (for PCR8).
pub fn certificate_der_from_section(section: &[u8]) -> Result<Vec<u8>, String> {
    parse_section(section).map(|s| s.cert_der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_validity_at_both_times() {
        let day = 86400;
        let w = (100 * day, 400 * day);
        assert_eq!(check_validity(w, 200 * day, 200 * day), Ok(None));
        let e = check_validity(w, 1, 200 * day).unwrap_err();
        assert!(e.contains("not yet valid at SOURCE_DATE_EPOCH (1970-01-01 00:00:01 UTC)") && !e.contains("current"), "{e}");
        let e = check_validity(w, 200 * day, 500 * day).unwrap_err();
        assert!(e.starts_with("signing certificate is expired at the current time") && e.contains("E59"), "{e}");
        let e = check_validity(w, 500 * day, 501 * day).unwrap_err();
        assert!(e.contains("expired at SOURCE_DATE_EPOCH") && e.contains("and expired at the current time"), "{e}");
        let warn = check_validity(w, 200 * day, 390 * day).unwrap().unwrap();
        assert!(warn.contains("expires in 10 days") && warn.contains("1971-02-05"), "{warn}");
    }

    #[test]
    fn cbor_heads_as_serde_cbor_writes_them() {
        assert_eq!(protected_header(), [0xa1, 0x01, 0x38, 0x22]);
        let mut c = Cbor::default();
        c.int(23).int(24).int(255).int(256).int(-1).int(-25).byte_array(&[0, 200]);
        assert_eq!(c.0, [23, 0x18, 24, 0x18, 0xff, 0x19, 1, 0, 0x20, 0x38, 24, 0x82, 0, 0x18, 200]);
        let p = pcr_payload(0, &[7; 48]);
        assert_eq!(&p[..2], &[0xa2, 0x6e]);
        assert_eq!(&p[16..18], &[0x00, 0x6e]);
        assert_eq!(&p[32..34], &[0x98, 0x30]);
        let d = decode(&p).unwrap();
        assert_eq!(d.get("register_value").unwrap().as_bytes().unwrap(), vec![7; 48]);
        assert!(decode(&[0x82, 0x01]).is_err(), "a short array is an error, not a panic");
        assert!(decode(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
