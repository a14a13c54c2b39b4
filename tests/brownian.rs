//! Statistical and structural checks of the random-number pipeline: ARS-7 → ziggurat
//! normals → per-path Brownian increments.
//!
//! Tolerances: moment checks use 5 standard errors of the estimator (a false alarm rate of about
//! 6e-7 per check); the Kolmogorov–Smirnov checks use the asymptotic 0.1 % critical value
//! 1.949/√n.

use itoflow::sde::brownian::{BrownianPaths, IncrementGenerator, RandomStream, tags};
use itoflow::sde::prelude::*;
use ndarray::Array2;
use statrs::distribution::{ContinuousCDF, Normal};

fn ks_statistic(mut xs: Vec<f64>, cdf: impl Fn(f64) -> f64) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len() as f64;
    xs.iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max)
}

#[test]
fn normals_have_standard_normal_moments_and_law() {
    let n = 1_000_000;
    let s = RandomStream::new(20261123, 5, tags::USER + 1);
    let mut z = vec![0.0; n];
    s.fill_normals(0, &mut z);
    let nf = n as f64;
    let mean = z.iter().sum::<f64>() / nf;
    let m2 = z.iter().map(|v| v * v).sum::<f64>() / nf;
    let m3 = z.iter().map(|v| v * v * v).sum::<f64>() / nf;
    let m4 = z.iter().map(|v| v.powi(4)).sum::<f64>() / nf;
    // Standard errors: sd(z)=1, sd(z²)=√2, sd(z³)=√15, sd(z⁴)=√96.
    assert!(mean.abs() < 5.0 / nf.sqrt(), "mean {mean}");
    assert!(
        (m2 - 1.0).abs() < 5.0 * 2f64.sqrt() / nf.sqrt(),
        "E z² = {m2}"
    );
    assert!(m3.abs() < 5.0 * 15f64.sqrt() / nf.sqrt(), "E z³ = {m3}");
    assert!(
        (m4 - 3.0).abs() < 5.0 * 96f64.sqrt() / nf.sqrt(),
        "E z⁴ = {m4}"
    );
    let normal = Normal::new(0.0, 1.0).unwrap();
    let d = ks_statistic(z.clone(), |x| normal.cdf(x));
    assert!(d < 1.949 / nf.sqrt(), "KS statistic {d}");
    // The tail beyond the base strip's edge R = 3.654 comes from a separate algorithm: check its
    // frequency (p = 2Φ(−R) ≈ 2.58e-4) within 5 binomial standard errors.
    let p = 2.0 * normal.cdf(-3.654_152_885_361_009);
    let tail = z.iter().filter(|v| v.abs() > 3.654_152_885_361_009).count() as f64 / nf;
    assert!(
        (tail - p).abs() < 5.0 * (p * (1.0 - p) / nf).sqrt(),
        "tail frequency {tail} vs {p}"
    );
}

#[test]
fn consecutive_normals_and_neighbouring_streams_are_uncorrelated() {
    let n = 400_000;
    let a = RandomStream::new(1, 0, tags::BROWNIAN);
    let b = RandomStream::new(1, 1, tags::BROWNIAN);
    let c = RandomStream::new(1, 0, tags::EXTRA);
    let mut za = vec![0.0; n + 1];
    let mut zb = vec![0.0; n];
    let mut zc = vec![0.0; n];
    a.fill_normals(0, &mut za);
    b.fill_normals(0, &mut zb);
    c.fill_normals(0, &mut zc);
    let corr =
        |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>() / x.len() as f64;
    let tol = 5.0 / (n as f64).sqrt();
    assert!(
        corr(&za[..n], &za[1..]).abs() < tol,
        "lag-1 autocorrelation"
    );
    assert!(corr(&za[..n], &zb).abs() < tol, "neighbouring paths");
    assert!(corr(&za[..n], &zc).abs() < tol, "different tags");
}

#[test]
fn uniforms_and_signs_are_fair() {
    let n = 200_000;
    let s = RandomStream::new(99, 3, tags::USER + 2);
    let mut u = vec![0.0; n];
    s.fill_uniform(0, &mut u);
    assert!(u.iter().all(|&v| (0.0..1.0).contains(&v)));
    let d = ks_statistic(u, |x| x.clamp(0.0, 1.0));
    assert!(d < 1.949 / (n as f64).sqrt(), "uniform KS {d}");
    let mut r = vec![0.0; n];
    s.fill_rademacher(0, &mut r);
    let mean = r.iter().sum::<f64>() / n as f64;
    assert!(r.iter().all(|&v| v == 1.0 || v == -1.0));
    assert!(mean.abs() < 5.0 / (n as f64).sqrt());
}

