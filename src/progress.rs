//! Progress on stderr: a live spinner on a terminal, nothing otherwise (CI logs and pipes
//! stay clean).

use std::io::IsTerminal;

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A spinner when stderr is a terminal and `quiet` is false.
    pub fn new(quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Progress { bar: Some(bar) }
    }

    pub fn set_message(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        }
    }

    /// With `STAGEBOX_TIMINGS=1`, print how long a phase took (for benchmarks).
    pub fn timing(&self, phase: &str, since: std::time::Instant) {
        if std::env::var_os("STAGEBOX_TIMINGS").is_some_and(|v| v == "1") {
            eprintln!("timing: {phase}: {:.3} s", since.elapsed().as_secs_f64());
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
