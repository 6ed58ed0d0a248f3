//! OpenPGP signatures of reproducers over the build statements they made: for one signature
//! file, which trusted key signed which bytes, or why the signature does not count.
//!
//! A reproducer builds a box and signs its `NAME.intoto.json` with the tools StageX signers
//! use (`gpg --sign`, `gpg --clearsign`, `gpg --detach-sign`, `sq sign`, armored or binary).
//! Three forms are read:
//! - an inline-signed message (one-pass signature, literal data, signature; compressed or
//!   not): the signed bytes are in the file, so the verifier reads what the signer attested;
//! - a cleartext-signed message (`gpg --clearsign`), the same with the text readable;
//! - a detached signature: it is checked over the statement published beside it when there is
//!   one (given by the caller), else over the verifier's own statement.
//!
//! Which files to read and what a statement means are the caller's (`cmd::verify_build`); this
//! module only answers "who signed these bytes, and does that key count". A signature counts
//! when it verifies against the primary key or a signing subkey of a key in the trusted
//! keyring, and that key (and subkey) is neither expired nor revoked now; everything else is
//! reported with its reason: bad signature, key not in the keyring, expired, revoked, garbled
//! file. The keyring and its loading are [`super::signature`]'s.
//!
//! Memory: a signature file is read whole up to 1 MiB (`MAX_SIGNATURE_BYTES`), and the signed
//! statement inside it is read (decompressed) up to 1 MiB, never further.

use super::signature::{issuer_of, key_problem, KeyState, Keyring, Lookaside, TrustedKey, MAX_SIGNATURE_BYTES};
use crate::error::{Error, IoContext, Result};
use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, Message, SignedPublicSubKey};
use pgp::packet::{Signature, SignatureType};

use serde::Serialize;

/// A signed statement larger than this is refused (a statement is a few KiB).
const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Signatures read from one file at most (co-signers of one file).
const MAX_SIGNATURES_PER_FILE: usize = 64;

/// How the file carries its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    Inline,
    Cleartext,
    Detached,
}

/// What the signature check found; only [`Status::Good`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Verifies against a trusted key that is valid now.
    Good,
    /// A trusted key's signature that does not verify over the bytes.
    Bad,
    /// Made by a key outside the trusted keyring.
    UnknownKey,
    /// Made by a trusted key (or subkey) that has expired, or the signature itself expired.
    Expired,
    /// Made by a trusted key (or subkey) that is revoked.
    Revoked,
    /// Not a readable OpenPGP signature or signed message.
    Garbled,
}

/// The outcome for one signature file.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub form: Option<Form>,
    pub status: Status,
    /// Primary key fingerprint (upper-case hex) of the signer, when known.
    pub fingerprint: Option<String>,
    /// The signer's first user id, when the key is in the keyring.
    pub user_id: Option<String>,
    /// Why it does not count (empty when good).
    pub reason: String,
    /// The signed bytes, when the file carries them or names them (inline, cleartext, or a
    /// detached signature with its statement); also set for signatures that do not count, so a
    /// caller can say what was attested.
    #[serde(skip)]
    pub payload: Option<Vec<u8>>,
    /// For a detached signature: what it was checked over.
    pub signed_over: Option<String>,
}

impl Checked {
    fn garbled(form: Option<Form>, reason: String) -> Checked {
        Checked { form, status: Status::Garbled, fingerprint: None, user_id: None, reason, payload: None, signed_over: None }
    }
}

/// One signature file to check.
pub struct SignatureFile<'a> {
    pub data: &'a [u8],
    /// For a detached signature: the statement published beside it (name, bytes), if any.
    pub beside: Option<(&'a str, &'a [u8])>,
    /// For a detached signature without one: the verifier's own statement (name, bytes).
    pub local: (&'a str, &'a [u8]),
}

/// File name endings read as signature files from a directory.
pub const SIGNATURE_EXTENSIONS: &[&str] = &["sig", "asc", "gpg"];

/// A signature file as found, with the statement published beside it (if any).
#[derive(Debug, Clone)]
pub struct Found {
    /// Where it was found: a path, or a URL.
    pub name: String,
    pub data: Vec<u8>,
    /// For a detached signature: the statement beside it (name, bytes).
    pub beside: Option<(String, Vec<u8>)>,
}

