//! EROFS on-disk constants and the compressed-file records (map header, full lcluster
//! indexes, compression configs), from the kernel's `fs/erofs/erofs_fs.h` (6.1) and
//! erofs-utils' `include/erofs_fs.h`. Every value here is part of the format: changing one
//! breaks readers.

/// Block size, and the size of every logical cluster and every physical cluster we write.
pub const BLOCK: u64 = 4096;
pub const BLKSZBITS: u8 = 12;
pub const SUPER_OFFSET: u64 = 1024;
pub const SUPER_SIZE: u64 = 128;
pub const MAGIC: u32 = 0xE0F5_E1E2;
/// `feature_compat`: inode times are mtimes (what mkfs.erofs sets).
pub const COMPAT_MTIME: u32 = 0x2;
/// `feature_incompat`: compressed data sits at the end of its physical cluster after zero
/// padding (`lz4_0padding`; the kernel then decodes exactly, and may decode in place).
pub const INCOMPAT_ZERO_PADDING: u32 = 0x1;
/// `feature_incompat`: per-algorithm configs follow the superblock and
/// `available_compr_algs` replaces `lz4_max_distance` (needed for anything but lz4).
pub const INCOMPAT_COMPR_CFGS: u32 = 0x2;
pub const INODE_SIZE: u64 = 64;
/// Data layouts (`i_format >> 1`).
pub const FLAT_PLAIN: u16 = 0;
/// Compressed, one 8-byte lcluster index per logical cluster ("legacy"/full indexes).
pub const COMPRESSED_FULL: u16 = 1;
pub const FLAT_INLINE: u16 = 2;
/// Algorithm numbers (`h_algorithmtype`, bits of `available_compr_algs`).
pub const ALG_LZ4: u8 = 0;
pub const ALG_LZMA: u8 = 1;
/// Logical cluster types (`di_advise` bits 0-1).
pub const LCLUSTER_PLAIN: u16 = 0;
pub const LCLUSTER_HEAD: u16 = 1;
pub const LCLUSTER_NONHEAD: u16 = 2;
/// A NONHEAD's `delta[0]` with this bit means a block count (big pclusters), so a distance
/// to the head may not reach it: extents stay well below 2048 lclusters.
pub const D0_CBLKCNT: u64 = 1 << 11;
/// Map header (8 bytes) plus the 8 reserved bytes full indexes skip after it.
pub const FULL_INDEX_HEADER: u64 = 16;
pub const LCLUSTER_INDEX_SIZE: u64 = 8;

/// `struct z_erofs_map_header`, for a file of 4 KiB logical clusters using `alg` for HEAD1.
pub fn map_header(alg: u8) -> [u8; 8] {
    // h_reserved1/h_idata_size 0, h_advise 0, h_algorithmtype (head1 | head2 << 4),
    // h_clusterbits 0 (lcluster = block).
    [0, 0, 0, 0, 0, 0, alg, 0]
}

/// `struct z_erofs_lcluster_index` of a HEAD (or PLAIN) lcluster: an extent starts at
/// `clusterofs` in it and its physical cluster is block `blkaddr`.
pub fn head_index(kind: u16, clusterofs: u16, blkaddr: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..2].copy_from_slice(&kind.to_le_bytes());
    b[2..4].copy_from_slice(&clusterofs.to_le_bytes());
    b[4..8].copy_from_slice(&blkaddr.to_le_bytes());
    b
}

/// A NONHEAD lcluster: `d0` lclusters back to its extent's head, `d1` on to the next head.
pub fn nonhead_index(clusterofs: u16, d0: u16, d1: u16) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..2].copy_from_slice(&LCLUSTER_NONHEAD.to_le_bytes());
    b[2..4].copy_from_slice(&clusterofs.to_le_bytes());
    b[4..6].copy_from_slice(&d0.to_le_bytes());
    b[6..8].copy_from_slice(&d1.to_le_bytes());
    b
}

/// `struct z_erofs_lzma_cfgs` as a metadata record (le16 length, then the 14 bytes):
/// dictionary size, format 0 (MicroLZMA).
pub fn lzma_cfg(dict_size: u32) -> Vec<u8> {
    let mut b = 14u16.to_le_bytes().to_vec();
    b.extend(dict_size.to_le_bytes());
    b.extend(0u16.to_le_bytes());
    b.resize(2 + 14, 0);
    b
}
