#!/usr/bin/env python3
"""Reference runs of SciPy's RK45 (Dormand–Prince 5(4)) for ``tests/rk45_scipy.rs``.

What it writes (next to this file):

* ``problems.json`` — single-system cases: Van der Pol (mu = 1), Lotka–Volterra (the SciPy
  ``solve_ivp`` docs' example, a, b, c, d = 1.5, 1, 3, 1), the Arenstorf orbit (one period,
  Hairer–Nørsett–Wanner I, §II.0), and SciPy's own ``fun_rational`` / ``fun_linear`` test
  problems (from ``scipy/integrate/_ivp/tests/test_ivp.py``, with their spans and initial
  values), at loose/medium/tight tolerances, forward and backward, with ``t_eval``,
  ``max_step``, ``first_step`` and a per-component ``atol``.
* ``batches.json`` — batch cases: a batch of Van der Pol variants solved by SciPy as one
  flattened system (itoflow's whole-batch mode, scalar and per-component ``atol``, with and
  without ``t_eval``); 2921 logistic rows as one system (the smallest size ``n`` for which
  SciPy's ``n ** 0.5`` is not ``sqrt(n)``); and a heterogeneous batch of 2-D linear ODEs
  (coefficients carried in the state) whose rows SciPy solves one at a time (itoflow's per-row
  mode), plus the same batch flattened.
* ``failures.json`` — ``y' = y^2, y(0) = 1`` on ``[0, 2]``, which blows up at ``t = 1``: the
  time at which SciPy gives up with "Required step size is less than spacing between numbers.".

Every case records the solver settings (``t0``, ``t1``, ``y0``, ``rtol``, ``atol``, ``max_step``
(null = infinite), ``first_step``, ``t_eval``), SciPy's ``nfev``, ``naccepted``, ``nrejected``,
``status``/``message`` (and ``step_message``, the failing ``step()``'s message), the final
``t_final``/``y_final``, every accepted step's time ``t`` and state ``y`` (flattened batch state;
left out for a few large cases), the ``t_eval`` states ``y_eval``, the ``sequential`` record and
the ``summation_sensitivity`` (both below). Batch cases add ``mode``, ``rows``, ``dim``.

How the counts are obtained
---------------------------
The ``RK45`` solver object is stepped by hand: accepted steps = number of successful ``step()``
calls. Each attempt (accepted or rejected) costs 6 evaluations (5 stages + the FSAL evaluation
of ``f(t + h, y_new)``), and the start costs 1 (``f(t0, y0)``) plus 1 for the trial evaluation
of the automatic initial step (none when ``first_step`` is given), so

    nrejected = (nfev - 2 - 6 * naccepted) / 6      (automatic first step)
    nrejected = (nfev - 1 - 6 * naccepted) / 6      (first_step given)

This script does not trust the formula: it counts the evaluations of every ``step()`` call,
checks each is a multiple of 6 (one accepted attempt plus ``k`` rejected ones), sums the
rejected attempts directly, and asserts that the formula and the direct count agree. It also
runs ``solve_ivp`` with the same arguments and asserts that its ``t``, ``y``, ``nfev`` equal the
hand-stepped run bitwise.

Right-hand sides are written with scalar Python floats in the same operation order as the
Rust tests (``tests/rk45_scipy.rs``), so that f itself is bitwise identical on both sides;
what remains different is NumPy's BLAS summation order (and FMA) in the stage combinations,
the dense output and the error norm.

The sequential-summation variant
--------------------------------
Every case is run twice. The main record is plain SciPy. The ``"sequential"`` record is the same
SciPy code (``RK45``, ``rk_step``, ``select_initial_step``, ``RkDenseOutput``) with the BLAS
reductions it uses swapped, for the duration of the run, for left-to-right sums of products
without FMA: ``np.dot`` as seen by ``scipy.integrate._ivp.rk`` (stages, new state, error
estimate, dense-output evaluation), the ``K.T.dot(P)`` of the dense output, and
``np.linalg.norm`` inside SciPy's RMS ``norm`` (SciPy's own ``/ x.size ** 0.5`` is kept).
Everything else, every elementwise operation, every branch and constant, is SciPy's. That is
the arithmetic itoflow does, so the Rust tests require it to agree **bitwise**: the record
holds the counts and FNV-1a-64 digests of the bit patterns of all step times and states (and
of the ``t_eval`` states), see ``fnv1a``.

``summation_sensitivity`` is how far plain SciPy is from the sequential run — from itself,
with nothing but the summation order changed — in the metrics of the Rust tests (see
``summation_sensitivity``); the tests allow itoflow twice that (and at least 1e-10 for states).

Rerun
-----
    /work/main/.venv/bin/python tests/data/scipy_rk45/generate.py

(any Python with NumPy and SciPy; the versions used are recorded in every JSON file under
``"generator"``; the committed data was produced with SciPy 1.17.1 and NumPy 2.4.6 on x86_64
with SciPy's bundled OpenBLAS, kernel family Haswell). The output is deterministic for a
given SciPy/NumPy/BLAS kernel. The sequential record does not depend on the BLAS at all;
the plain record may change in its last bits with another BLAS kernel (the script then still
asserts its internal consistency, but the Rust tests' tolerances were set for this data).
"""

