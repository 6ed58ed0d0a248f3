//! dm-verity for the build's block images: the hash device beside a standalone SquashFS or
//! EROFS image (`NAME.squashfs.verity`, `NAME.roothash`), and for a disk's root partition
//! the partition types, partition UUIDs and kernel command line that name its hash tree.
//! The tree itself is `emit::verity`.

use crate::emit::gpt::Guid;
use crate::emit::verity::{self, Verity};
use crate::error::{IoContext, Result};
use crate::measure::{stage_bytes, stage_file, OutputRecord};
use std::path::Path;

/// Write `NAME.EXT.verity` (the hash device of `rec`'s file in `dir`) and `NAME.roothash`
/// (the root hash in hex and a newline), and put the root hash on `rec`. Returns the records
/// of the two new files.
pub fn beside(dir: &Path, box_name: &str, rec: &mut OutputRecord) -> Result<Vec<OutputRecord>> {
    let data = dir.join(&rec.path);
    let digest = hex::decode(&rec.sha256).map_err(|e| crate::error::Error::other(format!("{}: sha256 {e}", data.display())))?;
    let (salt, uuid) = verity::derive_salt_uuid(&digest);
    let mut made = None;
    let hrec = stage_file(dir, "dm-verity", format!("{}.verity", rec.path), |file, path| {
        let f = std::fs::File::open(&data).at(&data)?;
        let mut w = std::io::BufWriter::new(file);
        let v = verity::write(f, rec.size, salt, uuid, &mut w).map_err(|e| crate::error::Error::io(&data, e))?;
        std::io::Write::flush(&mut w).at(path)?;
        made = Some(v);
        Ok(None)
    })?;
    let v = made.expect("written");
    rec.roothash = Some(v.root_hex());
    Ok(vec![hrec, roothash_file(dir, box_name, &v.root_hex())?])
}

/// `NAME.roothash`: the root hash `hex` and a newline.
pub fn roothash_file(dir: &Path, box_name: &str, hex: &str) -> Result<OutputRecord> {
    let name = format!("{box_name}.roothash");
    stage_bytes(dir, "roothash", name, format!("{hex}\n").as_bytes())
}

/// Partition types of the Discoverable Partitions Specification (uapi-group.org), per
/// architecture: (UEFI architecture, root, root verity).
pub const DPS_TYPES: [(&str, Guid, Guid); 2] = [
    ("x86-64", Guid::from_text("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"), Guid::from_text("2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5")),
    ("arm64", Guid::from_text("B921B045-1DF0-41C3-AF44-4C6F280D3FAE"), Guid::from_text("DF3300CE-D69F-4C92-978C-9BFB0F38D820")),
];

/// The [`DPS_TYPES`] entry of `arch`.
pub fn dps_types(arch: crate::kernelfmt::Arch) -> (&'static str, Guid, Guid) {
    match arch {
        crate::kernelfmt::Arch::Amd64 => DPS_TYPES[0],
        crate::kernelfmt::Arch::Arm64 => DPS_TYPES[1],
    }
}

/// The partition UUIDs the specification suggests for a verity root: the first 128 bits of
/// the root hash for the data partition, the last 128 bits for the hash partition.
pub fn partition_uuids(v: &Verity) -> (Guid, Guid) {
    let text = |b: &[u8]| Guid::from_text(&verity::format::uuid_text(b.try_into().expect("16 bytes")));
    (text(&v.root_hash[..16]), text(&v.root_hash[16..]))
}

/// The kernel command line's root arguments for a verity root on partitions `data` and
/// `hash` (as the `PARTUUID=` values), file system `fstype`:
/// - `roothash=` with `systemd.verity_root_data=` / `systemd.verity_root_hash=`, which
///   systemd's veritysetup generator reads in an initrd;
/// - `dm-mod.create=` (kernels with `CONFIG_DM_INIT`, no initrd needed) making `/dev/dm-0`,
///   and `root=/dev/dm-0`.
pub fn cmdline(v: &Verity, data: &str, hash: &str, fstype: &str) -> String {
    let root = v.root_hex();
    let salt = hex::encode(v.salt);
    let sectors = v.data_blocks * (verity::format::BLOCK / 512);
    format!(
        "roothash={root} systemd.verity_root_data=PARTUUID={data} systemd.verity_root_hash=PARTUUID={hash} \
         dm-mod.create=\"vroot,,,ro,0 {sectors} verity 1 PARTUUID={data} PARTUUID={hash} 4096 4096 {} 1 sha256 {root} {salt}\" \
         root=/dev/dm-0 rootfstype={fstype} ro",
        v.data_blocks
    )
}

/// [`cmdline`] with zero hashes, nil UUIDs and numbers longer than any real one: the longest
/// the real root arguments can be (the disk lays out its ESP with it, then pads the real
/// command line to its length).
pub fn placeholder_cmdline(fstype: &str) -> String {
    let v = Verity { root_hash: [0; 32], salt: [0; 32], uuid: [0; 16], data_blocks: 10u64.pow(17), hash_len: 0 };
    let nil = "00000000-0000-0000-0000-000000000000";
    cmdline(&v, nil, nil, fstype)
}

/// `inspect`'s line for a partition (or file) that starts with a dm-verity superblock.
pub fn describe_superblock(head: &[u8]) -> String {
    let le = |b: &[u8]| b.iter().rev().fold(0u64, |a, x| (a << 8) | *x as u64);
    let algo = String::from_utf8_lossy(&head[32..64]).trim_end_matches('\0').to_string();
    let salt_len = (le(&head[80..82]) as usize).min(256);
    format!(
        "dm-verity hash tree: format {}, {algo}, {} data blocks of {} bytes, salt {}, uuid {}",
        le(&head[8..12]),
        le(&head[72..80]),
        le(&head[64..68]),
        hex::encode(&head[88..88 + salt_len]),
        verity::format::uuid_text(head[16..32].try_into().expect("16 bytes"))
    )
}

/// What the build recorded for output file `path` in the manifest beside it that lists it
/// (`manifest.json` or a box's `NAME.manifest.json`): its dm-verity root hash and predicted
/// TPM PCRs, as lines for `inspect` (empty when there is neither, or no manifest).
pub fn recorded(path: &Path) -> String {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return String::new() };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let Some((manifest, rec)) = crate::measure::manifest_listing(dir, name).ok().flatten() else { return String::new() };
    let mut s = String::new();
    if let Some(r) = &rec.roothash {
        s += &format!("dm-verity root hash {r} (from {})\n", manifest.display());
    }
    if let Some(p) = &rec.tpm_pcrs {
        let mut v: Vec<(u32, &String)> = p.iter().map(|(k, v)| (k.trim_start_matches("PCR").parse().unwrap_or(u32::MAX), v)).collect();
        v.sort();
        for (n, h) in v {
            s += &format!("predicted TPM PCR{n} (sha256, OVMF) {h} (from {})\n", manifest.display());
        }
    }
    s
}
