//! The progress bar: items done (fractional within a chunk), items per second, NFE and ETA on
//! stderr; hidden when stderr is not a terminal or with `--quiet`.

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Resolution of the bar: positions are items × `SCALE`.
const SCALE: f64 = 1000.0;

/// A progress bar over `total` items.
pub struct Meter {
    bar: ProgressBar,
    unit: &'static str,
    total: u64,
    start: Instant,
    /// Items already done when the bar started (resumed runs), excluded from the rate.
    base: Cell<f64>,
    based: Cell<bool>,
    done: Cell<f64>,
    nfe: Cell<u64>,
    extra: std::cell::RefCell<String>,
}

impl Meter {
    /// A bar over `total` items named `unit` ("samples", "paths"); hidden if `quiet` or stderr
    /// is not a terminal.
    pub fn new(total: u64, unit: &'static str, quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some((total as f64 * SCALE) as u64),
            if quiet || !std::io::stderr().is_terminal() {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        bar.set_style(
            ProgressStyle::with_template("{bar:30.cyan/blue} {msg} [{elapsed_precise}, ETA {eta}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        Self {
            bar,
            unit,
            total,
            start: Instant::now(),
            base: Cell::new(0.0),
            based: Cell::new(false),
            done: Cell::new(0.0),
            nfe: Cell::new(0),
            extra: Default::default(),
        }
    }

    /// Sets the number of items done (may be fractional).
    pub fn set_done(&self, items: f64) {
        if !self.based.get() {
            self.base.set(items);
            self.based.set(true);
        }
        self.done.set(items);
        self.bar.set_position((items * SCALE) as u64);
        self.refresh();
    }

    /// Sets the network-evaluation count shown (cumulative).
    pub fn set_nfe(&self, nfe: u64) {
        self.nfe.set(nfe);
        self.refresh();
    }

    /// Extra text after the counters.
    pub fn set_extra(&self, s: String) {
        *self.extra.borrow_mut() = s;
        self.refresh();
    }

    fn refresh(&self) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = (self.done.get() - self.base.get()).max(0.0) / secs;
        let mut msg = format!(
            "{}/{} {}, {:.1} {}/s",
            self.done.get().floor(),
            self.total,
            self.unit,
            rate,
            self.unit
        );
        if self.nfe.get() > 0 {
            msg.push_str(&format!(", NFE {}", self.nfe.get()));
        }
        let extra = self.extra.borrow();
        if !extra.is_empty() {
            msg.push_str(", ");
            msg.push_str(&extra);
        }
        self.bar.set_message(msg);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