import json
import math
import platform
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy
import scipy.integrate._ivp.common as scipy_common
import scipy.integrate._ivp.rk as scipy_rk
from scipy.integrate import RK45, solve_ivp

HERE = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------
# Problems (scalar float arithmetic; the Rust side uses the same operation order).
# ---------------------------------------------------------------------------------------------


def vdp(mu):
    def f(t, y):
        y0, y1 = float(y[0]), float(y[1])
        return np.array([y1, mu * (1.0 - y0 * y0) * y1 - y0])

    return f


def lotka_volterra(a, b, c, d):
    def f(t, z):
        x, y = float(z[0]), float(z[1])
        return np.array([a * x - b * x * y, -c * y + d * x * y])

    return f


# Arenstorf orbit: Hairer, Nørsett & Wanner, Solving ODEs I (2nd ed.), §II.0, eq. (0.1).
ARENSTORF_MU = 0.012277471
ARENSTORF_Y0 = [0.994, 0.0, 0.0, -2.00158510637908252240537862224]
ARENSTORF_PERIOD = 17.0652165601579625588917206249


def arenstorf(t, y):
    mu = ARENSTORF_MU
    mu1 = 1.0 - mu
    y1, y2, v1, v2 = (float(v) for v in y)
    d1 = math.pow((y1 + mu) * (y1 + mu) + y2 * y2, 1.5)
    d2 = math.pow((y1 - mu1) * (y1 - mu1) + y2 * y2, 1.5)
    a1 = y1 + 2.0 * v2 - mu1 * (y1 + mu) / d1 - mu * (y1 - mu1) / d2
    a2 = y2 - 2.0 * v1 - mu1 * y2 / d1 - mu * y2 / d2
    return np.array([v1, v2, a1, a2])


def fun_rational(t, y):
    # scipy/integrate/_ivp/tests/test_ivp.py::fun_rational
    y0, y1 = float(y[0]), float(y[1])
    return np.array([y1 / t, y1 * (y0 + 2 * y1 - 1) / (t * (y0 - 1))])


def fun_linear(t, y):
    # scipy/integrate/_ivp/tests/test_ivp.py::fun_linear
    y0, y1 = float(y[0]), float(y[1])
    return np.array([-y0 - 5 * y1, y0 + y1])


def logistic(t, y):
    y0 = float(y[0])
    return np.array([y0 * (1.0 - y0)])


def blowup(t, y):
    return np.array([float(y[0]) * float(y[0])])


def linear_aug(t, y):
    """2-D linear ODE u' = A u whose coefficients travel in the state:
    y = [u0, u1, a00, a01, a10, a11], the coefficients constant."""
    u0, u1, a, b, c, d = (float(v) for v in y)
    return np.array([a * u0 + b * u1, c * u0 + d * u1, 0.0, 0.0, 0.0, 0.0])


