//! File-system helpers the layers share: atomic output files and directories (write to a
//! temp name beside the target, then rename), disk space reserved ahead of large writes,
//! sequential writes past the page cache, exact reads and copies, and byte-for-byte
//! comparison of two files or directory trees.
//!
//! A killed build leaves at most a `.stagebox-tmp-*` file (removed on drop when the process
//! survives), never a half-written output under its final name.

use crate::error::{IoContext, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// A temp file in the target's directory that becomes `target` on [`AtomicFile::commit`].
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
    /// Its growth on the terminal's progress display, while it is written.
    _shown: crate::progress::Watch,
    /// Its pages sent to the disk while it is written, not all at the commit's fsync.
    _writeback: Option<Writeback>,
}

/// How often [`Writeback`] starts the write-out of a file's dirty pages.
const WRITEBACK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A thread that starts the kernel's write-out of a file's dirty pages every
/// [`WRITEBACK_EVERY`] (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`, which only queues the
/// I/O) until dropped. An output is fsynced before it is renamed into place; without this,
/// none of it reaches the disk before that fsync (an output of less than the kernel's
/// background dirty threshold, 10% of memory, just sits in the page cache), so the build
/// waits for the whole file's I/O at its end instead of overlapping it with the work.
struct Writeback {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writeback {
    /// Best effort: no thread (and the fsync does it all) if the file or a thread cannot be had.
    fn start(file: &fs::File) -> Option<Self> {
        use std::os::unix::io::AsRawFd;
        use std::sync::mpsc::{channel, RecvTimeoutError};
        let f = file.try_clone().ok()?;
        let (stop, rx) = channel::<()>();
        let thread = std::thread::Builder::new()
            .name("writeback".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(WRITEBACK_EVERY) {
                    // SAFETY: sync_file_range only reads its integer arguments; `f` stays open
                    // for the thread's life. Offset 0 and length 0 mean the whole file.
                    unsafe {
                        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
                    }
                }
            })
            .ok()?;
        Some(Writeback { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<Self> {
        let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(dir).at(dir)?;
        let tmp = tempfile::Builder::new().prefix(".stagebox-tmp-").tempfile_in(dir).at(dir)?;
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let _shown = crate::progress::watch_file(&format!("write {name}"), tmp.path());
        let _writeback = Writeback::start(tmp.as_file());
        Ok(AtomicFile { tmp, target: target.to_path_buf(), _shown, _writeback })
    }

    /// The temp file's name in the target's directory.
    pub fn temp_name(&self) -> std::ffi::OsString {
        self.tmp.path().file_name().unwrap_or_default().to_os_string()
    }

    pub fn file(&mut self) -> &mut fs::File {
        self.tmp.as_file_mut()
    }

    /// fsync, set mode 0644 (independent of umask), and rename over the target.
    pub fn commit(self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let f = self.tmp.as_file();
        f.set_permissions(fs::Permissions::from_mode(0o644)).at(self.tmp.path())?;
        f.sync_all().at(self.tmp.path())?;
        let target = self.target.clone();
        self.tmp.persist(&target).map_err(|e| crate::Error::io(&target, e.error))?;
        Ok(())
    }
}

/// Write `data` to `target` atomically.
pub fn write_atomic(target: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = AtomicFile::create(target)?;
    f.file().write_all(data).at(target)?;
    f.commit()
}

/// A temp directory beside `target` that replaces it on [`AtomicDir::commit`].
pub struct AtomicDir {
    tmp: tempfile::TempDir,
    target: PathBuf,
}

impl AtomicDir {
    pub fn create(target: &Path) -> Result<Self> {
        let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(dir).at(dir)?;
        let tmp = tempfile::Builder::new().prefix(".stagebox-tmp-").tempdir_in(dir).at(dir)?;
        Ok(AtomicDir { tmp, target: target.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Replace `target` with the temp dir. An old target is moved aside first and removed
    /// after the rename, so the final name always holds a complete directory or nothing.
    /// Directories inside become 0755 and files 0644, like [`AtomicFile`], whatever the umask.
    pub fn commit(self) -> Result<()> {
        let tmp = self.tmp.keep();
        normalize_modes(&tmp)?;
        replace(&tmp, &self.target)
    }
}

/// Set `dir` and the directories below it to 0755 and the files to 0644 (symlinks untouched).
fn normalize_modes(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).at(dir)?;
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let ft = e.file_type().at(e.path())?;
        if ft.is_dir() {
            normalize_modes(&e.path())?;
        } else if ft.is_file() {
            fs::set_permissions(e.path(), fs::Permissions::from_mode(0o644)).at(e.path())?;
        }
    }
    Ok(())
}

/// A file writer that reserves disk space ahead of the write position in large chunks
/// (`fallocate` with `FALLOC_FL_KEEP_SIZE`), so the file system allocates blocks once per
/// chunk instead of once per page. On ext4 this makes large sequential writes several
/// times faster; where `fallocate` is unsupported it silently does nothing. The file's
/// bytes and size are exactly what was written: [`PreallocFile::finish`] trims the reserve.
pub struct PreallocFile {
    file: fs::File,
    pos: u64,
    reserved: u64,
}

/// Bytes reserved per step.
const PREALLOC_CHUNK: u64 = 64 << 20;

impl PreallocFile {
    /// Wrap `file`, writing from its start.
    pub fn new(file: fs::File) -> Self {
        PreallocFile { file, pos: 0, reserved: 0 }
    }

    /// Reserve `len` bytes up front (e.g. a known output size).
    pub fn reserve(&mut self, len: u64) {
        if len > self.reserved {
            reserve(&self.file, self.reserved, len - self.reserved);
            self.reserved = len;
        }
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn file(&self) -> &fs::File {
        &self.file
    }

    /// Trim any reserve past the written bytes and return the file.
    pub fn finish(self) -> std::io::Result<fs::File> {
        if self.reserved > self.pos {
            self.file.set_len(self.pos)?;
        }
        Ok(self.file)
    }
}

/// Reserve `len` bytes of disk at `offset` without changing the file's size (best effort).
pub fn reserve(file: &fs::File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: fallocate only reads its integer arguments; the fd is open for writing.
    unsafe {
        libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset as libc::off_t, len as libc::off_t);
    }
}

impl std::io::Write for PreallocFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.pos + buf.len() as u64;
        if end > self.reserved {
            let grow = (end - self.reserved).max(PREALLOC_CHUNK);
            reserve(&self.file, self.reserved, grow);
            self.reserved += grow;
        }
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Alignment of the offsets, lengths and memory of [`DirectFile`]'s writes: the largest
/// logical block size of the disks we write to (4 KiB sectors), a multiple of the smaller ones.
const DIRECT_ALIGN: usize = 4096;
/// Bytes per write of [`DirectFile`].
const DIRECT_CHUNK: usize = 4 << 20;

/// One [`DIRECT_ALIGN`]-aligned block of memory.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct AlignedBlock([u8; DIRECT_ALIGN]);

/// A sequential file writer that bypasses the page cache (`O_DIRECT`) where the file system
/// allows it: bytes go from one aligned buffer to the disk in [`DIRECT_CHUNK`] writes, the
/// last one padded to [`DIRECT_ALIGN`] and the file then cut to the bytes written.
///
/// An output is written once and fsynced before it takes its name, so its bytes go to the
/// disk anyway; through the page cache they are first copied into pages the kernel must find
/// for them, and on our VMs fresh pages are expensive and grow dearer past a few GiB (a 2.4
/// GiB file, cold cache: 4.9–10.8 s buffered + fsync, 1.8–2.1 s direct; 600 MiB: 0.5 s
/// either way). Where `O_DIRECT` cannot be set (tmpfs, some overlays) or a direct write is
/// refused (`EINVAL`: an alignment the device does not take), the rest goes through the page
/// cache as before; the file's bytes are the same either way.
pub struct DirectFile {
    inner: PreallocFile,
    buf: Vec<AlignedBlock>,
    /// Bytes of `buf` in use.
    len: usize,
    direct: bool,
}

impl DirectFile {
    /// Wrap `file`, writing from its start. `O_DIRECT` is set on `file`'s open file
    /// description (shared with its clones) until [`DirectFile::finish`].
    pub fn new(file: fs::File) -> Self {
        Self::with(file, true)
    }

    /// Wrap `file`; `try_direct` false writes through the page cache (the fallback path).
    fn with(file: fs::File, try_direct: bool) -> Self {
        let direct = try_direct && set_direct(&file, true);
        let buf = vec![AlignedBlock([0; DIRECT_ALIGN]); DIRECT_CHUNK / DIRECT_ALIGN];
        DirectFile { inner: PreallocFile::new(file), buf, len: 0, direct }
    }

    /// Write the first `n` bytes of the buffer (`n` aligned while direct) and empty it.
    fn write_out(&mut self, n: usize) -> std::io::Result<()> {
        use std::io::Write;
        let mut done = 0;
        while done < n {
            match self.inner.write(&as_bytes(&self.buf)[done..n]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    done += k;
                    if self.direct && k % DIRECT_ALIGN != 0 {
                        // a short direct write left the position unaligned: go on buffered
                        self.direct = !set_direct(self.inner.file(), false);
                    }
                }
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct = !set_direct(self.inner.file(), false);
                    if self.direct {
                        return Err(e);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.len = 0;
        Ok(())
    }

    /// Write what is buffered, cut the file to the bytes written, clear `O_DIRECT` and
    /// return the file.
    pub fn finish(mut self) -> std::io::Result<fs::File> {
        let size = self.inner.position() + self.len as u64;
        let n = if self.direct { self.len.next_multiple_of(DIRECT_ALIGN) } else { self.len };
        let padded = n > self.len;
        as_bytes_mut(&mut self.buf)[self.len..n].fill(0);
        self.write_out(n)?;
        if self.direct {
            set_direct(self.inner.file(), false);
        }
        let file = self.inner.finish()?;
        if padded {
            // the zeros after `size` went out with the last write
            file.set_len(size)?;
        }
        Ok(file)
    }
}

fn as_bytes(buf: &[AlignedBlock]) -> &[u8] {
    // SAFETY: a slice of plain byte arrays (repr(C), size a multiple of the alignment, so no
    // padding between elements) is `len * DIRECT_ALIGN` initialised contiguous bytes.
    unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), std::mem::size_of_val(buf)) }
}

fn as_bytes_mut(buf: &mut [AlignedBlock]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`, borrowed mutably through `buf`.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(buf)) }
}

/// Set or clear `O_DIRECT` on `file`'s open file description; whether that worked.
fn set_direct(file: &fs::File, on: bool) -> bool {
    use std::os::unix::io::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl with F_GETFL/F_SETFL only reads and sets the descriptor's status flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return false;
        }
        let flags = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
        libc::fcntl(fd, libc::F_SETFL, flags) == 0
    }
}

impl std::io::Write for DirectFile {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(DIRECT_CHUNK - self.len);
        as_bytes_mut(&mut self.buf)[self.len..self.len + n].copy_from_slice(&data[..n]);
        self.len += n;
        if self.len == DIRECT_CHUNK {
            self.write_out(DIRECT_CHUNK)?;
        }
        Ok(n)
    }
    /// Buffered bytes stay until a full chunk or [`DirectFile::finish`]: a direct write must
    /// be aligned.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer that hands full buffers to a thread of its own, which writes them to the inner
/// writer in order: the caller's work on the bytes (hashing, copying them out of a spill
/// file) overlaps the write (the kernel's copy into the page cache, or a [`DirectFile`]'s
/// disk write) instead of waiting for it. Memory
/// is bounded: at most `BG_DEPTH` buffers of `BG_BUF` bytes are in flight. The first
/// write error of the thread is returned by the next `write`, `flush` or [`finish`](BackgroundWriter::finish).
pub struct BackgroundWriter<W: std::io::Write + Send + 'static> {
    buf: Vec<u8>,
    full: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<W>>>,
}

/// Bytes per buffer handed to the writing thread, and buffers in flight at most.
const BG_BUF: usize = 1 << 20;
const BG_DEPTH: usize = 4;

impl<W: std::io::Write + Send + 'static> BackgroundWriter<W> {
    pub fn new(mut inner: W) -> Self {
        let (full, to_write) = std::sync::mpsc::sync_channel::<Vec<u8>>(BG_DEPTH);
        let (give_back, empty) = std::sync::mpsc::sync_channel::<Vec<u8>>(BG_DEPTH + 1);
        let thread = std::thread::spawn(move || -> std::io::Result<W> {
            for mut b in to_write {
                inner.write_all(&b)?;
                b.clear();
                // the writer may already have dropped its end (finishing): then just drop b
                let _ = give_back.try_send(b);
            }
            inner.flush()?;
            Ok(inner)
        });
        BackgroundWriter { buf: Vec::with_capacity(BG_BUF), full: Some(full), empty, thread: Some(thread) }
    }

    /// Hand the current buffer to the thread and take an empty one.
    fn send(&mut self) -> std::io::Result<()> {
        let Some(full) = self.full.as_ref() else {
            return Err(std::io::Error::other("background writer stopped after an error"));
        };
        let next = self.empty.try_recv().unwrap_or_else(|_| Vec::with_capacity(BG_BUF));
        let b = std::mem::replace(&mut self.buf, next);
        let sent = full.send(b);
        if sent.is_err() {
            // the thread stopped: it failed; its error says why
            return Err(self.join().err().unwrap_or_else(|| std::io::Error::other("background writer stopped")));
        }
        Ok(())
    }

    fn join(&mut self) -> std::io::Result<W> {
        self.full = None;
        let t = self.thread.take().ok_or_else(|| std::io::Error::other("background writer already finished"))?;
        t.join().map_err(|_| std::io::Error::other("background writer panicked"))?
    }

    /// Write what is buffered, wait for the thread, and return the inner writer (flushed).
    pub fn finish(mut self) -> std::io::Result<W> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.join()
    }
}

impl<W: std::io::Write + Send + 'static> std::io::Write for BackgroundWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(BG_BUF - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BG_BUF {
            self.send()?;
        }
        Ok(n)
    }
    /// Buffers are written in order by the thread; `flush` only hands over the current one
    /// (use [`BackgroundWriter::finish`] to wait for the bytes to reach the inner writer).
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

impl<W: std::io::Write + Send + 'static> Drop for BackgroundWriter<W> {
    fn drop(&mut self) {
        self.full = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Move `staged` (a file or a directory) over `target`. A directory replaces the old one
/// whole: the old one is moved aside first and removed after, so `target` always names a
/// complete directory or nothing.
pub fn replace(staged: &Path, target: &Path) -> Result<()> {
    if staged.is_dir() && target.exists() {
        let aside = staged.with_extension("old");
        fs::rename(target, &aside).at(target)?;
        fs::rename(staged, target).at(target)?;
        fs::remove_dir_all(&aside).at(&aside)
    } else {
        fs::rename(staged, target).at(target)
    }
}

/// Copy exactly `len` bytes, failing if the source is short.
pub fn copy_exact(r: &mut impl std::io::Read, w: &mut impl std::io::Write, len: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file content shorter than recorded"));
        }
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Read until `buf` is full or the source ends; returns how many bytes were read.
pub fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Every path under `root/rel` (relative to `root`), directories before their contents, in
/// the order the file system lists them (callers sort).
pub fn list_tree(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    for e in fs::read_dir(&dir).at(&dir)? {
        let e = e.at(&dir)?;
        let r = rel.join(e.file_name());
        let is_dir = e.file_type().at(e.path())?.is_dir();
        out.push(r.clone());
        if is_dir {
            list_tree(root, &r, out)?;
        }
    }
    Ok(())
}

/// The first difference between two files or directory trees: (file inside a directory,
/// byte offset or `None` when only one side has it).
pub fn compare_paths(a: &Path, b: &Path) -> Result<Option<(Option<String>, Option<u64>)>> {
    use std::os::unix::ffi::OsStrExt;
    let (ma, mb) = (fs::symlink_metadata(a).ok(), fs::symlink_metadata(b).ok());
    let (Some(ma), Some(mb)) = (ma, mb) else {
        return Ok(Some((None, None)));
    };
    if ma.is_dir() && mb.is_dir() {
        let (mut la, mut lb) = (Vec::new(), Vec::new());
        list_tree(a, Path::new(""), &mut la)?;
        list_tree(b, Path::new(""), &mut lb)?;
        la.sort_by(|x, y| x.as_os_str().as_bytes().cmp(y.as_os_str().as_bytes()));
        lb.sort_by(|x, y| x.as_os_str().as_bytes().cmp(y.as_os_str().as_bytes()));
        let mut i = (la.iter().peekable(), lb.iter().peekable());
        loop {
            match (i.0.peek(), i.1.peek()) {
                (None, None) => return Ok(None),
                (Some(x), Some(y)) if x == y => {
                    let (pa, pb) = (a.join(x), b.join(y));
                    if !pa.is_dir() || !pb.is_dir() {
                        if let Some((_, off)) = compare_paths(&pa, &pb)? {
                            return Ok(Some((Some(x.display().to_string()), off)));
                        }
                    }
                    i.0.next();
                    i.1.next();
                }
                (Some(x), Some(y)) => {
                    let first = if x.as_os_str().as_bytes() < y.as_os_str().as_bytes() { x } else { y };
                    return Ok(Some((Some(first.display().to_string()), None)));
                }
                (Some(x), None) | (None, Some(x)) => return Ok(Some((Some(x.display().to_string()), None))),
            }
        }
    }
    if ma.file_type().is_symlink() || mb.file_type().is_symlink() {
        let (ta, tb) = (fs::read_link(a).ok(), fs::read_link(b).ok());
        return Ok(if ta == tb { None } else { Some((None, Some(0))) });
    }
    if ma.is_dir() != mb.is_dir() {
        return Ok(Some((None, Some(0))));
    }
    first_byte_difference(a, b).map(|o| o.map(|o| (None, Some(o))))
}

/// Offset of the first differing byte of two files (the shorter one's length when one is a
/// prefix of the other), or `None` when they are equal.
pub fn first_byte_difference(a: &Path, b: &Path) -> Result<Option<u64>> {
    let mut fa = std::io::BufReader::with_capacity(1 << 20, fs::File::open(a).at(a)?);
    let mut fb = std::io::BufReader::with_capacity(1 << 20, fs::File::open(b).at(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut pos = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba).at(a)?;
        let nb = read_full(&mut fb, &mut bb).at(b)?;
        let n = na.min(nb);
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(pos + i as u64));
        }
        if na != nb {
            return Ok(Some(pos + n as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        pos += n as u64;
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Whatever the length (empty, around the alignment and the chunk size), a DirectFile
    /// holds exactly the bytes written, page cache or not, and leaves `O_DIRECT` cleared.
    #[test]
    fn direct_file_holds_exactly_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, 4095, 4096, 4097, DIRECT_CHUNK - 1, DIRECT_CHUNK, 2 * DIRECT_CHUNK + 5] {
            let data: Vec<u8> = (0..len as u32).map(|i| (i * 13 + i / 4099) as u8).collect();
            for try_direct in [true, false] {
                let path = dir.path().join(format!("{len}-{try_direct}"));
                let mut w = DirectFile::with(fs::File::create(&path).unwrap(), try_direct);
                // the direct path is taken wherever the file system opens files with O_DIRECT
                assert_eq!(w.direct, try_direct && accepts_o_direct(dir.path()), "{len} bytes");
                for piece in data.chunks(300_001) {
                    w.write_all(piece).unwrap();
                }
                w.flush().unwrap();
                let f = w.finish().unwrap();
                // SAFETY: F_GETFL only reads the descriptor's flags.
                let flags = unsafe { libc::fcntl(std::os::unix::io::AsRawFd::as_raw_fd(&f), libc::F_GETFL) };
                assert_eq!(flags & libc::O_DIRECT, 0, "O_DIRECT left set ({len} bytes)");
                drop(f);
                assert!(fs::read(&path).unwrap() == data, "{len} bytes, direct tried: {try_direct}");
            }
        }
    }

    /// Whether files in `dir` open with `O_DIRECT` (asked with `open`, not with the `fcntl`
    /// that `DirectFile` uses).
    fn accepts_o_direct(dir: &Path) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new().write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT).open(dir.join("probe")).is_ok()
    }

    /// A direct write the kernel refuses (here an unaligned length: EINVAL) or takes short goes
    /// on through the page cache: the bytes arrive and `O_DIRECT` is dropped.
    #[test]
    fn direct_file_falls_back_to_the_page_cache_when_a_direct_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut w = DirectFile::with(fs::File::create(&path).unwrap(), true);
        assert_eq!(w.direct, accepts_o_direct(dir.path()));
        w.write_all(b"hello").unwrap();
        w.write_out(5).unwrap();
        assert!(!w.direct, "still direct after an unaligned write");
        w.write_all(b" world").unwrap();
        w.finish().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello world");
    }

    /// Bytes written in odd-sized pieces across many buffers arrive whole and in order.
    #[test]
    fn background_writer_keeps_order_across_buffers() {
        let data: Vec<u8> = (0..(3 * BG_BUF + 12345) as u32).map(|i| (i * 7 + i / 1000) as u8).collect();
        let mut w = BackgroundWriter::new(Vec::new());
        for piece in data.chunks(77_777) {
            w.write_all(piece).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(w.finish().unwrap(), data);
    }

    /// A failing inner writer's error reaches the caller (on a later write or at finish).
    #[test]
    fn background_writer_reports_the_inner_error() {
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                if self.0 < b.len() {
                    return Err(std::io::Error::other("disk full"));
                }
                self.0 -= b.len();
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = BackgroundWriter::new(Full(BG_BUF + 10));
        let big = vec![1u8; 8 * BG_BUF];
        let e = w.write_all(&big).and_then(|_| w.finish().map(|_| ())).unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
    }
}
