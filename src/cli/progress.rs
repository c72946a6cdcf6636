//! Progress bars for long stages, drawn on stderr only when it is a terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use paperclip::pipeline::Progress;

pub struct Bars {
    enabled: bool,
    bars: Mutex<HashMap<&'static str, ProgressBar>>,
}

impl Bars {
    pub fn new() -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Progress for Bars {
    fn begin(&self, stage: &'static str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
                .expect("template is valid")
                .progress_chars("=> "),
        );
        bar.set_prefix(stage);
        self.bars.lock().expect("not poisoned").insert(stage, bar);
    }

    fn advance(&self, stage: &'static str, count: u64) {
        if let Some(bar) = self.bars.lock().expect("not poisoned").get(stage) {
            bar.inc(count);
        }
    }

    fn end(&self, stage: &'static str) {
        if let Some(bar) = self.bars.lock().expect("not poisoned").remove(stage) {
            bar.finish_and_clear();
        }
    }
}
