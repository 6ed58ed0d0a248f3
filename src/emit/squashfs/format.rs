//! SquashFS 4.0 on-disk structures and constants (all little-endian), as the Linux kernel
//! (`fs/squashfs/squashfs_fs.h`) and squashfs-tools read them. Changing any value here changes
//! every image's bytes.

/// `hsqs`.
pub const MAGIC: u32 = 0x7371_7368;
/// Uncompressed bytes per metadata block (inode, directory, id and xattr tables).
pub const METADATA_SIZE: usize = 8192;
/// Data block size: 128 KiB, mksquashfs's default and what kernels expect without options.
pub const BLOCK_SIZE: u32 = 1 << BLOCK_LOG;
pub const BLOCK_LOG: u16 = 17;
/// Images are padded to a multiple of this, as mksquashfs does (block devices read 4 KiB).
pub const PAD_TO: u64 = 4096;
/// "No such table" / "no fragment" / "no xattrs".
pub const INVALID_U64: u64 = u64::MAX;
pub const INVALID_U32: u32 = u32::MAX;

/// Bit set in a metadata block's 16-bit header when the block is stored uncompressed.
pub const METADATA_UNCOMPRESSED: u16 = 0x8000;
/// Bit set in a data block's 32-bit size when the block is stored uncompressed.
pub const DATA_UNCOMPRESSED: u32 = 1 << 24;

/// Superblock flags.
pub const FLAG_NO_FRAGMENTS: u16 = 0x0010;
pub const FLAG_NO_XATTRS: u16 = 0x0200;

/// Compressor ids.
pub const COMP_GZIP: u16 = 1;
pub const COMP_XZ: u16 = 4;
pub const COMP_ZSTD: u16 = 6;

/// Inode types. Directory entries always carry the basic type of their inode.
pub const DIR: u16 = 1;
pub const FILE: u16 = 2;
pub const SYMLINK: u16 = 3;
pub const BLKDEV: u16 = 4;
pub const CHRDEV: u16 = 5;
pub const FIFO: u16 = 6;
pub const EXT_DIR: u16 = 8;
pub const EXT_FILE: u16 = 9;
pub const EXT_SYMLINK: u16 = 10;
pub const EXT_BLKDEV: u16 = 11;
pub const EXT_CHRDEV: u16 = 12;
pub const EXT_FIFO: u16 = 13;

/// Most entries one directory header may introduce.
pub const DIR_HEADER_MAX: usize = 256;

/// Xattr name prefixes squashfs stores as a type number instead of text.
pub const XATTR_PREFIXES: [(&str, u16); 3] = [("user.", 0), ("trusted.", 1), ("security.", 2)];

/// The 96-byte superblock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Superblock {
    pub inode_count: u32,
    pub mtime: u32,
    pub compressor: u16,
    pub flags: u16,
    pub id_count: u16,
    pub root_inode: u64,
    pub bytes_used: u64,
    pub id_table: u64,
    pub xattr_table: u64,
    pub inode_table: u64,
    pub directory_table: u64,
    /// With no fragments, where the fragment table would start: the end of the directory
    /// table (unsquashfs takes it as that table's end).
    pub fragment_table: u64,
}

impl Superblock {
    pub const SIZE: usize = 96;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = Vec::with_capacity(Self::SIZE);
        b.extend(MAGIC.to_le_bytes());
        b.extend(self.inode_count.to_le_bytes());
        b.extend(self.mtime.to_le_bytes());
        b.extend(BLOCK_SIZE.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // fragment entries
        b.extend(self.compressor.to_le_bytes());
        b.extend(BLOCK_LOG.to_le_bytes());
        b.extend(self.flags.to_le_bytes());
        b.extend(self.id_count.to_le_bytes());
        b.extend(4u16.to_le_bytes()); // version 4.0
        b.extend(0u16.to_le_bytes());
        b.extend(self.root_inode.to_le_bytes());
        b.extend(self.bytes_used.to_le_bytes());
        b.extend(self.id_table.to_le_bytes());
        b.extend(self.xattr_table.to_le_bytes());
        b.extend(self.inode_table.to_le_bytes());
        b.extend(self.directory_table.to_le_bytes());
        b.extend(self.fragment_table.to_le_bytes());
        b.extend(INVALID_U64.to_le_bytes()); // export table: none
        b.try_into().expect("superblock is 96 bytes")
    }
}

/// A device number as squashfs stores it (the kernel's `new_encode_dev`).
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// An inode reference: the metadata block's offset from the table start, and the offset
/// inside the block's uncompressed bytes.
pub fn inode_ref(block_start: u64, offset: u16) -> u64 {
    (block_start << 16) | offset as u64
}

/// The 16-byte header every inode starts with.
pub fn inode_header(out: &mut Vec<u8>, kind: u16, mode: u16, uid_idx: u16, gid_idx: u16, mtime: u32, number: u32) {
    out.extend(kind.to_le_bytes());
    out.extend(mode.to_le_bytes());
    out.extend(uid_idx.to_le_bytes());
    out.extend(gid_idx.to_le_bytes());
    out.extend(mtime.to_le_bytes());
    out.extend(number.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_layout() {
        let sb = Superblock { inode_count: 3, mtime: 1, compressor: COMP_GZIP, root_inode: 0x20, bytes_used: 4096, ..Default::default() };
        let b = sb.encode();
        assert_eq!(&b[0..4], b"hsqs");
        assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 131072);
        assert_eq!(u16::from_le_bytes(b[22..24].try_into().unwrap()), 17);
        assert_eq!(u16::from_le_bytes(b[28..30].try_into().unwrap()), 4);
        assert_eq!(u64::from_le_bytes(b[32..40].try_into().unwrap()), 0x20);
        assert_eq!(&b[88..96], &[0xff; 8]);
    }

    #[test]
    fn device_numbers_as_the_kernel_encodes_them() {
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(encode_dev(8, 0x1234), 0x34 | (8 << 8) | (0x1200 << 12));
    }
}
