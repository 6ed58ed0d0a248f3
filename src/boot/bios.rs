//! BIOS boot of a GPT disk (`[output.disk]` with a GRUB i386-pc bootloader beside the UEFI
//! one): GRUB's core image in a BIOS boot partition filling the gap between the GPT's
//! partition array and the ESP (sectors 34 to 2047, which the 1 MiB alignment of the ESP
//! leaves free, so a UEFI-only disk's layout does not move), and `boot.img` in the
//! protective MBR loading it (`emit::grub::pc`). The core finds `grub.cfg` on the ESP
//! through its prefix `(,gpt1)/EFI/BOOT`: partition 1 of the disk it was loaded from.

use crate::boot::bootloader::Bootloader;
use crate::emit::gpt;
use crate::error::{Error, IoContext, Result};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// First and last sector of the BIOS boot partition (after the primary GPT's 32 array
/// sectors; before the ESP at 1 MiB).
pub const FIRST: u64 = 34;
pub const LAST: u64 = 2047;
/// GRUB's prefix: the ESP of the boot disk, where `EFI/BOOT/grub.cfg` is.
pub const PREFIX: &str = "(,gpt1)/EFI/BOOT";
/// The "BIOS boot" partition type GRUB embeds its core image in.
const BIOS_BOOT_TYPE: gpt::Guid = gpt::Guid::from_text("21686148-6449-6E6F-744E-656564454649");

/// Write the core image of `b` at [`FIRST`] of `file` and return its partition and the
/// MBR `mbr` with GRUB's boot code. Errors when the core does not fit the gap.
pub fn write(b: &Bootloader, file: &std::fs::File, path: &Path, seed: &[u8], mbr: &[u8; 512]) -> Result<(gpt::Partition, [u8; 512])> {
    let (core, boot_img) = b.grub_pc(PREFIX, FIRST)?;
    let room = (LAST - FIRST + 1) * 512;
    if core.len() as u64 > room {
        return Err(Error::other(format!(
            "{}: GRUB's i386-pc core image from {} is {} bytes; the BIOS boot partition holds {room}",
            path.display(),
            b.image.reference.text,
            core.len()
        )));
    }
    file.write_all_at(&core, FIRST * 512).at(path)?;
    let dir = b.def.files["platform"].trim_end_matches('/');
    let mbr = crate::emit::grub::pc::mbr(&boot_img, dir, mbr, FIRST)?;
    let part = gpt::Partition {
        type_guid: BIOS_BOOT_TYPE,
        guid: gpt::Guid::derive(seed, "bios"),
        first: FIRST,
        last: LAST,
        attributes: 0,
        name: "BIOS boot".into(),
    };
    Ok((part, mbr))
}
