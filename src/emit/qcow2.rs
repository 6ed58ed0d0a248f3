//! `NAME.qcow2`: a qcow2 version 3 image of a raw disk image, sparse (all-zero clusters are
//! left unallocated and read back as zeros) and deterministic (its bytes follow from the raw
//! image and the options alone).
//!
//! Written by hand: the format subset we need is a header, one level of L1/L2 tables and a
//! refcount table, about two hundred lines; the Rust qcow2 crates read images (or write
//! through a mutable block-device API that allocates in access order) and none promises the
//! byte-for-byte reproducible layout we pin. The format is QEMU's `docs/interop/qcow2.txt`.
//!
//! Layout, in file order: the header cluster; the data clusters in guest order (compressed
//! clusters packed byte by byte, uncompressed ones cluster-aligned); the L2 tables of the
//! L1 entries that map anything; the L1 table; the refcount table; the refcount blocks.
//! The header is written last, at offset 0. Clusters are 64 KiB (QEMU's default), refcounts
//! 16 bits (`refcount_order` 4, QEMU's default). Changing either changes every qcow2.
//!
//! Compression (`zlib`) is raw deflate with a 4 KiB window, what QEMU writes and expects:
//! its reader inflates with `windowBits = -12`, so a larger window would make clusters it
//! cannot read. A cluster that does not shrink below a cluster is stored uncompressed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// log2 of the cluster size. Changing it changes every qcow2 we write.
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// L2 entries per L2 table (8-byte entries filling one cluster).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// 16-bit refcounts per refcount block.
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;
/// The version 3 header with the compression-type byte and its padding, as QEMU writes it.
const HEADER_LEN: usize = 112;
/// L1/L2 entry flag: the cluster's refcount is exactly 1 (may be written in place).
const COPIED: u64 = 1 << 63;
/// L2 entry flag: a compressed cluster.
const COMPRESSED: u64 = 1 << 62;
/// Bit where a compressed L2 entry's "additional 512-byte sectors" count starts.
const CSIZE_SHIFT: u32 = 62 - (CLUSTER_BITS - 8);

/// How data clusters are stored (`Zlib`: raw deflate, 4 KiB window, zlib's default level).
pub use crate::spec::Qcow2Compression as Compression;

