//! Time grids for fixed-step solvers and the choice of saved times.

use crate::{Real, SaveAt, SolveError};

/// A strictly monotone grid of times `t_0, t_1, …, t_N` (increasing or decreasing).
///
/// ```
/// use itoflow_sde::TimeGrid;
/// let g = TimeGrid::uniform(0.0, 1.0, 4).unwrap();
/// assert_eq!(g.times(), &[0.0, 0.25, 0.5, 0.75, 1.0]);
/// let back = TimeGrid::uniform(1.0, 0.0, 2).unwrap();   // backward in time
/// assert_eq!(back.dt(0), -0.5);
/// assert!(TimeGrid::uniform(0.0, 1.0, 0).is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct TimeGrid<T> {
    times: Vec<T>,
}

impl<T: Real> TimeGrid<T> {
    /// `steps` equal steps from `t0` to `t1`: `t_k = t0 + k (t1 − t0) / steps`, the last point
    /// exactly `t1`.
    pub fn uniform(t0: T, t1: T, steps: usize) -> Result<Self, SolveError> {
        check_span(t0, t1)?;
        if steps == 0 {
            return Err(SolveError::option(
                "steps",
                "the number of steps must be at least 1",
            ));
        }
        let n = T::from_count(steps);
        let mut times: Vec<T> = (0..steps)
            .map(|k| t0 + (t1 - t0) * (T::from_count(k) / n))
            .collect();
        times.push(t1);
        Self::from_times(times)
    }

    /// Steps of size `dt > 0` from `t0` towards `t1` (in either direction). If `|t1 − t0|` is not
    /// a whole number of steps (within 1e-9 relative), the last step is shorter.
    pub fn with_dt(t0: T, t1: T, dt: T) -> Result<Self, SolveError> {
        check_span(t0, t1)?;
        if !(dt > T::zero() && dt.is_finite()) {
            return Err(SolveError::NonPositiveDt { dt: dt.f64() });
        }
        let span = (t1 - t0).abs().f64();
        let ratio = span / dt.f64();
        let whole = ratio.round();
        let steps = if (ratio - whole).abs() <= 1e-9 * ratio.max(1.0) {
            whole.max(1.0)
        } else {
            ratio.ceil()
        };
        if steps > 1e12 {
            return Err(SolveError::option(
                "dt",
                format!("dt = {dt} gives {steps:e} steps over a span of {span}"),
            ));
        }
        let steps = steps as usize;
        if (ratio - whole).abs() <= 1e-9 * ratio.max(1.0) {
            return Self::uniform(t0, t1, steps);
        }
        let sign = if t1 > t0 { T::one() } else { -T::one() };
        let mut times: Vec<T> = (0..steps)
            .map(|k| t0 + sign * dt * T::from_count(k))
            .collect();
        times.push(t1);
        Self::from_times(times)
    }

    /// A grid from explicit times: at least two, finite, strictly increasing or strictly
    /// decreasing.
    pub fn from_times(times: Vec<T>) -> Result<Self, SolveError> {
        if times.len() < 2 {
            return Err(SolveError::InvalidTimeSpan {
                reason: format!("a grid needs at least two times, got {}", times.len()),
            });
        }
        if let Some(i) = times.iter().position(|t| !t.is_finite()) {
            return Err(SolveError::InvalidTimeSpan {
                reason: format!("time {i} of the grid is {}", times[i]),
            });
        }
        let up = times[1] > times[0];
        for (i, w) in times.windows(2).enumerate() {
            let ok = if up { w[1] > w[0] } else { w[1] < w[0] };
            if !ok {
                return Err(SolveError::InvalidTimeSpan {
                    reason: format!(
                        "grid times must be strictly monotone; t[{}] = {} and t[{}] = {}",
                        i,
                        w[0],
                        i + 1,
                        w[1]
                    ),
                });
            }
        }
        Ok(Self { times })
    }

    /// The grid points.
    pub fn times(&self) -> &[T] {
        &self.times
    }

