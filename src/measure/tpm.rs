//! Predicted TPM 2.0 PCRs (sha256 bank) of a UEFI boot: what the firmware extends into PCR 4
//! on the way to the kernel, computed from the EFI images the boot loads, and what the loader
//! and the kernel's EFI stub add to PCR 8, 9 and 12.
//!
//! Assumed firmware: EDK2's OVMF (Tcg2Dxe and DxeTpm2MeasureBootLib), booting the first boot
//! option with no earlier failed attempt. Into PCR 4 it logs, in order (see
//! `docs/measured-boot.md`):
//! 1. `EV_EFI_ACTION` "Calling EFI Application from Boot Option" (digest: sha256 of the
//!    ASCII text), at ReadyToBoot;
//! 2. `EV_SEPARATOR` (digest: sha256 of four zero bytes), with those of PCR 0-7;
//! 3. one `EV_EFI_BOOT_SERVICES_APPLICATION` per EFI image loaded through `LoadImage`, whose
//!    digest is the image's Authenticode hash: `EFI/BOOT/BOOTX64.EFI`, then the kernel when
//!    the loader starts it with `LoadImage` (systemd-boot does; GRUB's `linux` command hands
//!    over without it).
//!
//! Each extend is `PCR = sha256(PCR || digest)` from 32 zero bytes. After the firmware:
//! GRUB core images stagebox builds have no `tpm` module, so GRUB measures nothing (PCR 8
//! and 9 stay zero, [`Prediction::untouched`]); systemd-boot and the kernel's EFI stub
//! measure the load options and the initrd into PCR 12 and 9 ([`Prediction::systemd_boot`]).
//!
//! The Authenticode hash (PE/COFF specification, "Calculating the PE Image Hash") is written
//! here, as EDK2's `Tcg2MeasurePeImage` computes it: the headers without the checksum and the
//! certificate-table directory entry, the sections' raw data in file order, then any bytes
//! after the last section up to the attribute certificates. It is some 60 lines; the crates
//! that do it (goblin's `authenticode_ranges`, the `authenticode` crate) differ on details
//! such as trailing data, and pulling a PE parser in for this alone buys nothing.

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

/// The text of the `EV_EFI_ACTION` event EDK2 logs before the first boot option's image.
pub const CALLING_EFI_APPLICATION: &str = "Calling EFI Application from Boot Option";

/// One event the prediction replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub pcr: u32,
    /// The TCG event type name (`EV_SEPARATOR`, ...).
    pub kind: &'static str,
    pub digest: [u8; 32],
    /// What was measured, for people (`EFI/BOOT/BOOTX64.EFI`, the action text ...).
    pub what: String,
}

/// The predicted PCRs and the events that make them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    pub events: Vec<Event>,
    /// PCRs predicted to stay zero (see [`Prediction::untouched`]).
    pub zero: Vec<u32>,
}

impl Prediction {
    /// The value of each PCR the events touch, replayed from zero.
    pub fn pcrs(&self) -> BTreeMap<u32, [u8; 32]> {
        let mut m: BTreeMap<u32, [u8; 32]> = self.zero.iter().map(|p| (*p, [0; 32])).collect();
        for e in &self.events {
            let p = m.entry(e.pcr).or_insert([0; 32]);
            *p = Sha256::new().chain_update(*p).chain_update(e.digest).finalize().into();
        }
        m
    }

    /// `{"PCR4": hex, ...}` for the manifest.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.pcrs().into_iter().map(|(n, v)| (format!("PCR{n}"), hex::encode(v))).collect()
    }

    /// `NAME.tpm-pcrs`: `<hex> PCR<n>` lines, as `NAME.pcrs` of an EIF.
    pub fn to_file(&self) -> String {
        self.pcrs().into_iter().map(|(n, v)| format!("{} PCR{n}\n", hex::encode(v))).collect()
    }

    /// The events, one a line (`PCR kind digest what`), for `inspect` and the docs.
    pub fn log(&self) -> String {
        self.events.iter().map(|e| format!("PCR{} {} {} {}\n", e.pcr, e.kind, hex::encode(e.digest), e.what)).collect()
    }
}

impl Prediction {
    /// PCRs nothing extends on this boot path: predicted as 32 zero bytes (GRUB without its
    /// `tpm` module, and a kernel it hands over to, leave PCR 8 and 9 alone).
    pub fn untouched(mut self, pcrs: &[u32]) -> Self {
        self.zero.extend_from_slice(pcrs);
        self
    }

    /// What systemd-boot (252) and the kernel's EFI stub (Linux 6.1 and later) measure
    /// after the firmware: the load options systemd-boot passes (`initrd=\PATH` for its
    /// initrd, a space, the entry's `options`: UTF-16LE with its NUL) into PCR 12 (`EV_IPL`,
    /// systemd-boot) and PCR 9 (`EV_EVENT_TAG`, the stub), then the initrd the stub loads
    /// through systemd-boot's LoadFile2 into PCR 9.
    pub fn systemd_boot(mut self, initrd_path: Option<&str>, options: &str, initrd_sha256: Option<[u8; 32]>) -> Self {
        let mut text = match initrd_path {
            Some(p) => format!("initrd=\\{} {}", p.trim_start_matches('/').replace('/', "\\"), options.trim()),
            None => options.trim().to_string(),
        };
        text.push('\0');
        let utf16: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let d: [u8; 32] = Sha256::digest(&utf16).into();
        let shown = text.trim_end_matches('\0').to_string();
        self.events.push(Event { pcr: 12, kind: "EV_IPL", digest: d, what: format!("load options {shown:?}") });
        self.events.push(Event { pcr: 9, kind: "EV_EVENT_TAG", digest: d, what: "LOADED_IMAGE::LoadOptions".into() });
        if let Some(digest) = initrd_sha256 {
            self.events.push(Event { pcr: 9, kind: "EV_EVENT_TAG", digest, what: "Linux initrd".into() });
        }
        self
    }
}

