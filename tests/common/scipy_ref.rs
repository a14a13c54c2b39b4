//! Reading the SciPy RK45 reference runs in `tests/data/scipy_rk45/*.json` (written by
//! `tests/data/scipy_rk45/generate.py`) and the right-hand sides they were made with.
//!
//! The right-hand sides use the same floating-point operation order as the Python script, so
//! that `f` is bitwise identical on both sides (`pow` is glibc's `pow` in both).

#![allow(dead_code)]

use std::path::PathBuf;

use itoflow::sde::{OdeSystem, ProblemError};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2};
use serde_json::Value;

/// One reference case (a field is `None` when the case did not record it).
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub problem: Problem,
    pub t0: f64,
    pub t1: f64,
    pub y0: Vec<f64>,
    pub rtol: f64,
    /// One value, or one per component of a row.
    pub atol: Vec<f64>,
    pub max_step: Option<f64>,
    pub first_step: Option<f64>,
    pub t_eval: Option<Vec<f64>>,
    pub status: i64,
    pub message: String,
    pub nfev: usize,
    pub naccepted: usize,
    pub nrejected: usize,
    pub t_final: f64,
    pub y_final: Vec<f64>,
    /// Every accepted step's time (t0 first) and state.
    pub t: Option<Vec<f64>>,
    pub y: Option<Vec<Vec<f64>>>,
    /// States at `t_eval`.
    pub y_eval: Option<Vec<Vec<f64>>>,
    /// Batch cases: `"whole"` or `"per_row"`, rows and row dimension.
    pub mode: Option<String>,
    pub rows: usize,
    pub dim: usize,
    /// Per-row cases: SciPy on every row alone.
    pub per_row: Vec<Case>,
    /// Rows of the batch that `y_final` holds (all when `None`).
    pub y_final_rows: Option<Vec<usize>>,
    /// The same SciPy code with sequential sums (see `generate.py`).
    pub sequential: Option<Sequential>,
    /// How far plain SciPy is from the sequential-sum run, in the metrics of the tests.
    pub sensitivity: Sensitivity,
}

/// SciPy's deviation from itself when only the summation order of its reductions changes
/// (`generate.py`'s `summation_sensitivity`): step times relative to the span, aligned step
/// states, `t_eval` states and the final state, as relative deviations.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sensitivity {
    pub times: f64,
    pub steps: f64,
    pub eval: f64,
    pub last: f64,
}

/// The record of SciPy's RK45 run with its BLAS reductions replaced by left-to-right sums
/// (the arithmetic itoflow does): counts and FNV-1a digests of the bit patterns.
#[derive(Clone, Debug)]
pub struct Sequential {
    pub nfev: usize,
    pub naccepted: usize,
    pub nrejected: usize,
    pub status: i64,
    pub t_final: f64,
    /// Digest of every step time (t0 first), then every step's state.
    pub steps_fnv1a: String,
    /// Digest of the `t_eval` states.
    pub eval_fnv1a: Option<String>,
}

/// FNV-1a 64-bit digest of the little-endian bytes of `values`, as 16 hex digits (the same as
/// `generate.py`'s `fnv1a`).
pub fn fnv1a<'a>(values: impl IntoIterator<Item = &'a f64>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/scipy_rk45")
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("field {key} is not a number: {}", v[key]))
}

