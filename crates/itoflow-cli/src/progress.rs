//! The progress bar: items done (fractional within a chunk), items per second, NFE and ETA on
//! stderr; hidden when stderr is not a terminal or with `--quiet`.

use std::io::IsTerminal;
use std::sync::Mutex;
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
    state: Mutex<State>,
}

/// What the message shows; shared by the threads that report progress.
#[derive(Default)]
struct State {
    /// Items already done when the bar started (resumed runs), excluded from the rate.
    base: Option<f64>,
    done: f64,
    nfe: u64,
    extra: String,
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
            state: Mutex::new(State::default()),
        }
    }

    /// Sets the number of items done (may be fractional).
    pub fn set_done(&self, items: f64) {
        self.bar.set_position((items * SCALE) as u64);
        self.update(|s| {
            s.base.get_or_insert(items);
            s.done = items;
        });
    }

    /// Adds to the number of items done.
    pub fn add_done(&self, items: f64) {
        let done = self.update(|s| {
            s.base.get_or_insert(s.done);
            s.done += items;
            s.done
        });
        self.bar.set_position((done * SCALE) as u64);
    }

    /// Sets the network-evaluation count shown (cumulative).
    pub fn set_nfe(&self, nfe: u64) {
        self.update(|s| s.nfe = nfe);
    }

    /// Extra text after the counters.
    pub fn set_extra(&self, text: String) {
        self.update(|s| s.extra = text);
    }

    fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut s);
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = (s.done - s.base.unwrap_or(0.0)).max(0.0) / secs;
        let mut msg = format!(
            "{}/{} {}, {:.1} {}/s",
            s.done.floor(),
            self.total,
            self.unit,
            rate,
            self.unit
        );
        if s.nfe > 0 {
            msg.push_str(&format!(", NFE {}", s.nfe));
        }
        if !s.extra.is_empty() {
            msg.push_str(", ");
            msg.push_str(&s.extra);
        }
        self.bar.set_message(msg);
        r
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