/// The coarse increment of a refined grid is the sum of the fine increments, so solving at Δt
/// and at Δt/2 sees the same Brownian path.
#[test]
fn refined_increments_are_sums_of_fine_ones() {
    let (rows, m, steps) = (37, 3, 8);
    let dt_fine = 0.01f64;
    let fine = BrownianPaths::new(5).first_path(100);
    let coarse = fine.refine(4);
    let mut gf = IncrementGenerator::new(&fine, rows, m);
    let mut gc = IncrementGenerator::new(&coarse, rows, m);
    let mut f = Array2::zeros((rows, m));
    let mut c = Array2::zeros((rows, m));
    let mut sum = Array2::<f64>::zeros((rows, m));
    for k in 0..steps * 4 {
        gf.fill(k, dt_fine, f.view_mut());
        sum += &f;
        if k % 4 == 3 {
            gc.fill(k / 4, 4.0 * dt_fine, c.view_mut());
            for (a, b) in sum.iter().zip(c.iter()) {
                assert!((a - b).abs() < 1e-14, "{a} vs {b}");
            }
            sum.fill(0.0);
        }
    }
    // `walk` gives the same values as the generator.
    let w = coarse.walk(100 + 5, m, &vec![4.0 * dt_fine; steps]);
    let mut acc = [0.0; 3];
    let mut gc = IncrementGenerator::new(&coarse, rows, m);
    for k in 0..steps {
        gc.fill(k, 4.0 * dt_fine, c.view_mut());
        for j in 0..m {
            acc[j] += c[[5, j]];
            assert!((acc[j] - w[[k + 1, j]]).abs() < 1e-14);
        }
    }
}

/// A path's increments do not depend on the batch it is generated in.
#[test]
fn increments_are_independent_of_batch_split() {
    let (m, steps) = (2, 20);
    let all = BrownianPaths::new(11);
    let mut whole = IncrementGenerator::new(&all, 50, m);
    let mut part = IncrementGenerator::new(&all.first_path(17), 5, m);
    let mut a = Array2::zeros((50, m));
    let mut b = Array2::zeros((5, m));
    for k in 0..steps {
        whole.fill(k, 0.1f64, a.view_mut());
        part.fill(k, 0.1f64, b.view_mut());
        for r in 0..5 {
            for j in 0..m {
                assert_eq!(a[[17 + r, j]], b[[r, j]]);
            }
        }
    }
}

/// Increments over a step have variance |dt| and are independent across steps.
#[test]
fn increments_have_the_right_variance() {
    let (rows, steps, dt) = (20_000, 4, 0.37f64);
    let mut g = IncrementGenerator::new(&BrownianPaths::new(3), rows, 1);
    let mut dw = Array2::zeros((rows, 1));
    let mut prev = Array2::<f64>::zeros((rows, 1));
    for k in 0..steps {
        g.fill(k, -dt, dw.view_mut()); // negative dt: backward in time, same variance
        let var = dw.iter().map(|v| v * v).sum::<f64>() / rows as f64;
        assert!(
            (var / dt - 1.0).abs() < 5.0 * 2f64.sqrt() / (rows as f64).sqrt(),
            "variance {var}"
        );
        if k > 0 {
            let c = dw.iter().zip(prev.iter()).map(|(a, b)| a * b).sum::<f64>() / rows as f64 / dt;
            assert!(c.abs() < 5.0 / (rows as f64).sqrt());
        }
        prev.assign(&dw);
    }
}

/// A full solve is reproducible and independent of how the batch is split.
#[test]
fn sde_solutions_are_independent_of_batch_split() {
    let sde = SdeFn::diagonal(
        2,
        |_t: f64, x, mut f| {
            f[0] = -x[1];
            f[1] = x[0];
        },
        |_t: f64, x, mut g| {
            g[0] = 0.3 * x[0];
            g[1] = 0.1;
        },
    );
    let x0 = Array2::from_shape_fn((24, 2), |(r, j)| 1.0 + 0.1 * r as f64 + j as f64);
    let grid = TimeGrid::uniform(0.0, 2.0, 50).unwrap();
    let whole = solve(
        &sde,
        &EulerMaruyama,
        x0.view(),
        &SolveOptions::grid(grid.clone()).seed(8),
    )
    .unwrap();
    for (start, len) in [(0, 1), (5, 7), (12, 12)] {
        let part = solve(
            &sde,
            &EulerMaruyama,
            x0.slice(ndarray::s![start..start + len, ..]),
            &SolveOptions::grid(grid.clone())
                .seed(8)
                .first_path(start as u64),
        )
        .unwrap();
        assert_eq!(
            part.last(),
            whole.last().slice(ndarray::s![start..start + len, ..])
        );
    }
}

