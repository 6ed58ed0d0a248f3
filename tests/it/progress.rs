//! Progress display: under a pseudo-terminal (`script -qc`) a build shows byte counts and a
//! transfer rate on stderr and ends with the one-line summary; piped, stderr holds only the
//! summary, without a single control character; `--quiet` shows neither.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A box with one `dir:` layer holding `mb` MiB of incompressible bytes, so importing and
/// flattening it takes long enough for the display to draw.
fn big_box(dir: &Path, mb: usize) -> PathBuf {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut data = Vec::with_capacity(mb << 20);
    while data.len() < mb << 20 {
        // xorshift64: cheap, incompressible enough, the same every run.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    write(&dir.join("big/blob"), &data);
    let b = dir.join("big.toml");
    write(&b, "name = \"big\"\n[[layer]]\ndir = \"big\"\n[output.tar]\n");
    b
}

/// Shell-quote for `script -c`.
fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// `stagebox build` of `b` under a pseudo-terminal: everything the terminal got.
fn build_on_a_terminal(b: &Path, out: &Path, cache: &Path, extra: &str) -> String {
    require_tool("script");
    let cmd = format!("{} build {} --out {} --cache {} {extra}", q(&stagebox_bin()), q(b), q(out), q(cache));
    let o = run(Command::new("script").args(["-qec", &cmd, "/dev/null"]).env("TERM", "xterm").env("COLUMNS", "100"));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn is_unit(s: &str) -> bool {
    matches!(s, "B" | "KiB" | "MiB" | "GiB")
}

fn positive(s: &str) -> bool {
    s.parse::<f64>().is_ok_and(|v| v > 0.0)
}

/// Does the terminal output show a byte count (`12.5 MiB/96.0 MiB`, or `12.5 MiB` alone
/// before a rate) and a non-zero rate (`3.2 MiB/s`)?
fn shows_bytes_and_rate(tty: &str) -> (bool, bool) {
    let words: Vec<&str> = tty.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()).collect();
    let mut count = false;
    let mut rate = false;
    for w in words.windows(2) {
        let (n, unit) = (w[0], w[1]);
        if !positive(n) {
            continue;
        }
        if let Some(u) = unit.strip_suffix("/s") {
            rate |= is_unit(u);
        } else if let Some((u, total)) = unit.split_once('/') {
            count |= is_unit(u) && positive(total);
        } else {
            count |= is_unit(unit);
        }
    }
    (count, rate)
}

#[test]
fn a_terminal_shows_bytes_and_rate_and_a_pipe_gets_only_the_summary() {
    let d = tempdir();
    let b = big_box(d.path(), 96);

    let tty = build_on_a_terminal(&b, &d.path().join("out-tty"), &d.path().join("cache-tty"), "");
    let (count, rate) = shows_bytes_and_rate(&tty);
    let tail: String = tty.chars().rev().take(2000).collect::<String>().chars().rev().collect();
    assert!(count && rate, "no byte count ({count}) or rate ({rate}) on the terminal; its last output:\n{tail:?}");
    assert!(tty.contains("built 1 output(s) in") && tty.contains("big.tar (96."), "no summary line:\n{tail:?}");

    // Piped: the summary line only, no escape sequences, carriage returns or backspaces.
    let out = d.path().join("out-pipe");
    let o = run(&mut stagebox(["build".as_ref(), b.as_os_str(), "--out".as_ref(), out.as_os_str(), "--cache".as_ref(), d.path().join("cache-pipe").as_os_str()]));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(!err.chars().any(|c| c.is_control() && c != '\n'), "control characters on a piped stderr: {err:?}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err:?}");
    assert!(lines[0].starts_with("built 1 output(s) in ") && lines[0].ends_with("big.tar (96.00 MiB)"), "{err:?}");

    // --quiet: nothing at all, even on a terminal; the outputs are the same.
    let quiet = build_on_a_terminal(&b, &d.path().join("out-quiet"), &d.path().join("cache-quiet"), "--quiet");
    assert!(!quiet.contains("iB") && !quiet.contains("built "), "--quiet still shows progress: {quiet:?}");
    assert_eq!(hash_tree(&d.path().join("out-quiet")), hash_tree(&out));
    assert_eq!(hash_tree(&d.path().join("out-tty")), hash_tree(&out));
}
