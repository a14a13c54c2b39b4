//! The virtual Brownian tree (`brownian::BrownianTree`): the law of its increments and Lévy
//! areas at arbitrary (non-dyadic) times, and its reproducibility under any query order, batch
//! split and thread count.
//!
//! Tolerances: moments are checked to 5 standard errors of their estimators (a false alarm
//! rate of about 6e-7 per check), Kolmogorov–Smirnov statistics against the asymptotic 0.1 %
//! critical value 1.949/√n. The tree is exactly Brownian at the ends of its leaves; at the
//! non-dyadic times used here its values carry an interpolation error of variance at most
//! `leaf/16` (`leaf = 2/4096`), which lowers a variance by at most 3e-5 — a hundredth of the
//! standard error of the variance estimates (3e-3 relative with 40 000 paths).

use itoflow::sde::brownian::{BrownianTree, LevyArea};
use ndarray::{Array2, s};
use rayon::prelude::*;
use statrs::distribution::{ContinuousCDF, Normal};

const PATHS: usize = 40_000;

fn ks_statistic(mut xs: Vec<f64>) -> f64 {
    let normal = Normal::new(0.0, 1.0).unwrap();
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len() as f64;
    xs.iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = normal.cdf(x);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max)
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// `E[xy]` (the processes have mean zero).
fn moment(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>() / x.len() as f64
}

/// Increments `W(s, t)` and areas `H(s, t)` of `PATHS` paths (one Brownian motion each).
fn sample(tree: &BrownianTree, s: f64, t: f64) -> (Vec<f64>, Vec<f64>) {
    let mut path = tree.path(0, PATHS);
    let mut w = Array2::<f64>::zeros((PATHS, 1));
    let mut h = Array2::<f64>::zeros((PATHS, 1));
    let area = tree.levy_area() == LevyArea::SpaceTime;
    path.fill(s, t, w.view_mut(), area.then(|| h.view_mut()))
        .unwrap();
    (w.into_raw_vec_and_offset().0, h.into_raw_vec_and_offset().0)
}

#[track_caller]
fn assert_within(what: &str, got: f64, want: f64, se: f64) {
    assert!(
        (got - want).abs() < 5.0 * se,
        "{what}: {got} vs {want} (5 se = {})",
        5.0 * se
    );
}

/// Means, variances, covariances of increments over disjoint and overlapping intervals at
/// non-dyadic times, and the law (KS) of a standardised increment — for trees with and
/// without the Lévy area (whose bridges differ).
#[test]
fn increments_have_brownian_moments_and_law() {
    let nf = PATHS as f64;
    let (a, b, c) = (0.3, 0.77, 1.41);
    for levy in [LevyArea::None, LevyArea::SpaceTime] {
        let tree = BrownianTree::new(20_261_207, 0.0, 2.0, 2.0 / 4096.0, 1, levy).unwrap();
        let (x1, _) = sample(&tree, 0.0, a);
        let (x2, _) = sample(&tree, a, b);
        let (x3, _) = sample(&tree, b, c);
        let (y, _) = sample(&tree, 0.0, b);
        for (x, len, name) in [
            (&x1, a, "W(0, a)"),
            (&x2, b - a, "W(a, b)"),
            (&x3, c - b, "W(b, c)"),
        ] {
            assert_within(
                &format!("{levy:?} mean {name}"),
                mean(x),
                0.0,
                (len / nf).sqrt(),
            );
            let var = moment(x, x);
            assert_within(
                &format!("{levy:?} var {name}"),
                var,
                len,
                len * (2.0 / nf).sqrt(),
            );
        }
        // Disjoint intervals are uncorrelated; W(0, a) and W(0, b) have covariance a.
        assert_within(
            "cov W(0,a) W(a,b)",
            moment(&x1, &x2),
            0.0,
            (a * (b - a) / nf).sqrt(),
        );
        assert_within(
            "cov W(a,b) W(b,c)",
            moment(&x2, &x3),
            0.0,
            ((b - a) * (c - b) / nf).sqrt(),
        );
        assert_within(
            "cov W(0,a) W(0,b)",
            moment(&x1, &y),
            a,
            ((a * b + a * a) / nf).sqrt(),
        );
        // Fourth moment of a normal: 3 var².
        let len = b - a;
        let m4 = x2.iter().map(|v| v.powi(4)).sum::<f64>() / nf;
        assert_within(
            "E W(a,b)^4",
            m4,
            3.0 * len * len,
            len * len * (96.0 / nf).sqrt(),
        );
        let z: Vec<f64> = x2.iter().map(|v| v / len.sqrt()).collect();
        let d = ks_statistic(z);
        assert!(d < 1.949 / nf.sqrt(), "{levy:?}: KS statistic {d}");
    }
}