/// Every reproducer's signature for box `name` `version` under `la`.
///
/// A directory: `DIR/<name>/<version>/` when that exists (the publishing layout), else `DIR`
/// itself; every file ending in `.sig`, `.asc` or `.gpg`, in bytewise name order. An `https://`
/// base: `<base>/<name>/<version>/<FINGERPRINT>.sig` for each key of the keyring (upper-case
/// hex, a URL cannot be listed). Beside a signature `S.EXT` its statement is `S` (when it ends
/// in `.json`, as `gpg --detach-sign NAME.intoto.json` names it) or `S.intoto.json`.
pub fn gather(la: &Lookaside, name: &str, version: &str, keyring: &Keyring) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    match la {
        Lookaside::Dir(d) => {
            let sub = d.join(name).join(version);
            let dir = if sub.is_dir() { sub } else { d.clone() };
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
                .at(&dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().and_then(|e| e.to_str()).is_some_and(|e| SIGNATURE_EXTENSIONS.contains(&e)))
                .collect();
            files.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
            for f in files {
                let len = std::fs::metadata(&f).at(&f)?.len();
                if len > MAX_SIGNATURE_BYTES {
                    return Err(Error::other(format!("{}: {len} bytes is too large for a signature", f.display())));
                }
                let data = std::fs::read(&f).at(&f)?;
                let stem = f.with_extension("");
                let mut beside = None;
                for cand in [stem.clone(), std::path::PathBuf::from(format!("{}.intoto.json", stem.display()))] {
                    if cand.extension().is_some_and(|e| e == "json") && cand.is_file() {
                        beside = Some((cand.display().to_string(), std::fs::read(&cand).at(&cand)?));
                        break;
                    }
                }
                out.push(Found { name: f.display().to_string(), data, beside });
            }
        }
        Lookaside::Url(u) => {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(std::time::Duration::from_secs(60))).build().into();
            let mut fprs: Vec<&str> = keyring.keys.iter().map(|k| k.fingerprint.as_str()).collect();
            fprs.sort();
            fprs.dedup();
            for fpr in fprs {
                let rel = format!("{name}/{version}/{fpr}.sig");
                let Some(data) = la.read(&agent, &rel)? else { continue };
                let st = format!("{name}/{version}/{fpr}.intoto.json");
                let beside = la.read(&agent, &st)?.map(|b| (format!("{u}/{st}"), b));
                out.push(Found { name: format!("{u}/{rel}"), data, beside });
            }
        }
    }
    Ok(out)
}

/// Check one signature file against `keyring` at time `now` (seconds since the epoch): one
/// [`Checked`] per signature it holds (a file co-signed by several keys, e.g. with
/// `sq sign --append` or `gpg -u A -u B --sign`, holds several; a garbled file gives one).
pub fn check(file: &SignatureFile, keyring: &Keyring, now: i64) -> Vec<Checked> {
    let data = file.data;
    let text = std::str::from_utf8(data).ok().map(str::trim_start);
    match text {
        Some(t) if t.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") => check_cleartext(t, keyring, now),
        Some(t) if t.starts_with("-----BEGIN PGP SIGNATURE-----") => match DetachedSignature::from_armor_many(t.as_bytes()) {
            Ok((sigs, _)) => check_detached(sigs.collect(), file, keyring, now),
            Err(e) => vec![Checked::garbled(Some(Form::Detached), format!("garbled: not a readable armored OpenPGP signature: {e}"))],
        },
        Some(t) if t.starts_with("-----BEGIN PGP MESSAGE-----") => match Message::from_armor(t.as_bytes()) {
            Ok((m, _)) => check_inline(m, keyring, now),
            Err(e) => vec![Checked::garbled(Some(Form::Inline), format!("garbled: not a readable armored OpenPGP message: {e}"))],
        },
        Some(t) if t.starts_with("-----BEGIN") => vec![Checked::garbled(None, "garbled: an armor block that is neither a signature nor a signed message".into())],
        _ => match first_packet_tag(data) {
            // Tag 2: a signature packet first, i.e. a detached signature.
            Some(2) => match DetachedSignature::from_bytes_many(data) {
                Ok(sigs) => check_detached(sigs.collect(), file, keyring, now),
                Err(e) => vec![Checked::garbled(Some(Form::Detached), format!("garbled: not a readable OpenPGP signature: {e}"))],
            },
            // One-pass signature, compressed data, literal data, or an old-style signed message.
            Some(4 | 8 | 11) => match Message::from_bytes(data) {
                Ok(m) => check_inline(m, keyring, now),
                Err(e) => vec![Checked::garbled(Some(Form::Inline), format!("garbled: not a readable OpenPGP message: {e}"))],
            },
            _ => vec![Checked::garbled(None, "garbled: neither an OpenPGP signature nor a signed message (armored or binary)".into())],
        },
    }
}