fn opt_f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn vec_f(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn mat_f(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().expect("array").iter().map(vec_f).collect()
}

fn usize_of(v: &Value, key: &str) -> usize {
    v[key].as_u64().unwrap_or_else(|| panic!("field {key}")) as usize
}

fn parse_case(v: &Value, problem: Problem, name: &str) -> Case {
    let atol = match &v["atol"] {
        Value::Array(_) => vec_f(&v["atol"]),
        x => vec![x.as_f64().expect("atol")],
    };
    let dim = v.get("dim").and_then(Value::as_u64).map(|d| d as usize);
    Case {
        name: name.to_string(),
        problem,
        t0: f(v, "t0"),
        t1: f(v, "t1"),
        y0: initial_state(
            v,
            v.get("rows").and_then(Value::as_u64).unwrap_or(1) as usize,
        ),
        rtol: f(v, "rtol"),
        atol,
        max_step: opt_f(v, "max_step"),
        first_step: opt_f(v, "first_step"),
        t_eval: v.get("t_eval").filter(|x| !x.is_null()).map(vec_f),
        status: v.get("status").and_then(Value::as_i64).unwrap_or(0),
        message: v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        nfev: v.get("nfev").map_or(0, |_| usize_of(v, "nfev")),
        naccepted: v.get("naccepted").map_or(0, |_| usize_of(v, "naccepted")),
        nrejected: v.get("nrejected").map_or(0, |_| usize_of(v, "nrejected")),
        t_final: opt_f(v, "t_final").unwrap_or(f64::NAN),
        y_final: v.get("y_final").map(vec_f).unwrap_or_default(),
        t: v.get("t").map(vec_f),
        y: v.get("y").map(mat_f),
        y_eval: v.get("y_eval").map(mat_f),
        mode: v.get("mode").and_then(Value::as_str).map(str::to_string),
        rows: v.get("rows").and_then(Value::as_u64).unwrap_or(1) as usize,
        dim: dim.unwrap_or_else(|| problem.dim()),
        per_row: Vec::new(),
        y_final_rows: v.get("y_final_rows").map(|r| {
            r.as_array()
                .expect("rows")
                .iter()
                .map(|i| i.as_u64().expect("row") as usize)
                .collect()
        }),
        sensitivity: v
            .get("summation_sensitivity")
            .map(|q| Sensitivity {
                times: f(q, "times"),
                steps: f(q, "steps"),
                eval: f(q, "eval"),
                last: f(q, "final"),
            })
            .unwrap_or_default(),
        sequential: v.get("sequential").map(|q| Sequential {
            nfev: usize_of(q, "nfev"),
            naccepted: usize_of(q, "naccepted"),
            nrejected: usize_of(q, "nrejected"),
            status: q["status"].as_i64().expect("status"),
            t_final: f(q, "t_final"),
            steps_fnv1a: q["steps_fnv1a"].as_str().expect("digest").to_string(),
            eval_fnv1a: q
                .get("eval_fnv1a")
                .and_then(Value::as_str)
                .map(str::to_string),
        }),
    }
}

/// `y0` of a case: stored, or (for the large batch) given by its formula, checked against the
/// stored digest.
fn initial_state(v: &Value, rows: usize) -> Vec<f64> {
    if let Some(formula) = v.get("y0_formula").and_then(Value::as_str) {
        assert_eq!(formula, "y0[r] = 0.01 + 0.98 * r / (rows - 1), r = 0..rows");
        let y0: Vec<f64> = (0..rows)
            .map(|r| 0.01 + 0.98 * r as f64 / (rows - 1) as f64)
            .collect();
        assert_eq!(fnv1a(&y0), v["y0_fnv1a"].as_str().expect("y0 digest"));
        y0
    } else {
        vec_f(&v["y0"])
    }
}

/// All cases of one data file (`"problems"`, `"batches"` or `"failures"`).
pub fn load(file: &str) -> Vec<Case> {
    let path = data_dir().join(format!("{file}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|v| {
            let name = v["name"].as_str().expect("name");
            let problem = Problem::from_json(v["problem"].as_str().expect("problem"), &v["params"]);
            let mut case = parse_case(v, problem, name);
            if let Some(rows) = v.get("per_row").and_then(Value::as_array) {
                case.per_row = rows
                    .iter()
                    .enumerate()
                    .map(|(i, r)| parse_case(r, problem, &format!("{name}[{i}]")))
                    .collect();
            }
            case
        })
        .collect()
}

/// The first case called `name` in `file`.
pub fn case(file: &str, name: &str) -> Case {
    load(file)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name} in {file}.json"))
}

/// Arenstorf orbit (Hairer, Nørsett & Wanner I, §II.0).
pub const ARENSTORF_MU: f64 = 0.012277471;

/// The right-hand sides of the reference runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Problem {
    VanDerPol {
        mu: f64,
    },
    LotkaVolterra {
        a: f64,
        b: f64,
        c: f64,
        d: f64,
    },
    Arenstorf,
    /// SciPy's `fun_rational` (test_ivp.py).
    Rational,
    /// SciPy's `fun_linear` (test_ivp.py).
    Linear,
    /// `y' = y²`.
    Blowup,
    /// `y' = y (1 − y)`.
    Logistic,
    /// `u' = A u` with `y = [u0, u1, a00, a01, a10, a11]`, the coefficients constant.
    LinearAug,
}