/// The space–time Lévy area over an interval: `H ~ N(0, h/12)` independent of `W` (closed
/// forms: `E H = 0`, `E H² = h/12`, `E H⁴ = 3(h/12)²`, `E HW = 0`, `E H²W² = h²/12`), at
/// non-dyadic times and over a whole leaf, and the area over a union from its parts.
#[test]
fn levy_area_has_its_closed_form_moments() {
    let nf = PATHS as f64;
    let tree = BrownianTree::new(77, 0.0, 2.0, 2.0 / 4096.0, 1, LevyArea::SpaceTime).unwrap();
    let leaf = tree.leaf();
    for (s0, t0) in [(0.3, 0.77), (0.5, 0.5 + leaf), (1.0 / 3.0, 1.9)] {
        let (w, h) = sample(&tree, s0, t0);
        let len = t0 - s0;
        let v = len / 12.0;
        assert_within("E H", mean(&h), 0.0, (v / nf).sqrt());
        assert_within("E H²", moment(&h, &h), v, v * (2.0 / nf).sqrt());
        let m4 = h.iter().map(|x| x.powi(4)).sum::<f64>() / nf;
        assert_within("E H⁴", m4, 3.0 * v * v, v * v * (96.0 / nf).sqrt());
        assert_within("E HW", moment(&h, &w), 0.0, (v * len / nf).sqrt());
        let hw2: Vec<f64> = h.iter().zip(&w).map(|(h, w)| h * h * w * w).collect();
        // Var(H²W²) = E H⁴ E W⁴ − (v len)² = 9 v² len² − v² len² = 8 v² len².
        assert_within("E H²W²", mean(&hw2), v * len, v * len * (8.0 / nf).sqrt());
        let z: Vec<f64> = h.iter().map(|x| x / v.sqrt()).collect();
        let d = ks_statistic(z);
        assert!(d < 1.949 / nf.sqrt(), "[{s0}, {t0}]: KS statistic of H {d}");
    }
}

/// Every path's numbers are the same whichever batch it is queried in, on whichever thread,
/// in whichever order the queries come.
#[test]
fn queries_are_independent_of_order_batch_split_and_threads() {
    for levy in [LevyArea::None, LevyArea::SpaceTime] {
        let tree = BrownianTree::new(5, -1.0, 3.0, 1e-4, 2, levy).unwrap();
        let times = [
            (-1.0, -0.37),
            (-0.37, 0.12),
            (0.12, 2.99),
            (2.5, 0.0),
            (0.9, 0.9001),
        ];
        let area = levy == LevyArea::SpaceTime;
        let rows = 300;
        // Reference: one batch, queries in order.
        let mut whole = Vec::new();
        let mut p = tree.path(1000, rows);
        for &(s0, t0) in &times {
            let (mut w, mut h) = (
                Array2::<f64>::zeros((rows, 2)),
                Array2::<f64>::zeros((rows, 2)),
            );
            p.fill(s0, t0, w.view_mut(), area.then(|| h.view_mut()))
                .unwrap();
            whole.push((w, h));
        }
        // Chunks of several sizes on rayon's threads, queries in reverse order.
        for chunk in [1usize, 7, 64] {
            let starts: Vec<usize> = (0..rows).step_by(chunk).collect();
            let parts: Vec<Vec<(Array2<f64>, Array2<f64>)>> = starts
                .par_iter()
                .map(|&r0| {
                    let n = chunk.min(rows - r0);
                    let mut p = tree.path(1000 + r0 as u64, n);
                    let mut out: Vec<_> = times
                        .iter()
                        .rev()
                        .map(|&(s0, t0)| {
                            let (mut w, mut h) =
                                (Array2::<f64>::zeros((n, 2)), Array2::<f64>::zeros((n, 2)));
                            p.fill(s0, t0, w.view_mut(), area.then(|| h.view_mut()))
                                .unwrap();
                            (w, h)
                        })
                        .collect();
                    out.reverse();
                    out
                })
                .collect();
            for (k, (w, h)) in whole.iter().enumerate() {
                for (&r0, part) in starts.iter().zip(&parts) {
                    let n = part[k].0.nrows();
                    assert_eq!(part[k].0, w.slice(s![r0..r0 + n, ..]), "chunk {chunk}");
                    assert_eq!(part[k].1, h.slice(s![r0..r0 + n, ..]));
                }
            }
        }
        // One-off queries of single paths.
        let (mut w1, mut h1) = ([0.0; 2], [0.0; 2]);
        for (k, &(s0, t0)) in times.iter().enumerate() {
            let r = 123;
            if area {
                tree.increment_and_area(1000 + r, s0, t0, &mut w1, &mut h1)
                    .unwrap();
                assert_eq!(h1.to_vec(), whole[k].1.row(r as usize).to_vec());
            } else {
                tree.increment(1000 + r, s0, t0, &mut w1).unwrap();
            }
            assert_eq!(w1.to_vec(), whole[k].0.row(r as usize).to_vec());
        }
        // The batched one-off query agrees too.
        let mut w = Array2::<f32>::zeros((4, 2));
        tree.increments(1010, times[1].0, times[1].1, w.view_mut())
            .unwrap();
        let want = whole[1].0.slice(s![10..14, ..]).mapv(|v| v as f32);
        assert_eq!(w, want);
    }
}
