//! Progress on stderr: a live display on a terminal (a spinner with the current step, and a
//! bar with bytes, rate and time left while a known amount of data moves), nothing otherwise
//! (CI logs and pipes stay clean), and the one-line summary after a build.
//!
//! The display is process-wide: [`Progress::new`] makes it the active one, and the few places
//! that move bulk data (the content store's imports and registry pulls, the flatten loop,
//! output files created through `fsutil::AtomicFile`) report bytes through [`track`],
//! [`bytes`] and [`watch_file`] without carrying a handle through every call.
//! With no active display (not a terminal, `--quiet`, library use) those calls cost nothing.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Read};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// The display of the running build, if any (cloned handles share one bar).
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn active() -> Option<ProgressBar> {
    ACTIVE.lock().ok().and_then(|a| a.clone())
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {elapsed} {wide_msg}").expect("template")
}

/// Bytes, rate and time left first; the message takes what is left of the line (and is cut
/// there, so a long image reference never wraps the display onto two lines).
fn bytes_style(total_known: bool) -> ProgressStyle {
    let t = if total_known {
        "{spinner} [{bar:20}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {wide_msg}"
    } else {
        "{spinner} {bytes} {binary_bytes_per_sec} {wide_msg}"
    };
    ProgressStyle::with_template(t).expect("template").progress_chars("=> ")
}

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A live display when stderr is a terminal and `quiet` is false (and then the active one).
    pub fn new(quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new_spinner().with_style(spinner_style());
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut a) = ACTIVE.lock() {
            *a = Some(bar.clone());
        }
        Progress { bar: Some(bar) }
    }

    pub fn set_message(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        }
    }

    /// With `STAGEBOX_TIMINGS=1`, print how long `phase` took since `since`. The phase's
    /// label is made only then (a label may count the tree, which is a walk of every entry).
    pub fn timing(&self, phase: impl FnOnce() -> String, since: std::time::Instant) {
        if std::env::var_os("STAGEBOX_TIMINGS").is_some_and(|v| v == "1") {
            let took = since.elapsed().as_secs_f64();
            eprintln!("timing: {}: {took:.3} s", phase());
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            if let Ok(mut a) = ACTIVE.lock() {
                *a = None;
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A step that moves `total` bytes (when known), shown as a bar until dropped; advance it
/// with [`Bytes::inc`].
pub struct Bytes {
    bar: Option<ProgressBar>,
}

/// Start showing `what` moving `total` bytes on the active display.
pub fn bytes(what: &str, total: Option<u64>) -> Bytes {
    let bar = active();
    if let Some(b) = &bar {
        b.set_style(bytes_style(total.is_some()));
        b.set_length(total.unwrap_or(0));
        b.set_position(0);
        b.set_message(what.to_string());
    }
    Bytes { bar }
}

impl Bytes {
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.set_style(spinner_style());
            b.set_length(0);
            b.set_position(0);
        }
    }
}

/// A reader that reports what is read from it as `what` (of `total` bytes) on the active
/// display.
pub struct Tracked<R> {
    inner: R,
    bytes: Bytes,
}

pub fn track<R: Read>(what: &str, total: Option<u64>, inner: R) -> Tracked<R> {
    Tracked { inner, bytes: bytes(what, total) }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.inc(n as u64);
        Ok(n)
    }
}

/// An output file being written, shown as its size so far and the rate (a thread reads the
/// file's length every 100 ms until the watch is dropped), so no writer needs a hook.
pub struct Watch {
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    _bytes: Bytes,
}

pub fn watch_file(what: &str, path: &Path) -> Watch {
    use std::sync::atomic::{AtomicBool, Ordering};
    let bytes = bytes(what, None);
    let Some(bar) = bytes.bar.clone() else { return Watch { stop: None, _bytes: bytes } };
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (flag, path) = (stop.clone(), path.to_path_buf());
    std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            if let Ok(m) = std::fs::metadata(&path) {
                bar.set_position(m.len());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    Watch { stop: Some(stop), _bytes: bytes }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(s) = &self.stop {
            s.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The line printed after a build, terminal or not: each output with its size, and the time.
pub fn summary(outputs: &[(String, u64)], elapsed: Duration) -> String {
    let list: Vec<String> = outputs.iter().map(|(p, s)| format!("{p} ({})", indicatif::HumanBytes(*s))).collect();
    format!("built {} output(s) in {:.1} s: {}", outputs.len(), elapsed.as_secs_f64(), list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_outputs_sizes_and_time() {
        let s = summary(&[("a.tar".into(), 3 << 20), ("a.cpio.gz".into(), 512)], Duration::from_millis(1500));
        assert_eq!(s, "built 2 output(s) in 1.5 s: a.tar (3.00 MiB), a.cpio.gz (512 B)");
    }

    #[test]
    fn without_a_display_tracking_only_reads() {
        let mut r = track("x", Some(3), &b"abc"[..]);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
    }
}