/// The tag of the first OpenPGP packet (RFC 9580 §4.2), if the first byte is a packet header.
fn first_packet_tag(data: &[u8]) -> Option<u8> {
    let b = *data.first()?;
    if b & 0x80 == 0 {
        return None;
    }
    Some(if b & 0x40 != 0 { b & 0x3f } else { (b >> 2) & 0x0f })
}

fn check_inline(msg: Message<'_>, keyring: &Keyring, now: i64) -> Vec<Checked> {
    let form = Some(Form::Inline);
    let garbled = |m: String| vec![Checked::garbled(form, m)];
    let mut msg = match msg.decompress() {
        Ok(m) => m,
        Err(e) => return garbled(format!("garbled: cannot decompress the OpenPGP message: {e}")),
    };
    if !msg.is_signed() {
        return garbled("garbled: the OpenPGP message is not signed".into());
    }
    // Read at most one byte past the limit: a small compressed file must not inflate into
    // memory without bound. Below the limit the reader has reached the end, which is what
    // makes the signature packet readable.
    let mut payload = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(&mut std::io::Read::take(&mut msg, MAX_PAYLOAD_BYTES as u64 + 1), &mut payload) {
        return garbled(format!("garbled or truncated OpenPGP message: {e}"));
    }
    if payload.len() > MAX_PAYLOAD_BYTES {
        return garbled(format!("signed payload of {} bytes is implausibly large for a statement", payload.len()));
    }
    // Each signature layer (several when co-signed), outermost first.
    let mut out = Vec::new();
    let mut cur = &msg;
    for _ in 0..MAX_SIGNATURES_PER_FILE {
        let (sig, inner) = match cur {
            Message::SignedOnePass { reader, .. } => (reader.signature().cloned(), reader.get_ref()),
            Message::Signed { reader, .. } => (Some(reader.signature().clone()), reader.get_ref()),
            _ => break,
        };
        let Some(sig) = sig else { return garbled("garbled or truncated: the message has no final signature packet".into()) };
        let layer = cur;
        let verify = |key: Candidate| match key {
            Candidate::Primary(k) => layer.verify(k).is_ok(),
            Candidate::Sub(k) => layer.verify(k).is_ok(),
        };
        out.push(judge(&sig, verify, keyring, now, form, Some(payload.clone()), None));
        cur = inner;
    }
    out
}

fn check_cleartext(text: &str, keyring: &Keyring, now: i64) -> Vec<Checked> {
    let form = Some(Form::Cleartext);
    let msg = match CleartextSignedMessage::from_string(text) {
        Ok((m, _)) => m,
        Err(e) => return vec![Checked::garbled(form, format!("garbled: not a readable cleartext-signed message: {e}"))],
    };
    if msg.signatures().is_empty() {
        return vec![Checked::garbled(form, "garbled: the cleartext message has no signature".into())];
    }
    // What was hashed: dash-unescaped, CRLF line ends.
    let signed = msg.signed_text();
    let payload = signed.replace("\r\n", "\n").into_bytes();
    msg.signatures()
        .iter()
        .take(MAX_SIGNATURES_PER_FILE)
        .map(|sig| {
            let verify = |key: Candidate| match key {
                Candidate::Primary(k) => sig.verify(k, signed.as_bytes()).is_ok(),
                Candidate::Sub(k) => sig.verify(k, signed.as_bytes()).is_ok(),
            };
            judge(sig, verify, keyring, now, form, Some(payload.clone()), None)
        })
        .collect()
}

fn check_detached(sigs: Vec<pgp::errors::Result<DetachedSignature>>, file: &SignatureFile, keyring: &Keyring, now: i64) -> Vec<Checked> {
    let mut out = Vec::new();
    for s in sigs.into_iter().take(MAX_SIGNATURES_PER_FILE) {
        match s {
            Ok(s) => out.push(check_detached_one(&s.signature, file, keyring, now)),
            Err(e) => return vec![Checked::garbled(Some(Form::Detached), format!("garbled or truncated OpenPGP signature: {e}"))],
        }
    }
    if out.is_empty() {
        out.push(Checked::garbled(Some(Form::Detached), "garbled: no signature in the file".into()));
    }
    out
}

