"""Reference values for the one-step tests in tests/sde_steppers.rs.

Each stepper's update formula (as documented in crates/itoflow-sde/src/sde/) is evaluated once,
with fixed Brownian increments and fixed extra normals, in 50-digit decimal arithmetic (Python
standard library only). Run:  python3 tests/data/one_step_reference.py
and paste the printed values into the tests (the output is kept in one_step_reference.out).
They are written there rounded to 17 significant digits, so the f64 implementation must agree
to a few units in the last place.
"""
from decimal import Decimal as D, getcontext

getcontext().prec = 50
half = D(1) / 2


def sqrt(x):
    return x.sqrt()


def sign(z):
    return D(1) if z >= 0 else D(-1)


def show(name, values):
    print(f"{name}: [" + ", ".join(f"{v:.17e}" for v in values) + "]")


# ---------------------------------------------------------------------------------------------
# Case A: diagonal noise, dim 1, linear in x with explicit t.
#   f(t, x) = 0.5 x + t,  g(t, x) = 0.3 x + 0.1 t,  (dg/dx) g = 0.3 g
#   x = 1.2, t = 0.25, dt = 0.1, dW = 0.2, extra normal z = -0.7 (S = -1)
# ---------------------------------------------------------------------------------------------
fA = lambda t, x: D("0.5") * x + t
gA = lambda t, x: D("0.3") * x + D("0.1") * t
dggA = lambda t, x: D("0.3") * gA(t, x)
x, t, dt, dw, z = D("1.2"), D("0.25"), D("0.1"), D("0.2"), D("-0.7")
h = abs(dt)
sq = sqrt(h)

em = x + fA(t, x) * dt + gA(t, x) * dw
show("A euler_maruyama", [em])

mil = em + half * dggA(t, x) * (dw * dw - h)
show("A milstein_analytic", [mil])

xbar = x + fA(t, x) * dt + gA(t, x) * sq
mil_df = em + (gA(t, xbar) - gA(t, x)) * (dw * dw - h) / (2 * sq)
show("A milstein_derivative_free", [mil_df])


def heun(f, g, t, x, dt, dw, s):
    k1 = dt * f(t, x) + (dw - s * sq) * g(t, x)
    k2 = dt * f(t + dt, x + k1) + (dw + s * sq) * g(t + dt, x + k1)
    return x + half * (k1 + k2)


show("A roberts_heun", [heun(fA, gA, t, x, dt, dw, sign(z))])
show("A stratonovich_heun", [heun(fA, gA, t, x, dt, dw, D(0))])


def pc(f, g, dgg, theta, eta, t, x, dt, dw):
    a = lambda t, x: f(t, x) - eta * dgg(t, x)
    xp = x + f(t, x) * dt + g(t, x) * dw
    return (x + (theta * a(t + dt, xp) + (1 - theta) * a(t, x)) * dt
            + (eta * g(t + dt, xp) + (1 - eta) * g(t, x)) * dw)


show("A pc_euler(0.7, 0.4)", [pc(fA, gA, dggA, D("0.7"), D("0.4"), t, x, dt, dw)])

# ---------------------------------------------------------------------------------------------
# Case B: diagonal noise, dim 1, cubic diffusion (finite differences are not exact).
#   f(t, x) = -x,  g(t, x) = 0.2 x^3,  (dg/dx) g = 0.6 x^2 g
#   x = 0.9, t = 0, dt = 0.05, dW = -0.15
# ---------------------------------------------------------------------------------------------
fB = lambda t, x: -x
gB = lambda t, x: D("0.2") * x ** 3
dggB = lambda t, x: D("0.6") * x * x * gB(t, x)
x, t, dt, dw = D("0.9"), D(0), D("0.05"), D("-0.15")
h = abs(dt)
sq = sqrt(h)
em = x + fB(t, x) * dt + gB(t, x) * dw
xbar = x + fB(t, x) * dt + gB(t, x) * sq
show("B milstein_analytic", [em + half * dggB(t, x) * (dw * dw - h)])
show("B milstein_derivative_free", [em + (gB(t, xbar) - gB(t, x)) * (dw * dw - h) / (2 * sq)])


def central(g, t, x):
    u = g(t, x) * sq
    return (g(t, x + u) - g(t, x - u)) / (2 * sq)


show("B pc_euler(0.5, 1.0) analytic", [pc(fB, gB, dggB, half, D(1), t, x, dt, dw)])
show("B pc_euler(0.5, 1.0) derivative-free",
     [pc(fB, gB, lambda t, x: central(gB, t, x), half, D(1), t, x, dt, dw)])

# ---------------------------------------------------------------------------------------------
# Case C: scalar noise, dim 2.
#   f(t, x) = (x1, -x0),  g(t, x) = (0.2 x0, 0.1 x1 + 0.05 x0)
#   (dg/dx) g = (0.2 g0, 0.1 g1 + 0.05 g0)
#   x = (1.0, -0.5), t = 0.0, dt = 0.02, dW = 0.1, z = 0.3 (S = +1)
# ---------------------------------------------------------------------------------------------
def fC(t, x):
    return [x[1], -x[0]]


