//! The box's initramfs: prepended early archives checked and copied as they are, then the
//! tree as one compressed newc archive (`emit::cpio`), then the kernel modules of `[kernel]
//! load_modules` as an uncompressed archive (`boot::modules`). Written for `[output.initramfs]` and
//! staged inside bootable ISO and disk outputs.

use crate::emit;
use crate::error::{IoContext, Result};
use crate::measure::InputRecord;
use crate::boot::Job;
use crate::spec;
use std::path::Path;

/// The box's initramfs written into `file` (named `path` in errors): the prepended archives
/// as they are (each padded to 4 bytes), then the tree as one compressed newc archive. What
/// `[output.initramfs]` holds and what an ISO or disk output boots. Returns its digest, size and the prepended files.
pub fn write(job: &Job, o: &spec::InitramfsOutput, file: &std::fs::File, path: &Path) -> Result<(crate::digest::Digest, u64, Vec<InputRecord>)> {
    let Job { tree, spec, sde, threads, .. } = *job;
    let path = path.to_path_buf();
    let mut inputs = Vec::new();
    let (d, size) = {
        let mut hw = crate::measure::streamed(file, &path)?;
        for p in &o.prepend {
            let file = spec.dir.join(p);
            let at = spec.initramfs_at.clone().expect("initramfs output has a location");
            let mut head = [0u8; 6];
            let mut f = std::fs::File::open(&file).map_err(|e| at.error(format!("prepend {p:?}: {e}")))?;
            use std::io::{Read, Seek};
            let n = f.read(&mut head).at(&file)?;
            if n < 6 || (&head != emit::cpio::format::MAGIC && &head != emit::cpio::format::MAGIC_CRC) {
                return Err(at.error(format!(
                    "prepend {p:?} is not an uncompressed newc cpio archive (the kernel's early loaders, e.g. for CPU microcode, read only those)"
                )));
            }
            f.rewind().at(&file)?;
            let mut hr = crate::digest::HashReader::new(f);
            emit::cpio::write_prepend(&mut hr, &mut hw).at(&path)?;
            let (digest, _, _) = hr.drain_and_finish().at(&file)?;
            inputs.push(InputRecord { reference: format!("file:{p}"), digest: digest.to_string() });
        }
        let mut enc = emit::compress::Encoder::with_threads(o.compression, threads, hw).at(&path)?;
        emit::cpio::write(tree, sde, &mut enc).at(&path)?;
        let mut hw = enc.finish().at(&path)?;
        // `[kernel] load_modules`: the modules as one more (uncompressed) archive after the
        // tree's, so that a tree's `lib -> usr/lib` symlink is made before `lib/modules/`
        // is unpacked through it (the kernel unpacks archives in order, mixed compressions).
        if let Some(m) = job.modules {
            std::io::Write::write_all(&mut hw, &m.archive(sde)).at(&path)?;
        }
        crate::measure::finish_streamed(hw, &path)?
    };
    Ok((d, size, inputs))
}