/// Write the qcow2 image of the `len` bytes of `raw` to `out` (an empty file). Returns the
/// qcow2's size in bytes.
pub fn write(raw: &File, len: u64, compression: Compression, out: &File) -> io::Result<u64> {
    let guest_clusters = len.div_ceil(CLUSTER);
    let mut l2: Vec<u64> = vec![0; guest_clusters as usize];
    // Host refcounts, by host cluster index; cluster 0 is the header.
    let mut refs: Vec<u16> = vec![1];
    let mut cursor = CLUSTER;
    let bump = |refs: &mut Vec<u16>, first: u64, last: u64| -> io::Result<()> {
        if refs.len() <= last as usize {
            refs.resize(last as usize + 1, 0);
        }
        for c in first..=last {
            let r = &mut refs[c as usize];
            *r = r.checked_add(1).ok_or_else(|| io::Error::other("qcow2: refcount overflow"))?;
        }
        Ok(())
    };

    let mut buf = vec![0u8; CLUSTER as usize];
    let mut packed = Vec::with_capacity(CLUSTER as usize);
    for (i, entry) in l2.iter_mut().enumerate() {
        let at = i as u64 * CLUSTER;
        let n = (len - at).min(CLUSTER) as usize;
        buf[n..].fill(0);
        raw.read_exact_at(&mut buf[..n], at)?;
        if buf.iter().all(|b| *b == 0) {
            continue;
        }
        if compression == Compression::Zlib && deflate(&buf, &mut packed)? {
            let first_sector = cursor >> 9;
            let last_sector = (cursor + packed.len() as u64 - 1) >> 9;
            out.write_all_at(&packed, cursor)?;
            *entry = COMPRESSED | ((last_sector - first_sector) << CSIZE_SHIFT) | cursor;
            // QEMU counts a compressed cluster on every host cluster its sectors touch.
            bump(&mut refs, cursor / CLUSTER, (((last_sector + 1) << 9) - 1) / CLUSTER)?;
            cursor += packed.len() as u64;
        } else {
            cursor = cursor.next_multiple_of(CLUSTER);
            out.write_all_at(&buf, cursor)?;
            *entry = COPIED | cursor;
            bump(&mut refs, cursor / CLUSTER, cursor / CLUSTER)?;
            cursor += CLUSTER;
        }
    }
    cursor = cursor.next_multiple_of(CLUSTER);

    // L2 tables, one per L1 entry that maps a cluster.
    let l1_size = guest_clusters.div_ceil(L2_ENTRIES).max(1);
    let mut l1 = vec![0u64; l1_size as usize];
    for (j, table) in l2.chunks(L2_ENTRIES as usize).enumerate() {
        if table.iter().all(|e| *e == 0) {
            continue;
        }
        let mut bytes = vec![0u8; CLUSTER as usize];
        for (k, e) in table.iter().enumerate() {
            bytes[k * 8..k * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        out.write_all_at(&bytes, cursor)?;
        l1[j] = COPIED | cursor;
        bump(&mut refs, cursor / CLUSTER, cursor / CLUSTER)?;
        cursor += CLUSTER;
    }
    let l1_offset = cursor;
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER);
    let l1_bytes: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
    out.write_all_at(&l1_bytes, l1_offset)?;
    bump(&mut refs, l1_offset / CLUSTER, l1_offset / CLUSTER + l1_clusters - 1)?;
    cursor += l1_clusters * CLUSTER;

    // The refcount table and blocks cover every cluster including themselves: grow both
    // until the count is stable.
    let base = cursor / CLUSTER;
    let (mut blocks, mut table_clusters) = (1u64, 1u64);
    loop {
        let total = base + table_clusters + blocks;
        let b = total.div_ceil(REFCOUNTS_PER_BLOCK);
        let t = (b * 8).div_ceil(CLUSTER);
        if (b, t) == (blocks, table_clusters) {
            break;
        }
        (blocks, table_clusters) = (b, t);
    }
    let table_offset = cursor;
    let blocks_offset = table_offset + table_clusters * CLUSTER;
    let end = blocks_offset + blocks * CLUSTER;
    bump(&mut refs, table_offset / CLUSTER, end / CLUSTER - 1)?;
    let mut table = vec![0u8; (table_clusters * CLUSTER) as usize];
    for b in 0..blocks {
        table[(b * 8) as usize..(b * 8 + 8) as usize].copy_from_slice(&(blocks_offset + b * CLUSTER).to_be_bytes());
    }
    out.write_all_at(&table, table_offset)?;
    let mut block = vec![0u8; (blocks * CLUSTER) as usize];
    for (c, r) in refs.iter().enumerate() {
        block[c * 2..c * 2 + 2].copy_from_slice(&r.to_be_bytes());
    }
    out.write_all_at(&block, blocks_offset)?;

    out.write_all_at(&header(len, l1_size, l1_offset, table_offset, table_clusters), 0)?;
    out.set_len(end)?;
    Ok(end)
}

/// The version 3 header (big-endian fields; `qcow2.txt` "Header").
fn header(size: u64, l1_size: u64, l1_offset: u64, table_offset: u64, table_clusters: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN + 8);
    h.extend(0x5146_49fbu32.to_be_bytes()); // "QFI\xfb"
    h.extend(3u32.to_be_bytes()); // version
    h.extend(0u64.to_be_bytes()); // backing file offset
    h.extend(0u32.to_be_bytes()); // backing file name length
    h.extend(CLUSTER_BITS.to_be_bytes());
    h.extend(size.to_be_bytes());
    h.extend(0u32.to_be_bytes()); // no encryption
    h.extend((l1_size as u32).to_be_bytes());
    h.extend(l1_offset.to_be_bytes());
    h.extend(table_offset.to_be_bytes());
    h.extend((table_clusters as u32).to_be_bytes());
    h.extend(0u32.to_be_bytes()); // snapshots
    h.extend(0u64.to_be_bytes()); // snapshot table offset
    h.extend(0u64.to_be_bytes()); // incompatible features
    h.extend(0u64.to_be_bytes()); // compatible features
    h.extend(0u64.to_be_bytes()); // autoclear features
    h.extend(4u32.to_be_bytes()); // refcount_order: 16-bit refcounts
    h.extend((HEADER_LEN as u32).to_be_bytes());
    h.push(0); // compression type: zlib (the only one without an incompatible-feature bit)
    h.resize(HEADER_LEN, 0);
    h.extend([0u8; 8]); // end of the header extension area
    h
}