/// Write `NAME.tpm-pcrs` into `dir` from a record's `tpm_pcrs` (`{"PCR4": hex}`), PCRs in
/// numeric order; returns its record.
pub fn write_file(dir: &std::path::Path, name: &str, pcrs: &BTreeMap<String, String>) -> crate::error::Result<super::OutputRecord> {
    let mut lines: Vec<(u32, &String)> = pcrs.iter().map(|(k, v)| (k.trim_start_matches("PCR").parse().unwrap_or(u32::MAX), v)).collect();
    lines.sort();
    let text: String = lines.iter().map(|(n, v)| format!("{v} PCR{n}\n")).collect();
    super::stage_bytes(dir, "tpm-pcrs", name.to_string(), text.as_bytes())
}

/// The PCR 4 events of an OVMF boot of `images` (name, PE bytes), each loaded with
/// `LoadImage` in this order: the loader, then (if its loader starts it that way) the kernel.
pub fn predict_uefi(images: &[(&str, &[u8])]) -> Result<Prediction, String> {
    let mut events = vec![
        Event { pcr: 4, kind: "EV_EFI_ACTION", digest: Sha256::digest(CALLING_EFI_APPLICATION).into(), what: CALLING_EFI_APPLICATION.into() },
        Event { pcr: 4, kind: "EV_SEPARATOR", digest: Sha256::digest([0u8; 4]).into(), what: "separator".into() },
    ];
    for (name, pe) in images {
        let d = authenticode_sha256(pe).map_err(|e| format!("{name}: {e}"))?;
        events.push(Event { pcr: 4, kind: "EV_EFI_BOOT_SERVICES_APPLICATION", digest: d, what: name.to_string() });
    }
    Ok(Prediction { events, zero: Vec::new() })
}

/// The Authenticode sha256 of a PE/COFF image (see the module doc).
pub fn authenticode_sha256(pe: &[u8]) -> Result<[u8; 32], String> {
    let u16_at = |o: usize| pe.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or("truncated PE header");
    let u32_at = |o: usize| pe.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or("truncated PE header");
    if pe.get(0..2) != Some(b"MZ") {
        return Err("not a PE image (no MZ header)".into());
    }
    let nt = u32_at(0x3c)? as usize;
    if pe.get(nt..nt + 4) != Some(b"PE\0\0") {
        return Err("not a PE image (no PE signature)".into());
    }
    let coff = nt + 4;
    let sections = u16_at(coff + 2)? as usize;
    let opt_size = u16_at(coff + 16)? as usize;
    let opt = coff + 20;
    let (rva_count_at, dirs) = match u16_at(opt)? {
        0x10b => (opt + 92, opt + 96),
        0x20b => (opt + 108, opt + 112),
        m => return Err(format!("unknown optional header magic {m:#x}")),
    };
    let headers = u32_at(opt + 60)? as usize;
    let checksum = opt + 64;
    let rvas = u32_at(rva_count_at)?;
    let cert_dir = dirs + 4 * 8;
    if headers > pe.len() || checksum + 4 > headers {
        return Err("SizeOfHeaders is out of range".into());
    }
    let mut h = Sha256::new();
    h.update(&pe[..checksum]);
    let cert_size = if rvas > 4 {
        if cert_dir + 8 > headers {
            return Err("certificate directory outside the headers".into());
        }
        h.update(&pe[checksum + 4..cert_dir]);
        h.update(&pe[cert_dir + 8..headers]);
        u32_at(cert_dir + 4)? as usize
    } else {
        h.update(&pe[checksum + 4..headers]);
        0
    };
    let table = opt + opt_size;
    let mut raw: Vec<(usize, usize)> = Vec::new();
    for i in 0..sections {
        let s = table + i * 40;
        let (size, ptr) = (u32_at(s + 16)? as usize, u32_at(s + 20)? as usize);
        if size > 0 {
            raw.push((ptr, size));
        }
    }
    raw.sort();
    let mut hashed = headers;
    for (ptr, size) in raw {
        let data = pe.get(ptr..ptr + size).ok_or("a section's raw data is outside the file")?;
        h.update(data);
        hashed += size;
    }
    if pe.len() > hashed + cert_size {
        h.update(&pe[hashed..pe.len() - cert_size]);
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_extends_from_zero() {
        let p = predict_uefi(&[]).unwrap();
        let a: [u8; 32] = Sha256::new().chain_update([0u8; 32]).chain_update(Sha256::digest(CALLING_EFI_APPLICATION)).finalize().into();
        let b: [u8; 32] = Sha256::new().chain_update(a).chain_update(Sha256::digest([0u8; 4])).finalize().into();
        assert_eq!(p.pcrs()[&4], b);
        assert_eq!(p.to_file(), format!("{} PCR4\n", hex::encode(b)));
    }

    #[test]
    fn non_pe_is_refused() {
        assert!(authenticode_sha256(b"ELF").is_err());
        assert!(authenticode_sha256(&[b'M', b'Z', 0, 0]).is_err());
    }
}