def gC(t, x):
    return [D("0.2") * x[0], D("0.1") * x[1] + D("0.05") * x[0]]


def dggC(t, x):
    g = gC(t, x)
    return [D("0.2") * g[0], D("0.1") * g[1] + D("0.05") * g[0]]


x, t, dt, dw, z = [D(1), D("-0.5")], D(0), D("0.02"), D("0.1"), D("0.3")
h = abs(dt)
sq = sqrt(h)
f0, g0, d0 = fC(t, x), gC(t, x), dggC(t, x)
em = [x[i] + f0[i] * dt + g0[i] * dw for i in range(2)]
show("C milstein_analytic", [em[i] + half * d0[i] * (dw * dw - h) for i in range(2)])
xbar = [x[i] + f0[i] * dt + g0[i] * sq for i in range(2)]
gbar = gC(t, xbar)
show("C milstein_derivative_free",
     [em[i] + (gbar[i] - g0[i]) * (dw * dw - h) / (2 * sq) for i in range(2)])
s = sign(z)
k1 = [dt * f0[i] + (dw - s * sq) * g0[i] for i in range(2)]
x1 = [x[i] + k1[i] for i in range(2)]
f1, g1 = fC(t + dt, x1), gC(t + dt, x1)
k2 = [dt * f1[i] + (dw + s * sq) * g1[i] for i in range(2)]
show("C roberts_heun", [x[i] + half * (k1[i] + k2[i]) for i in range(2)])

# ---------------------------------------------------------------------------------------------
# Case D: general noise, dim 2, m = 2.
#   f(t, x) = (x0 x1, -x0),  G(t, x) = [[0.1 x0, 0.2], [0.3 x1, 0.05 x0 x1]]
#   x = (0.8, 1.1), t = 0.5, dt = 0.05, dW = (0.1, -0.2), z = (0.5, -1.3) (S = (+1, -1))
# ---------------------------------------------------------------------------------------------
def fD(t, x):
    return [x[0] * x[1], -x[0]]


def GD(t, x):
    return [[D("0.1") * x[0], D("0.2")], [D("0.3") * x[1], D("0.05") * x[0] * x[1]]]


x, t, dt = [D("0.8"), D("1.1")], D("0.5"), D("0.05")
dw, z = [D("0.1"), D("-0.2")], [D("0.5"), D("-1.3")]
h = abs(dt)
sq = sqrt(h)


def gdw(G, w):
    return [sum(G[i][j] * w[j] for j in range(2)) for i in range(2)]


def heun_general(S):
    w1 = [dw[j] - S[j] * sq for j in range(2)]
    w2 = [dw[j] + S[j] * sq for j in range(2)]
    f0, G0 = fD(t, x), GD(t, x)
    k1 = [dt * f0[i] + gdw(G0, w1)[i] for i in range(2)]
    x1 = [x[i] + k1[i] for i in range(2)]
    f1, G1 = fD(t + dt, x1), GD(t + dt, x1)
    k2 = [dt * f1[i] + gdw(G1, w2)[i] for i in range(2)]
    return [x[i] + half * (k1[i] + k2[i]) for i in range(2)]


show("D roberts_heun", heun_general([sign(v) for v in z]))
show("D stratonovich_heun", heun_general([D(0), D(0)]))
f0, G0 = fD(t, x), GD(t, x)
em = [x[i] + f0[i] * dt + gdw(G0, dw)[i] for i in range(2)]
show("D euler_maruyama", em)
theta = D("0.25")
f1 = fD(t + dt, em)
show("D pc_euler(0.25, 0)",
     [x[i] + (theta * f1[i] + (1 - theta) * f0[i]) * dt + gdw(G0, dw)[i] for i in range(2)])

# ---------------------------------------------------------------------------------------------
# Langevin corrector: target N(mu, sigma^2 I) in dim 3, score s(x) = -(x - mu) / sigma^2,
# snr = 0.16, alpha(t) = 0.9, two steps, rows: x = (0.3, -1.2, 2.0) and x = mu (zero score).
#   eps = 2 alpha (snr |z| / |s|)^2,  x <- x + eps s + sqrt(2 eps) z
# ---------------------------------------------------------------------------------------------
mu = [D("0.5"), D("-1.0"), D("1.5")]
var = D("0.64")
snr, alpha = D("0.16"), D("0.9")
zs = [[D("0.3"), D("-1.1"), D("0.7")], [D("-0.4"), D("0.2"), D("1.9")]]


def langevin(x, steps):
    x = list(x)
    for z in steps:
        s = [-(x[i] - mu[i]) / var for i in range(3)]
        s2 = sum(v * v for v in s)
        if s2 == 0:
            continue
        z2 = sum(v * v for v in z)
        eps = 2 * alpha * snr * snr * z2 / s2
        r = sqrt(2 * eps)
        x = [x[i] + eps * s[i] + r * z[i] for i in range(3)]
    return x


show("L langevin row 0", langevin([D("0.3"), D("-1.2"), D("2.0")], zs))
show("L langevin row 1 (zero score)", langevin(mu, zs))
