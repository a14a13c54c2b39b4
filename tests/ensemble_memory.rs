//! An ensemble of 10⁶ paths keeps its memory bounded: only per-worker batch buffers and the
//! statistics are live, never anything proportional to the number of paths.
//!
//! This file holds a single test so that its binary's heap is not shared with other tests: a
//! counting global allocator records the peak of live heap bytes during the solve.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use itoflow::sde::catalog::Gbm;
use itoflow::sde::ensemble::InitialState;
use itoflow::sde::prelude::*;

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counters
// are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak resident set size of the process (`VmHWM`), in KiB, for the log.
fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Solves `paths` paths of GBM with `CHUNK`-path batches on `pool`; returns the peak of live
/// heap bytes above what was live before, and the summary.
fn solve_counting(
    pool: &rayon::ThreadPool,
    paths: usize,
) -> (usize, itoflow::sde::ensemble::EnsembleSummary<f64>) {
    let gbm = Gbm {
        mu: 0.5,
        sigma: 0.3,
    };
    let grid = TimeGrid::uniform(0.0, 1.0, STEPS).unwrap();
    let opts = SolveOptions::grid(grid).seed(77).save(SaveAt::Every(5));
    let init = InitialState::constant(vec![1.0]);
    let ens = Ensemble::new(paths, &init).chunk_size(CHUNK).min_max(true);
    let baseline = LIVE.load(Ordering::SeqCst);
    PEAK.store(baseline, Ordering::SeqCst);
    let summary = pool
        .install(|| solve(&gbm, &EulerMaruyama, ens, &opts))
        .unwrap()
        .summary
        .unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - baseline;
    (peak, summary)
}

const CHUNK: usize = 4096;
const STEPS: usize = 10;

#[test]
fn a_million_paths_in_bounded_memory() {
    const PATHS: usize = 1_000_000;
    const SMALL: usize = 16 * CHUNK;
    let pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    };
    let (one, two) = (pool(1), pool(2));
    // Warm-up: one-time allocations (rayon's registry, thread locals) are not the solve's.
    solve_counting(&one, SMALL);
    solve_counting(&two, SMALL);
    let hwm_before = vm_hwm_kib();
    // On one thread the batches run one after the other, so the peak is deterministic.
    let (peak_small, _) = solve_counting(&one, SMALL);
    let (peak_one, _) = solve_counting(&one, PATHS);
    // On two threads up to two batches are live at once, depending on scheduling.
    let (peak, summary) = solve_counting(&two, PATHS);
    let hwm_after = vm_hwm_kib();
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    eprintln!(
        "peak live heap during the solve: 1 thread: {:.3} MiB for {SMALL} paths, {:.3} MiB for \
         {PATHS} paths; 2 threads: {:.3} MiB for {PATHS} paths; VmHWM {hwm_before:?} KiB -> \
         {hwm_after:?} KiB",
        mib(peak_small),
        mib(peak_one),
        mib(peak),
    );

    // Independent of the path count: 15× more paths may only deepen the merge tree by a few
    // levels, each holding one pending accumulator of n_save × dim values per worker (a few
    // hundred bytes with min/max); 64 KiB bounds that with a wide margin, while storing
    // anything per path would take ≥ 7.6 MiB (one f64 per path).
    let slack = 64 << 10;
    assert!(
        peak_one <= peak_small + slack,
        "peak live heap grows with the path count: {peak_one} bytes for {PATHS} paths vs \
         {peak_small} bytes for {SMALL} (one thread)"
    );
    assert!(
        peak <= 2 * peak_small + slack,
        "two threads hold more than two batches: {peak} bytes vs {peak_small} for one batch \
         at a time"
    );

    // What storing the saved states of every path would take: 3 × 10⁶ × 8 bytes ≈ 23 MiB (the
    // final states alone, 7.6 MiB). The solve itself needs, per worker, one batch: a Brownian
    // tile of ~1 MiB plus a few arrays of CHUNK rows (x0, f, g, ΔW, 3 saved states: ~0.25 MiB),
    // and the pending tree accumulators (a few dozen bytes each). 6 MiB bounds two workers
    // with a wide margin while staying below the 7.6 MiB of the finals alone.
    let bound = 6 << 20;
    assert!(
        peak < bound,
        "peak live heap {peak} bytes exceeds {bound} bytes for {PATHS} paths"
    );
    let stats = summary.stats();
    assert!(stats.max_batch_rows <= CHUNK);
    assert_eq!(stats.path_steps, (PATHS * STEPS) as u64);
    assert_eq!(summary.paths(), PATHS);

    // The statistics are right, too: Euler–Maruyama's exact moments for GBM on a uniform grid
    // are E X_n = (1 + μh)^n and E X_n² = ((1 + μh)² + σ²h)^n, so the sample mean must lie
    // within 4 standard errors of (1 + μh)^n (no discretisation bias in this comparison).
    let (mu, sigma, h): (f64, f64, f64) = (0.5, 0.3, 0.1);
    for (i, n) in [0, 5, 10].into_iter().enumerate() {
        let a = 1.0 + mu * h;
        let m = a.powi(n);
        let var = (a * a + sigma * sigma * h).powi(n) - m * m;
        let se = (var / PATHS as f64).sqrt();
        let got = summary.mean()[[i, 0]];
        assert!(
            (got - m).abs() <= 4.0 * se,
            "t = {}: mean {got} vs EM exact {m} (SE {se:e})",
            summary.times()[i]
        );
    }
}