impl Problem {
    fn from_json(name: &str, params: &Value) -> Self {
        match name {
            "vdp" => Problem::VanDerPol {
                mu: f(params, "mu"),
            },
            "lotka_volterra" => Problem::LotkaVolterra {
                a: f(params, "a"),
                b: f(params, "b"),
                c: f(params, "c"),
                d: f(params, "d"),
            },
            "arenstorf" => {
                assert_eq!(f(params, "mu"), ARENSTORF_MU);
                Problem::Arenstorf
            }
            "rational" => Problem::Rational,
            "linear" => Problem::Linear,
            "blowup" => Problem::Blowup,
            "logistic" => Problem::Logistic,
            "linear_aug" => Problem::LinearAug,
            other => panic!("unknown problem {other}"),
        }
    }

    /// The problem's name in the JSON files.
    pub fn key(&self) -> &'static str {
        match self {
            Problem::VanDerPol { .. } => "vdp",
            Problem::LotkaVolterra { .. } => "lotka_volterra",
            Problem::Arenstorf => "arenstorf",
            Problem::Rational => "rational",
            Problem::Linear => "linear",
            Problem::Blowup => "blowup",
            Problem::Logistic => "logistic",
            Problem::LinearAug => "linear_aug",
        }
    }

    /// `f(t, y)` of one row, in the operation order of `generate.py`.
    pub fn eval_row(&self, t: f64, y: &[f64], dy: &mut [f64]) {
        match *self {
            Problem::VanDerPol { mu } => {
                dy[0] = y[1];
                dy[1] = mu * (1.0 - y[0] * y[0]) * y[1] - y[0];
            }
            Problem::LotkaVolterra { a, b, c, d } => {
                let (x, yy) = (y[0], y[1]);
                dy[0] = a * x - b * x * yy;
                dy[1] = -c * yy + d * x * yy;
            }
            Problem::Arenstorf => {
                let mu = ARENSTORF_MU;
                let mu1 = 1.0 - mu;
                let (y1, y2, v1, v2) = (y[0], y[1], y[2], y[3]);
                let d1 = ((y1 + mu) * (y1 + mu) + y2 * y2).powf(1.5);
                let d2 = ((y1 - mu1) * (y1 - mu1) + y2 * y2).powf(1.5);
                dy[0] = v1;
                dy[1] = v2;
                dy[2] = y1 + 2.0 * v2 - mu1 * (y1 + mu) / d1 - mu * (y1 - mu1) / d2;
                dy[3] = y2 - 2.0 * v1 - mu1 * y2 / d1 - mu * y2 / d2;
            }
            Problem::Rational => {
                dy[0] = y[1] / t;
                dy[1] = y[1] * (y[0] + 2.0 * y[1] - 1.0) / (t * (y[0] - 1.0));
            }
            Problem::Linear => {
                dy[0] = -y[0] - 5.0 * y[1];
                dy[1] = y[0] + y[1];
            }
            Problem::Blowup => dy[0] = y[0] * y[0],
            Problem::Logistic => dy[0] = y[0] * (1.0 - y[0]),
            Problem::LinearAug => {
                let (u0, u1, a, b, c, d) = (y[0], y[1], y[2], y[3], y[4], y[5]);
                dy[0] = a * u0 + b * u1;
                dy[1] = c * u0 + d * u1;
                dy[2..].fill(0.0);
            }
        }
    }
}

impl OdeSystem<f64> for Problem {
    fn dim(&self) -> usize {
        match self {
            Problem::Arenstorf => 4,
            Problem::Blowup | Problem::Logistic => 1,
            Problem::LinearAug => 6,
            _ => 2,
        }
    }

    fn rhs(
        &self,
        t: ArrayView1<'_, f64>,
        y: ArrayView2<'_, f64>,
        mut dydt: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ProblemError> {
        let dim = OdeSystem::<f64>::dim(self);
        let (mut yr, mut dr) = (vec![0.0; dim], vec![0.0; dim]);
        for (r, &tr) in t.iter().enumerate() {
            for (dst, src) in yr.iter_mut().zip(y.row(r)) {
                *dst = *src;
            }
            self.eval_row(tr, &yr, &mut dr);
            for (dst, src) in dydt.row_mut(r).iter_mut().zip(&dr) {
                *dst = *src;
            }
        }
        Ok(())
    }
}

/// `‖a − b‖∞ / max(‖b‖∞, f64::MIN_POSITIVE)`: the deviation of a state `a` from the reference
/// state `b`, relative to the reference's size.
pub fn rel_dev(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let size = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    diff / size.max(f64::MIN_POSITIVE)
}