/// The fixed-grid Lévy areas: a refined step's area is the one assembled from its fine steps
/// (`A = A₁ + A₂ + (h₂W₁ − h₁W₂)/2`, `A = hH`), so refined grids see the same areas; an area
/// has variance `h/12` and is uncorrelated with its increment; the increments themselves do
/// not change when areas are generated.
#[test]
fn grid_levy_areas_refine_consistently_and_have_variance_h_over_12() {
    let (rows, m, dt) = (20_000, 2, 0.01f64);
    let fine = BrownianPaths::new(9).first_path(3);
    let coarse = fine.refine(4);
    let mut gf = IncrementGenerator::with_levy_area(&fine, rows, m);
    let mut gc = IncrementGenerator::with_levy_area(&coarse, rows, m);
    let mut plain = IncrementGenerator::new(&coarse, rows, m);
    let (mut wf, mut hf) = (Array2::zeros((rows, m)), Array2::zeros((rows, m)));
    let (mut wc, mut hc) = (Array2::zeros((rows, m)), Array2::zeros((rows, m)));
    let mut wp = Array2::zeros((rows, m));
    let (mut w_acc, mut a_acc) = (
        Array2::<f64>::zeros((rows, m)),
        Array2::<f64>::zeros((rows, m)),
    );
    for k in 0..8 {
        gf.fill(k, dt, wf.view_mut());
        gf.fill_area(k, dt, hf.view_mut());
        let done = (k % 4) as f64 * dt;
        for ((wa, aa), (w, h)) in w_acc
            .iter_mut()
            .zip(a_acc.iter_mut())
            .zip(wf.iter().zip(&hf))
        {
            *aa = (*aa + dt * h) + 0.5 * (dt * *wa - done * w);
            *wa += w;
        }
        if k % 4 == 3 {
            gc.fill(k / 4, 4.0 * dt, wc.view_mut());
            gc.fill_area(k / 4, 4.0 * dt, hc.view_mut());
            plain.fill(k / 4, 4.0 * dt, wp.view_mut());
            assert_eq!(wc, wp, "areas change no increment");
            for ((a, b), (w, wc)) in a_acc.iter().zip(&hc).zip(w_acc.iter().zip(&wc)) {
                assert!((a / (4.0 * dt) - b).abs() < 1e-13, "{a} vs {b}");
                assert!((w - wc).abs() < 1e-14);
            }
            let n = (rows * m) as f64;
            let h = 4.0 * dt;
            let var = hc.iter().map(|v| v * v).sum::<f64>() / n;
            assert!(
                (var / (h / 12.0) - 1.0).abs() < 5.0 * (2.0 / n).sqrt(),
                "Var H = {var}, h/12 = {}",
                h / 12.0
            );
            let cov = hc.iter().zip(&wc).map(|(a, b)| a * b).sum::<f64>() / n;
            assert!(cov.abs() < 5.0 * (h * h / 12.0 / n).sqrt(), "E HW = {cov}");
            w_acc.fill(0.0);
            a_acc.fill(0.0);
        }
    }
}

/// The two `BrownianPath` sources behind one trait: the grid answers its own steps (and
/// refuses other intervals), the tree any interval.
#[test]
fn brownian_path_sources() {
    use itoflow::sde::brownian::{BrownianPath, BrownianTree, GridPath, LevyArea};
    let grid = TimeGrid::uniform(0.0, 1.0, 4).unwrap();
    let paths = BrownianPaths::new(2).first_path(10);
    let mut src = GridPath::new(&paths, &grid, 3, 2, LevyArea::SpaceTime);
    let mut g = IncrementGenerator::with_levy_area(&paths, 3, 2);
    let (mut w, mut h) = (Array2::zeros((3, 2)), Array2::zeros((3, 2)));
    let (mut w2, mut h2) = (Array2::zeros((3, 2)), Array2::zeros((3, 2)));
    for k in [0usize, 1, 3, 2] {
        let (s, t) = (grid.times()[k], grid.times()[k + 1]);
        src.fill(s, t, w.view_mut(), Some(h.view_mut())).unwrap();
        g.fill(k, grid.dt(k), w2.view_mut());
        g.fill_area(k, grid.dt(k), h2.view_mut());
        assert_eq!((&w, &h), (&w2, &h2));
    }
    assert!(src.fill(0.1, 0.2, w.view_mut(), None).is_err());
    let tree = BrownianTree::new(2, 0.0, 1.0, 1e-3, 2, LevyArea::SpaceTime).unwrap();
    let mut tp = tree.path(10, 3);
    BrownianPath::<f64>::fill(&mut tp, 0.1, 0.2, w.view_mut(), Some(h.view_mut())).unwrap();
    assert_eq!(BrownianPath::<f64>::rows(&tp), 3);
}