/// Raw-deflate `cluster` into `out` with a 4 KiB window. `false` when it does not fit in
/// less than a cluster (the caller stores it as is).
fn deflate(cluster: &[u8], out: &mut Vec<u8>) -> io::Result<bool> {
    use flate2::{Compress, Compression as Level, FlushCompress, Status};
    out.clear();
    out.resize(CLUSTER as usize - 1, 0);
    let mut z = Compress::new_with_window_bits(Level::default(), false, 12);
    match z.compress(cluster, out, FlushCompress::Finish).map_err(io::Error::other)? {
        Status::StreamEnd => {
            out.truncate(z.total_out() as usize);
            Ok(true)
        }
        Status::Ok | Status::BufError => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(raw: &[u8], c: Compression) -> Vec<u8> {
        let mut a = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut a, raw).unwrap();
        let b = tempfile::tempfile().unwrap();
        let n = write(&a, raw.len() as u64, c, &b).unwrap();
        let mut v = vec![0u8; n as usize];
        b.read_exact_at(&mut v, 0).unwrap();
        v
    }

    #[test]
    fn zero_clusters_stay_unallocated() {
        let mut raw = vec![0u8; 5 * CLUSTER as usize + 512];
        raw[3 * CLUSTER as usize + 7] = 1;
        let q = convert(&raw, Compression::None);
        // header, one data cluster, one L2, one L1, refcount table, one refcount block.
        assert_eq!(q.len() as u64, 6 * CLUSTER);
        assert_eq!(&q[..4], b"QFI\xfb");
        assert_eq!(q[CLUSTER as usize + 7], 1);
        let l2 = 2 * CLUSTER as usize;
        assert_eq!(u64::from_be_bytes(q[l2 + 24..l2 + 32].try_into().unwrap()), COPIED | CLUSTER);
        assert!(q[l2..l2 + 24].iter().all(|b| *b == 0));
    }

    #[test]
    fn compressed_clusters_inflate_with_a_4k_window() {
        let raw: Vec<u8> = (0..3 * CLUSTER).map(|i| (i % 251) as u8 ^ (i / 7000) as u8).collect();
        let q = convert(&raw, Compression::Zlib);
        assert!((q.len() as u64) < 6 * CLUSTER + 3 * CLUSTER);
        let at = (q.len() as u64 - 4 * CLUSTER) as usize; // L2 is before L1, table and block
        let e = u64::from_be_bytes(q[at..at + 8].try_into().unwrap());
        assert_ne!(e & COMPRESSED, 0);
        let off = (e & ((1 << CSIZE_SHIFT) - 1)) as usize;
        let mut d = flate2::Decompress::new_with_window_bits(false, 12);
        let mut back = vec![0u8; CLUSTER as usize];
        d.decompress(&q[off..], &mut back, flate2::FlushDecompress::Finish).unwrap();
        assert_eq!(back, raw[..CLUSTER as usize]);
        assert_eq!(q, convert(&raw, Compression::Zlib), "not reproducible");
    }

    #[test]
    fn digest_stability() {
        use sha2::{Digest, Sha256};
        let raw: Vec<u8> = (0..4 * CLUSTER + 4096).map(|i| if (i / CLUSTER) % 2 == 1 { 0 } else { (i % 13) as u8 }).collect();
        for (c, want) in [(Compression::None, "964b70c4faac200261109336a6d062a21a2aead3dc637ac093c53e0ec2763ce6"), (Compression::Zlib, "db2b9e98b6000392973a9c337de3e53c3178462298df300ab76689f5d920dd44")] {
            let got = hex::encode(Sha256::digest(convert(&raw, c)));
            assert_eq!(got, want, "{c:?}: the qcow2 of the fixed disk changed (update if intentional)");
        }
    }
}
