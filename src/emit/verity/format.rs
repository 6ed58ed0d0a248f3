//! The dm-verity on-disk format as cryptsetup's `lib/verity/verity.c` and the kernel's
//! `Documentation/admin-guide/device-mapper/verity.rst` describe it: a 512-byte superblock at
//! the start of the hash device, then the hash tree, its top level first.
//!
//! Tree geometry (cryptsetup `verity_hash.c`): with `n` data blocks and 128 digests per hash
//! block, level 0 hashes the data blocks, level `i` hashes the blocks of level `i - 1`; the
//! number of levels is the smallest `l` with `(n - 1) >> (7 * l) == 0`, level `i` has
//! `ceil(n / 128^(i+1))` blocks, and on the device the levels follow the superblock's block
//! from the highest level down to level 0. Each digest is `sha256(salt || block)` (format
//! version 1; version 0, Chrome OS, puts the salt after the block). A hash block is its
//! digests, then zeros. The root hash is the digest of the single top-level block (of the
//! single data block when there is only one).

/// Bytes of a data block and of a hash block. 4096 is what `veritysetup` uses by default and
/// the page size the kernel reads; changing it changes every hash device.
pub const BLOCK: u64 = 4096;
/// Bytes of one sha256 digest.
pub const DIGEST: usize = 32;
/// Digests in one hash block (128): each level is 128 times smaller than the one below.
pub const PER_BLOCK: u64 = BLOCK / DIGEST as u64;
/// Bytes of the superblock; the hash tree starts at the next hash block (block 1).
pub const SUPERBLOCK: usize = 512;
/// Superblock magic.
pub const MAGIC: &[u8; 8] = b"verity\0\0";
/// Format version: 1 is "normal" (salt first); 0 is Chrome OS.
pub const VERSION: u32 = 1;
/// Hash algorithm name as the superblock spells it.
pub const ALGORITHM: &str = "sha256";

/// The superblock fields (all little-endian on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub uuid: [u8; 16],
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

impl Superblock {
    /// The 512 bytes: `verity\0\0`, version u32, hash_type u32 (= version 1), `uuid[16]`,
    /// `algorithm[32]`, data_block_size u32, hash_block_size u32, data_blocks u64, salt_size u16,
    /// `pad[6]`, `salt[256]`, `pad[168]`.
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK] {
        let mut b = [0u8; SUPERBLOCK];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&VERSION.to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid);
        b[32..32 + ALGORITHM.len()].copy_from_slice(ALGORITHM.as_bytes());
        b[64..68].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        b[68..72].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        b[80..82].copy_from_slice(&(self.salt.len() as u16).to_le_bytes());
        b[88..88 + self.salt.len()].copy_from_slice(&self.salt);
        b
    }
}

/// Blocks of each level, level 0 (the one hashing data blocks) first; empty for one data block.
pub fn levels(data_blocks: u64) -> Vec<u64> {
    let mut v = Vec::new();
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(PER_BLOCK);
        v.push(n);
    }
    v
}

/// Bytes of the hash device for `data_blocks`: the superblock's block and every level.
pub fn hash_device_len(data_blocks: u64) -> u64 {
    (1 + levels(data_blocks).iter().sum::<u64>()) * BLOCK
}

/// The UUID as `veritysetup` prints and takes it (8-4-4-4-12 hex of the bytes in order).
pub fn uuid_text(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_sizes_follow_cryptsetup() {
        assert_eq!(levels(1), Vec::<u64>::new());
        assert_eq!(levels(2), vec![1]);
        assert_eq!(levels(128), vec![1]);
        assert_eq!(levels(129), vec![2, 1]);
        assert_eq!(levels(128 * 128 + 1), vec![129, 2, 1]);
        assert_eq!(hash_device_len(129), 4 * BLOCK);
    }
}