fn check_detached_one(sig: &Signature, file: &SignatureFile, keyring: &Keyring, now: i64) -> Checked {
    let (name, bytes) = file.beside.unwrap_or(file.local);
    let over = if file.beside.is_some() { format!("{name} (beside it)") } else { format!("{name} (the local statement)") };
    let verify = |key: Candidate| match key {
        Candidate::Primary(k) => sig.verify(k, bytes).is_ok(),
        Candidate::Sub(k) => sig.verify(k, bytes).is_ok(),
    };
    let mut c = judge(sig, verify, keyring, now, Some(Form::Detached), Some(bytes.to_vec()), Some(over));
    if c.status == Status::Bad && file.beside.is_none() {
        c.reason = format!(
            "{}: the detached signature does not verify over our {name}: they signed another statement, or the signature is bad (publish the signed statement beside the signature to see what was attested)",
            c.fingerprint.as_deref().unwrap_or("?")
        );
        c.payload = None;
    }
    c
}

/// A key to try a signature with: a primary key or a subkey of a trusted key.
#[derive(Clone, Copy)]
enum Candidate<'a> {
    Primary(&'a pgp::packet::PublicKey),
    Sub(&'a pgp::packet::PublicSubkey),
}

/// Find the trusted key that made `sig` (`verify` checks it against one public key), then
/// whether that key counts now.
fn judge(
    sig: &Signature,
    verify: impl Fn(Candidate) -> bool,
    keyring: &Keyring,
    now: i64,
    form: Option<Form>,
    payload: Option<Vec<u8>>,
    signed_over: Option<String>,
) -> Checked {
    let mut c = Checked { form, status: Status::Good, fingerprint: None, user_id: None, reason: String::new(), payload, signed_over };
    if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
        c.status = Status::Garbled;
        c.reason = format!("garbled: a {:?} signature is not a signature over data", sig.typ());
        return c;
    }
    let mut found: Option<(&TrustedKey, Option<&SignedPublicSubKey>)> = None;
    'keys: for k in &keyring.keys {
        if verify(Candidate::Primary(&k.key.primary_key)) {
            found = Some((k, None));
            break;
        }
        for sub in &k.key.public_subkeys {
            if verify(Candidate::Sub(&sub.key)) {
                found = Some((k, Some(sub)));
                break 'keys;
            }
        }
    }
    let Some((k, sub)) = found else {
        let (issuer, ids) = issuer_of(sig);
        let named = keyring.named_by(&ids);
        match named {
            Some(k) => {
                c.status = Status::Bad;
                c.fingerprint = Some(k.fingerprint.clone());
                c.user_id = Some(k.user_id.clone());
                c.reason = format!("{}: signed by trusted key {} ({}), but the signature does not verify", k.fingerprint, k.fingerprint, k.user_id);
            }
            None => {
                c.status = Status::UnknownKey;
                c.fingerprint = issuer.1;
                c.reason = format!("signed by {}, which is not in the trusted keyring", issuer.0);
            }
        }
        return c;
    };
    c.fingerprint = Some(k.fingerprint.clone());
    c.user_id = Some(k.user_id.clone());
    if let Some((state, why)) = key_problem(k, sub, sig, now) {
        c.status = match state {
            KeyState::Revoked => Status::Revoked,
            KeyState::Expired => Status::Expired,
            KeyState::Bad => Status::Bad,
        };
        c.reason = format!("key {} ({}) {why}", k.fingerprint, k.user_id);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_garbled_not_a_panic() {
        let kr = Keyring { path: "k".into(), keys: Vec::new() };
        for data in [&b""[..], b"\x00\x01\x02", b"-----BEGIN PGP MESSAGE-----\n\nxx\n", b"-----BEGIN PGP SIGNATURE-----\n\n", &[0xa3, 0x01, 0x00][..], &[0xc2, 0x05, 0x04][..], &[0x89, 0x01][..]] {
            let v = check(&SignatureFile { data, beside: None, local: ("s.json", b"{}") }, &kr, 0);
            let c = &v[0];
            assert_eq!((v.len(), c.status), (1, Status::Garbled), "{data:?}: {c:?}");
            assert!(c.reason.contains("garbled"), "{}", c.reason);
        }
    }

    #[test]
    fn packet_tags() {
        assert_eq!(first_packet_tag(&[0xc2]), Some(2)); // new format, signature
        assert_eq!(first_packet_tag(&[0x89]), Some(2)); // old format, signature
        assert_eq!(first_packet_tag(&[0x90]), Some(4)); // old format, one-pass signature
        assert_eq!(first_packet_tag(&[0xa3]), Some(8)); // old format, compressed
        assert_eq!(first_packet_tag(b"{"), None);
    }
}
