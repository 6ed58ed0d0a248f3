//! Compute the hash tree of a finished data image and write the hash device (see `format`).

use super::format::{self, Superblock, BLOCK, DIGEST, PER_BLOCK};
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

/// What a hash device records, and what a user needs to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verity {
    pub root_hash: [u8; 32],
    pub salt: [u8; 32],
    pub uuid: [u8; 16],
    pub data_blocks: u64,
    /// Bytes written to the hash device.
    pub hash_len: u64,
}

impl Verity {
    pub fn root_hex(&self) -> String {
        hex::encode(self.root_hash)
    }
}

/// Salt and UUID of the hash device of a data image whose sha256 is `data_digest`: hashes of
/// a domain string and that digest (UUID shaped as version 8, "custom", RFC 9562). Changing
/// the strings changes every root hash.
pub fn derive_salt_uuid(data_digest: &[u8]) -> ([u8; 32], [u8; 16]) {
    let salt: [u8; 32] = Sha256::new().chain_update(b"stagebox dm-verity salt v1\0").chain_update(data_digest).finalize().into();
    let u = Sha256::new().chain_update(b"stagebox dm-verity uuid v1\0").chain_update(data_digest).finalize();
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&u[..16]);
    uuid[6] = (uuid[6] & 0x0f) | 0x80;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    (salt, uuid)
}

fn digest(salt: &[u8], block: &[u8]) -> [u8; DIGEST] {
    Sha256::new().chain_update(salt).chain_update(block).finalize().into()
}

/// Hash `data_len` bytes of `data` (a multiple of 4096, at least one block) and write the
/// hash device to `out`: the superblock's block, then the levels, top first. Reads `data`
/// once, in order; holds only the levels in memory.
pub fn write(data: impl Read, data_len: u64, salt: [u8; 32], uuid: [u8; 16], out: &mut impl Write) -> io::Result<Verity> {
    if data_len == 0 || data_len % BLOCK != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("dm-verity needs a data image of whole {BLOCK}-byte blocks (this one is {data_len} bytes)")));
    }
    let data_blocks = data_len / BLOCK;
    let mut data = io::BufReader::with_capacity(1 << 20, data.take(data_len));
    let mut block = vec![0u8; BLOCK as usize];
    // Level 0: the digest of each data block, packed 128 to a hash block.
    let mut below: Vec<u8> = Vec::with_capacity((data_blocks.div_ceil(PER_BLOCK) * BLOCK) as usize);
    for _ in 0..data_blocks {
        data.read_exact(&mut block)?;
        below.extend_from_slice(&digest(&salt, &block));
    }
    let mut levels: Vec<Vec<u8>> = Vec::new();
    let root_hash = if data_blocks == 1 {
        below[..DIGEST].try_into().expect("one digest")
    } else {
        loop {
            below.resize(below.len().next_multiple_of(BLOCK as usize), 0);
            let blocks = below.len() / BLOCK as usize;
            let next: Vec<u8> = below.chunks(BLOCK as usize).flat_map(|b| digest(&salt, b)).collect();
            levels.push(below);
            if blocks == 1 {
                break next[..DIGEST].try_into().expect("one digest");
            }
            below = next;
        }
    };
    debug_assert_eq!(levels.iter().map(|l| l.len() as u64 / BLOCK).collect::<Vec<_>>(), format::levels(data_blocks));

    let sb = Superblock { uuid, data_blocks, salt: salt.to_vec() };
    out.write_all(&sb.to_bytes())?;
    out.write_all(&[0u8; BLOCK as usize - format::SUPERBLOCK])?;
    let mut hash_len = BLOCK;
    for l in levels.iter().rev() {
        out.write_all(l)?;
        hash_len += l.len() as u64;
    }
    debug_assert_eq!(hash_len, format::hash_device_len(data_blocks));
    Ok(Verity { root_hash, salt, uuid, data_blocks, hash_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_block_has_its_digest_as_root_and_no_levels() {
        let data = vec![7u8; 4096];
        let mut out = Vec::new();
        let v = write(&data[..], 4096, [1; 32], [2; 16], &mut out).unwrap();
        assert_eq!(v.root_hash, digest(&[1; 32], &data));
        assert_eq!(out.len(), 4096);
        assert_eq!(&out[..8], b"verity\0\0");
    }

    #[test]
    fn partial_blocks_are_refused() {
        assert!(write(&[0u8; 5000][..], 5000, [0; 32], [0; 16], &mut Vec::new()).is_err());
    }
}
