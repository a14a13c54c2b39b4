"""A "foreign" score network exported with a plain `torch.onnx.export`, as a user would have it:
tensors named its own way and no itoflow metadata at all. tests/foreign.rs runs it through the
CLI with everything supplied by `--set`.

Run with the project venv:  .venv/bin/python crates/itoflow-cli/tests/data/make_foreign_model.py

The network is a small ε-prediction MLP on 2-D data, eps(x, t) = W2 tanh(W1 x + b1 + t c) + b2
(fixed seed). Written twice, with the same weights:

* foreign.onnx (inputs `sample`, `timestep`; output `eps`) and its derivative graph
  model_vjp.onnx (inputs `sample`, `timestep`, `direction`; outputs `eps`, `grad_vjp` = vᵀJ,
  `grad_jvp` = J v, J = ∂eps/∂x) -- a name itoflow would not look for by itself;
* standard.onnx / standard.vjp.onnx with the contract's names (x, time, v; output, vjp, jvp),
  also without metadata.

The products are written out by hand (tanh' = 1 − tanh²), so that the export is the plain
torch.onnx.export of ordinary modules; check() compares them with torch.func.vjp/jvp.
"""

import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
HIDDEN = 16


class Eps(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(12)
        self.w1 = torch.nn.Parameter(torch.randn(HIDDEN, 2, generator=g) * 0.8)
        self.b1 = torch.nn.Parameter(torch.randn(HIDDEN, generator=g) * 0.3)
        self.c = torch.nn.Parameter(torch.randn(HIDDEN, generator=g))
        self.w2 = torch.nn.Parameter(torch.randn(2, HIDDEN, generator=g) * 0.4)
        self.b2 = torch.nn.Parameter(torch.randn(2, generator=g) * 0.1)

    def hidden(self, x, t):
        return torch.tanh(x @ self.w1.T + self.b1 + t[:, None] * self.c)

    def forward(self, x, t):
        return self.hidden(x, t) @ self.w2.T + self.b2


class Derivative(torch.nn.Module):
    """(x, t, v) -> (eps, vᵀJ, J v)."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def forward(self, x, t, v):
        e = self.eps
        h = e.hidden(x, t)
        d = 1.0 - h * h
        out = h @ e.w2.T + e.b2
        vjp = ((v @ e.w2) * d) @ e.w1
        jvp = ((v @ e.w1.T) * d) @ e.w2.T
        return out, vjp, jvp


def check(eps, deriv):
    g = torch.Generator().manual_seed(3)
    x, v = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    t = torch.rand(5, generator=g)
    out, vjp, jvp = deriv(x, t, v)
    f = lambda y: eps(y, t)
    ref_out, pull = torch.func.vjp(f, x)
    (ref_vjp,) = pull(v)
    _, ref_jvp = torch.func.jvp(f, (x,), (v,))
    for a, b in [(out, ref_out), (vjp, ref_vjp), (jvp, ref_jvp)]:
        assert torch.allclose(a, b, atol=1e-6), (a, b)


def export(module, args, path, inputs, outputs):
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        module,
        args,
        path,
        input_names=inputs,
        output_names=outputs,
        dynamic_shapes=tuple({0: batch} for _ in args),
        external_data=False,
    )


if __name__ == "__main__":
    eps = Eps().eval()
    deriv = Derivative(eps).eval()
    with torch.no_grad():
        check(eps, deriv)
        x, t, v = torch.zeros(3, 2), torch.full((3,), 0.5), torch.ones(3, 2)
        p = lambda name: os.path.join(HERE, name)
        export(eps, (x, t), p("foreign.onnx"), ["sample", "timestep"], ["eps"])
        export(
            deriv,
            (x, t, v),
            p("model_vjp.onnx"),
            ["sample", "timestep", "direction"],
            ["eps", "grad_vjp", "grad_jvp"],
        )
        export(eps, (x, t), p("standard.onnx"), ["x", "time"], ["output"])
        export(deriv, (x, t, v), p("standard.vjp.onnx"), ["x", "time", "v"], ["output", "vjp", "jvp"])
    print("wrote foreign.onnx, model_vjp.onnx, standard.onnx, standard.vjp.onnx in", HERE)