def batched(f, dim):
    """The flattened batch [rows * dim] as SciPy sees it: f applied to every row."""

    def g(t, y):
        out = np.empty_like(y)
        for r in range(y.size // dim):
            out[r * dim : (r + 1) * dim] = f(t, y[r * dim : (r + 1) * dim])
        return out

    return g


# ---------------------------------------------------------------------------------------------
# The sequential-summation variant (see the module docstring)
# ---------------------------------------------------------------------------------------------


def seq_dot(a, b):
    """Matrix-vector or matrix-matrix product, every entry summed left to right, no FMA."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if b.ndim == 1:
        b = b[:, None]
        squeeze = True
    else:
        squeeze = False
    assert a.ndim == 2 and a.shape[1] == b.shape[0]
    out = np.empty((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for k in range(b.shape[1]):
            s = 0.0
            for j in range(a.shape[1]):
                s += float(a[i, j]) * float(b[j, k])
            out[i, k] = s
    return out[:, 0] if squeeze else out


def seq_norm(x):
    """SciPy's RMS norm with the sum of squares taken left to right."""
    s = 0.0
    for v in np.ravel(x):
        v = float(v)
        s += v * v
    return math.sqrt(s) / x.size ** 0.5


class _NumpyWithSequentialDot:
    """``numpy`` as ``scipy.integrate._ivp.rk`` sees it, but with a sequential ``dot``."""

    dot = staticmethod(seq_dot)

    def __getattr__(self, name):
        return getattr(np, name)


def _seq_dense_output_impl(self):
    # SciPy's RungeKutta._dense_output_impl with K.T.dot(P) summed sequentially.
    return scipy_rk.RkDenseOutput(self.t_old, self.t, self.y_old, seq_dot(self.K.T, self.P))


@contextmanager
def sequential_sums():
    saved = (scipy_rk.np, scipy_rk.norm, scipy_common.norm, RK45._dense_output_impl)
    scipy_rk.np = _NumpyWithSequentialDot()
    scipy_rk.norm = seq_norm
    scipy_common.norm = seq_norm
    RK45._dense_output_impl = _seq_dense_output_impl
    try:
        yield
    finally:
        scipy_rk.np, scipy_rk.norm, scipy_common.norm, RK45._dense_output_impl = saved


def fnv1a(values):
    """FNV-1a 64-bit digest of the little-endian IEEE-754 bytes of a sequence of floats, as
    16 hex digits (the Rust tests compute the same)."""
    h = 0xCBF29CE484222325
    for b in np.asarray(values, dtype="<f8").tobytes():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


# ---------------------------------------------------------------------------------------------
# Running SciPy
# ---------------------------------------------------------------------------------------------


def num(x):
    """JSON number (repr round-trips), or None for infinity."""
    x = float(x)
    return None if math.isinf(x) else x


def run_once(fun, t0, t1, y0, rtol, atol, max_step=np.inf, first_step=None, t_eval=None):
    """One SciPy run: the hand-stepped solver and solve_ivp, cross-checked."""
    y0 = np.asarray(y0, dtype=float)
    opts = dict(rtol=rtol, atol=atol, max_step=max_step)
    if first_step is not None:
        opts["first_step"] = first_step

    # 1. Hand-stepped solver: counts per step() call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rtol < 100 eps is raised, with a warning
        solver = RK45(fun, t0, y0, t1, **opts)
    base = solver.nfev
    assert base == (1 if first_step is not None else 2), base
    ts, ys = [solver.t], [solver.y.copy()]
    naccepted = nrejected_direct = 0
    message = None
    while solver.status == "running":
        before = solver.nfev
        message = solver.step()
        calls = solver.nfev - before
        assert calls % 6 == 0 and calls > 0, calls
        if solver.status == "failed":
            nrejected_direct += calls // 6  # every attempt of the failing call was rejected
            break
        naccepted += 1
        nrejected_direct += calls // 6 - 1
        ts.append(solver.t)
        ys.append(solver.y.copy())
    nfev = solver.nfev
    if solver.status == "finished":
        nrejected = (nfev - base - 6 * naccepted) // 6
        assert (nfev - base - 6 * naccepted) % 6 == 0
        assert nrejected == nrejected_direct, (nrejected, nrejected_direct)
    else:
        nrejected = nrejected_direct
        assert nfev == base + 6 * (naccepted + nrejected)

    # 2. solve_ivp with the same arguments must agree bitwise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve_ivp(fun, (t0, t1), y0, method="RK45", t_eval=t_eval, **opts)
    assert res.nfev == nfev, (res.nfev, nfev)
    if t_eval is None:
        assert np.array_equal(res.t, np.array(ts)), "solve_ivp took other steps"
        assert np.array_equal(res.y, np.array(ys).T), "solve_ivp gave other states"
    else:
        assert np.array_equal(res.t, np.asarray(t_eval, dtype=float))
    return dict(res=res, solver=solver, message=message, nfev=nfev, naccepted=naccepted,
                nrejected=nrejected, ts=ts, ys=ys)


def rel_dev(a, b):
    """max|a - b| / max(max|b|, smallest normal): the deviation metric of the Rust tests."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), sys.float_info.min))


def summation_sensitivity(fun, t0, t1, t_eval, r, q):
    """How far SciPy moves from itself when only the summation order of its reductions
    changes (plain run ``r`` against the sequential-summation run ``q``), in the metrics of
    the Rust tests: step times relative to the span; step states after moving ``r``'s state
    to ``q``'s step time to first order, ``y + f(t, y) (t_q - t)``; t_eval and final states."""
    out = dict(times=0.0, steps=0.0, eval=0.0, final=rel_dev(q["solver"].y, r["solver"].y))
    if len(r["ts"]) == len(q["ts"]):
        span = abs(t1 - t0)
        for tr, yr, tq, yq in zip(r["ts"], r["ys"], q["ts"], q["ys"]):
            out["times"] = max(out["times"], abs(tq - tr) / span)
            aligned = yr + fun(tr, yr) * (tq - tr)
            out["steps"] = max(out["steps"], rel_dev(yq, aligned))
    if t_eval is not None and q["res"].y.shape == r["res"].y.shape:
        for a, b in zip(q["res"].y.T, r["res"].y.T):
            out["eval"] = max(out["eval"], rel_dev(a, b))
    return out


def run(fun, t0, t1, y0, rtol, atol, max_step=np.inf, first_step=None, t_eval=None,
        record_steps=True):
    """A reference case: plain SciPy, plus the sequential-summation variant's digests."""
    args = (fun, t0, t1, y0, rtol, atol, max_step, first_step, t_eval)
    r = run_once(*args)
    with sequential_sums():
        q = run_once(*args)
    res, solver, message = r["res"], r["solver"], r["message"]
    nfev, naccepted, nrejected = r["nfev"], r["naccepted"], r["nrejected"]
    ts, ys = r["ts"], r["ys"]
    y0 = np.asarray(y0, dtype=float)
    sequential = dict(
        nfev=int(q["nfev"]),
        naccepted=int(q["naccepted"]),
        nrejected=int(q["nrejected"]),
        status=int(q["res"].status),
        t_final=num(q["solver"].t),
        steps_fnv1a=fnv1a(list(q["ts"]) + [v for y in q["ys"] for v in y]),
    )
    if t_eval is not None:
        sequential["eval_fnv1a"] = fnv1a(q["res"].y.T.ravel())
    sensitivity = summation_sensitivity(fun, t0, t1, t_eval, r, q)

    case = dict(
        t0=num(t0),
        t1=num(t1),
        y0=[num(v) for v in y0],
        rtol=num(rtol),
        atol=num(atol) if np.ndim(atol) == 0 else [num(a) for a in atol],
        max_step=num(max_step),
        first_step=None if first_step is None else num(first_step),
        t_eval=None if t_eval is None else [num(v) for v in t_eval],
        status=int(res.status),
        success=bool(res.success),
        message=res.message,
        step_message=message,
        nfev=int(nfev),
        naccepted=int(naccepted),
        nrejected=int(nrejected),
        t_final=num(solver.t),
        y_final=[num(v) for v in solver.y],
        sequential=sequential,
        summation_sensitivity=sensitivity,
    )
    if record_steps:
        case["t"] = [num(v) for v in ts]
        case["y"] = [[num(v) for v in y] for y in ys]
    if t_eval is not None:
        case["y_eval"] = [[num(v) for v in col] for col in res.y.T]
    return case


LOOSE = (1e-3, 1e-6)  # SciPy's defaults
MEDIUM = (1e-6, 1e-9)
TIGHT = (1e-10, 1e-12)
TOLS = {"loose": LOOSE, "medium": MEDIUM, "tight": TIGHT}


def problem_cases():
    cases = []

    def add(name, problem, params, fun, *args, **kw):
        c = run(fun, *args, **kw)
        cases.append(dict(name=name, problem=problem, params=params, **c))

    # Van der Pol, mu = 1, y0 = [2, 0] on [0, 20].
    f = vdp(1.0)
    for tol, (rtol, atol) in TOLS.items():
        add(f"vdp_{tol}", "vdp", {"mu": 1.0}, f, 0.0, 20.0, [2.0, 0.0], rtol, atol)
    # Backward from y0 = [2, 0] (a short span: backward in time the limit cycle repels and the
    # solution blows up near t = -2.7).
    for tol, (rtol, atol) in TOLS.items():
        add(f"vdp_backward_{tol}", "vdp", {"mu": 1.0}, f, 0.0, -2.5, [2.0, 0.0], rtol, atol)
    add("vdp_max_step", "vdp", {"mu": 1.0}, f, 0.0, 20.0, [2.0, 0.0], *LOOSE, max_step=0.25)
    add("vdp_first_step", "vdp", {"mu": 1.0}, f, 0.0, 20.0, [2.0, 0.0], *MEDIUM,
        first_step=1e-3)
    add("vdp_t_eval_medium", "vdp", {"mu": 1.0}, f, 0.0, 20.0, [2.0, 0.0], *MEDIUM,
        t_eval=np.linspace(0.0, 20.0, 41))
    add("vdp_rtol_below_100eps", "vdp", {"mu": 1.0}, f, 0.0, 1.0, [2.0, 0.0], 1e-16, 1e-16,
        t_eval=[0.25, 0.5, 1.0], record_steps=False)

    # Lotka–Volterra, SciPy docs' example.
    lv = {"a": 1.5, "b": 1.0, "c": 3.0, "d": 1.0}
    f = lotka_volterra(1.5, 1.0, 3.0, 1.0)
    for tol, (rtol, atol) in TOLS.items():
        add(f"lotka_volterra_{tol}", "lotka_volterra", lv, f, 0.0, 15.0, [10.0, 5.0], rtol, atol)
    for tol, (rtol, atol) in TOLS.items():
        add(f"lotka_volterra_backward_{tol}", "lotka_volterra", lv, f, 15.0, 0.0, [10.0, 5.0],
            rtol, atol)
    add("lotka_volterra_atol_vector", "lotka_volterra", lv, f, 0.0, 15.0, [10.0, 5.0],
        1e-5, [1e-4, 1e-9])
    add("lotka_volterra_t_eval_docs", "lotka_volterra", lv, f, 0.0, 15.0, [10.0, 5.0], *LOOSE,
        t_eval=np.linspace(0.0, 15.0, 300), record_steps=False)

    # Arenstorf orbit, one period.
    ar = {"mu": ARENSTORF_MU}
    for tol, (rtol, atol) in TOLS.items():
        add(f"arenstorf_{tol}", "arenstorf", ar, arenstorf, 0.0, ARENSTORF_PERIOD,
            ARENSTORF_Y0, rtol, atol)
    for tol, (rtol, atol) in TOLS.items():
        add(f"arenstorf_backward_{tol}", "arenstorf", ar, arenstorf, ARENSTORF_PERIOD, 0.0,
            ARENSTORF_Y0, rtol, atol)

    # SciPy's fun_rational, y0 = [1/3, 2/9], spans [5, 9] and [5, 1] (test_ivp.py).
    y0 = [1 / 3, 2 / 9]
    for span, d in (((5.0, 9.0), "forward"), ((5.0, 1.0), "backward")):
        for tol, (rtol, atol) in TOLS.items():
            add(f"rational_{d}_{tol}", "rational", {}, fun_rational, *span, y0, rtol, atol)
        # test_max_step / test_first_step settings
        add(f"rational_{d}_max_step", "rational", {}, fun_rational, *span, y0, *LOOSE,
            max_step=0.5)
        add(f"rational_{d}_first_step", "rational", {}, fun_rational, *span, y0, *LOOSE,
            max_step=0.5, first_step=0.1)
        # test_t_eval settings
        add(f"rational_{d}_t_eval_linspace", "rational", {}, fun_rational, *span, y0, *LOOSE,
            t_eval=np.linspace(span[0], span[1], 10))
    add("rational_forward_t_eval_irregular", "rational", {}, fun_rational, 5.0, 9.0, y0,
        *LOOSE, t_eval=[5, 5.01, 7, 8, 8.01, 9])
    add("rational_backward_t_eval_irregular", "rational", {}, fun_rational, 5.0, 1.0, y0,
        *LOOSE, t_eval=[5, 4.99, 3, 1.5, 1.1, 1.01, 1])
    add("rational_forward_t_eval_interior", "rational", {}, fun_rational, 5.0, 9.0, y0,
        *LOOSE, t_eval=[5.01, 7, 8, 8.01])
    add("rational_backward_t_eval_interior", "rational", {}, fun_rational, 5.0, 1.0, y0,
        *LOOSE, t_eval=[4.99, 3, 1.5, 1.1, 1.01])

    # SciPy's fun_linear, y0 = [0, 2] on [0, 2] (test_integration_const_jac), and back.
    for tol, (rtol, atol) in TOLS.items():
        add(f"linear_forward_{tol}", "linear", {}, fun_linear, 0.0, 2.0, [0.0, 2.0], rtol, atol)
    for tol, (rtol, atol) in TOLS.items():
        add(f"linear_backward_{tol}", "linear", {}, fun_linear, 0.0, -2.0, [0.0, 2.0], rtol,
            atol)
    return cases


# Heterogeneous 2-D linear rows: [u0, u1, a00, a01, a10, a11].
LINEAR_ROWS = [
    [1.0, 0.0, -0.5, 1.0, -1.0, -0.5],  # slow damped rotation
    [1.0, 1.0, -50.0, 0.0, 0.0, -1.0],  # mildly stiff: stability-limited steps
    [0.0, 1.0, 0.0, 20.0, -20.0, 0.0],  # fast oscillation
    [0.0, 2.0, -1.0, -5.0, 1.0, 1.0],  # SciPy's fun_linear
    [3.0, -1.0, -0.01, 0.0, 0.0, -0.02],  # almost constant
    [1e-3, 1e3, -2.0, 0.5, 0.1, -3.0],  # disparate scales
]
VDP_ROWS = [[2.0, 0.0], [1.0, 1.0], [-0.5, 2.0], [0.0, -3.0]]


def batch_cases():
    cases = []
    # Whole batch: SciPy on the flattened Van der Pol batch, scalar and per-component atol.
    flat = [v for row in VDP_ROWS for v in row]
    f = batched(vdp(1.0), 2)
    for name, rtol, atol, t_eval in (
        ("vdp_batch_whole_medium", 1e-6, 1e-9, None),
        ("vdp_batch_whole_loose_t_eval", 1e-3, 1e-6, list(np.linspace(0.0, 10.0, 11))),
    ):
        c = run(f, 0.0, 10.0, flat, rtol, atol, t_eval=t_eval)
        cases.append(dict(name=name, problem="vdp", params={"mu": 1.0}, mode="whole",
                          rows=len(VDP_ROWS), dim=2, **c))
    atol_row = [1e-8, 1e-5]
    c = run(f, 0.0, 10.0, flat, 1e-6, atol_row * len(VDP_ROWS))
    c["atol"] = atol_row  # per component of a row; SciPy saw it tiled over the rows
    cases.append(dict(name="vdp_batch_whole_atol_vector", problem="vdp", params={"mu": 1.0},
                      mode="whole", rows=len(VDP_ROWS), dim=2, **c))

    # A large whole batch: 2921 logistic rows, the smallest system size n for which SciPy's
    # `n ** 0.5` (C pow) differs from sqrt(n) in the last bit. Only every 100th row of the
    # final state is stored, the rest is covered by the sequential variant's digest.
    n = 2921
    y0 = [0.01 + 0.98 * r / (n - 1) for r in range(n)]
    assert n ** 0.5 != math.sqrt(n)
    c = run(batched(logistic, 1), 0.0, 8.0, y0, 1e-3, 1e-6, record_steps=False)
    keep = list(range(0, n, 100))
    c["y_final"] = [c["y_final"][r] for r in keep]
    c["y_final_rows"] = keep
    c["y0"] = None
    c["y0_formula"] = "y0[r] = 0.01 + 0.98 * r / (rows - 1), r = 0..rows"
    c["y0_fnv1a"] = fnv1a(y0)
    cases.append(dict(name="logistic_batch_whole_2921", problem="logistic", params={},
                      mode="whole", rows=n, dim=1, **c))

    # Per row: SciPy on every row alone; and the same batch flattened (whole-batch mode).
    t_eval = list(np.linspace(0.0, 5.0, 6))
    per_row = []
    for row in LINEAR_ROWS:
        per_row.append(run(linear_aug, 0.0, 5.0, row, 1e-6, 1e-9, t_eval=t_eval,
                           record_steps=False))
    cases.append(dict(name="linear_rows_per_row", problem="linear_aug", params={},
                      mode="per_row", rows=len(LINEAR_ROWS), dim=6,
                      t0=0.0, t1=5.0, rtol=1e-6, atol=1e-9, t_eval=t_eval,
                      y0=[v for r in LINEAR_ROWS for v in r], per_row=per_row))
    flat = [v for r in LINEAR_ROWS for v in r]
    c = run(batched(linear_aug, 6), 0.0, 5.0, flat, 1e-6, 1e-9, t_eval=t_eval,
            record_steps=False)
    cases.append(dict(name="linear_rows_whole", problem="linear_aug", params={},
                      mode="whole", rows=len(LINEAR_ROWS), dim=6, **c))
    return cases


def failure_cases():
    cases = []
    for name, (rtol, atol) in (("blowup_loose", LOOSE), ("blowup_medium", MEDIUM)):
        c = run(blowup, 0.0, 2.0, [1.0], rtol, atol, record_steps=False)
        assert c["status"] == -1
        cases.append(dict(name=name, problem="blowup", params={}, **c))
    return cases


def generator_info():
    return dict(
        script="tests/data/scipy_rk45/generate.py",
        python=platform.python_version(),
        numpy=np.__version__,
        scipy=scipy.__version__,
        machine=platform.machine(),
        blas=str(np.show_config(mode="dicts")["Build Dependencies"]["blas"].get("name"))
        if hasattr(np, "show_config")
        else "unknown",
    )


def write(name, cases):
    path = HERE / name
    # One case per line: readable diffs, no indentation overhead.
    dump = lambda x: json.dumps(x, separators=(",", ":"))  # noqa: E731
    lines = ",\n".join(dump(c) for c in cases)
    path.write_text(f'{{"generator":{dump(generator_info())},\n"cases":[\n{lines}\n]}}\n')
    print(f"{path.name}: {len(cases)} cases, {path.stat().st_size / 1024:.1f} KiB")


def main():
    assert sys.float_info.mant_dig == 53
    write("problems.json", problem_cases())
    write("batches.json", batch_cases())
    write("failures.json", failure_cases())


if __name__ == "__main__":
    main()