    /// Number of steps (points − 1).
    pub fn steps(&self) -> usize {
        self.times.len() - 1
    }

    /// First time.
    pub fn t0(&self) -> T {
        self.times[0]
    }

    /// Last time.
    pub fn t1(&self) -> T {
        self.times[self.times.len() - 1]
    }

    /// Signed size of step `k`, `t_{k+1} − t_k`.
    pub fn dt(&self, k: usize) -> T {
        self.times[k + 1] - self.times[k]
    }

    /// The grid with every step split into `substeps` equal parts (the grid a
    /// [`BrownianPaths::refine`](crate::brownian::BrownianPaths::refine)'d coarse solve matches).
    pub fn subdivide(&self, substeps: usize) -> Result<Self, SolveError> {
        if substeps == 0 {
            return Err(SolveError::option("substeps", "must be at least 1"));
        }
        let mut times = Vec::with_capacity(self.steps() * substeps + 1);
        let n = T::from_count(substeps);
        for w in self.times.windows(2) {
            for s in 0..substeps {
                times.push(w[0] + (w[1] - w[0]) * (T::from_count(s) / n));
            }
        }
        times.push(self.t1());
        Self::from_times(times)
    }

    /// Index of the grid point equal to `t` (within 1e-9 of the span), if any.
    pub fn index_of(&self, t: T) -> Option<usize> {
        let tol = T::c(1e-9) * (self.t1() - self.t0()).abs();
        let up = self.t1() > self.t0();
        // Binary search on the monotone grid.
        let i = if up {
            self.times.partition_point(|&s| s < t)
        } else {
            self.times.partition_point(|&s| s > t)
        };
        [i.saturating_sub(1), i]
            .into_iter()
            .filter(|&j| j < self.times.len())
            .find(|&j| (self.times[j] - t).abs() <= tol)
    }
}

pub(crate) fn check_span<T: Real>(t0: T, t1: T) -> Result<(), SolveError> {
    if !t0.is_finite() || !t1.is_finite() {
        return Err(SolveError::InvalidTimeSpan {
            reason: format!("the span [{t0}, {t1}] is not finite"),
        });
    }
    if t0 == t1 {
        return Err(SolveError::InvalidTimeSpan {
            reason: format!("the span is empty (t0 = t1 = {t0})"),
        });
    }
    Ok(())
}

/// The grid indices of `at`, increasing (see [`SaveAt::indices`]).
pub(crate) fn save_indices<T: Real>(
    at: &SaveAt<T>,
    grid: &TimeGrid<T>,
) -> Result<Vec<usize>, SolveError> {
    let n = grid.steps();
    Ok(match at {
        SaveAt::Final => vec![n],
        SaveAt::Steps => (0..=n).collect(),
        SaveAt::Every(k) => {
            if *k == 0 {
                return Err(SolveError::option(
                    "save",
                    "SaveAt::Every(0): k must be at least 1",
                ));
            }
            let mut v: Vec<usize> = (0..=n).step_by(*k).collect();
            if *v.last().unwrap_or(&usize::MAX) != n {
                v.push(n);
            }
            v
        }
        SaveAt::Times(ts) => {
            if ts.is_empty() {
                return Err(SolveError::option(
                    "save",
                    "SaveAt::Times with no times; use SaveAt::Final for the final state only",
                ));
            }
            let mut v = Vec::with_capacity(ts.len());
            for &t in ts {
                let i = grid.index_of(t).ok_or_else(|| {
                    SolveError::option(
                        "save",
                        format!(
                            "save time {t} is not a point of the grid [{}, …, {}] with {} steps \
                                 (fixed-step solvers save at grid points only)",
                            grid.t0(),
                            grid.t1(),
                            n
                        ),
                    )
                })?;
                if let Some(&last) = v.last()
                    && i <= last
                {
                    return Err(SolveError::option(
                        "save",
                        "save times must be strictly monotone in the direction of integration",
                    ));
                }
                v.push(i);
            }
            v
        }
    })
}
