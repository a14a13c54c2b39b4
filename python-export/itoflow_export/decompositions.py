"""Aten-level decompositions used while tracing derivative graphs.

They serve two purposes:

* ops whose backward has no ONNX translation (``convolution_backward``,
  ``avg_pool2d_backward``) are rewritten into forward ops (a transposed convolution is the
  input-gradient of a convolution, and vice versa);
* accumulating index writes (``index_put(accumulate=True)``, the backward of gathers such as
  nearest/bilinear upsampling) would become ONNX ``ScatterND(reduction='add')``, which ONNX
  Runtime 1.31 evaluated wrongly, intermittently, at 2 intra-op threads. They are rewritten as
  one-hot matrix products, which are deterministic; ``slice_backward`` becomes a zero ``Pad``.
"""

from __future__ import annotations

import torch

aten = torch.ops.aten


class UnsupportedOpError(RuntimeError):
    """An op in the traced graph cannot be exported without a reducing scatter."""


def _conv_output_padding(in_sizes, out_sizes, weight_sizes, stride, padding, dilation):
    op = []
    for i, (n_in, n_out, k) in enumerate(zip(in_sizes, out_sizes, weight_sizes)):
        full = (n_out - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k - 1) + 1
        op.append(n_in - full)
    return op


def convolution_backward(grad_out, inp, weight, bias_sizes, stride, padding, dilation,
                         transposed, output_padding, groups, output_mask):
    if output_mask[1]:
        raise UnsupportedOpError(
            "convolution_backward was asked for a weight gradient while tracing a derivative "
            "graph; parameters must not require grad (the exporter freezes them, so a module "
            "that creates trainable tensors inside forward() is the likely cause)")
    nd = inp.dim() - 2
    stride, padding, dilation = list(stride), list(padding), list(dilation)
    if len(stride) == 1:
        stride = stride * nd
    if len(padding) == 1:
        padding = padding * nd
    if len(dilation) == 1:
        dilation = dilation * nd
    grad_in = grad_bias = None
    if output_mask[0]:
        if not transposed:
            op = _conv_output_padding(inp.shape[2:], grad_out.shape[2:], weight.shape[2:],
                                      stride, padding, dilation)
            grad_in = aten.convolution.default(grad_out, weight, None, stride, padding, dilation,
                                               True, op, groups)
        else:
            grad_in = aten.convolution.default(grad_out, weight, None, stride, padding, dilation,
                                               False, [0] * nd, groups)
    if output_mask[2]:
        grad_bias = grad_out.sum([0] + list(range(2, grad_out.dim())))
    return grad_in, None, grad_bias


def avg_pool2d_backward(grad, inp, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override):
    def pair(v, default):
        v = list(v) if v is not None and len(v) else list(default)
        return v * 2 if len(v) == 1 else v

    kernel = pair(kernel_size, kernel_size)
    stride = pair(stride, kernel)
    padding = pair(padding, [0])
    if ceil_mode:
        raise UnsupportedOpError(
            "avg_pool2d(ceil_mode=True) has no scatter-free derivative here; use ceil_mode=False "
            "(or pad the input explicitly)")
    squeeze = inp.dim() == 3
    g = grad.unsqueeze(0) if squeeze else grad
    c = inp.shape[-3]
    ones = torch.ones(c, 1, kernel[0], kernel[1], dtype=grad.dtype)
    if divisor_override:
        g = g / divisor_override
    elif count_include_pad or padding == [0, 0]:
        g = g / (kernel[0] * kernel[1])
    else:
        cnt = aten.convolution.default(torch.ones(1, 1, *inp.shape[-2:], dtype=grad.dtype),
                                       ones[:1], None, stride, padding, [1, 1], False, [0, 0], 1)
        g = g / cnt
    op = _conv_output_padding(inp.shape[-2:], grad.shape[-2:], kernel, stride, padding, [1, 1])
    gi = aten.convolution.default(g, ones, None, stride, padding, [1, 1], True, op, c)
    return gi.squeeze(0) if squeeze else gi


def slice_backward(grad, input_sizes, dim, start, end, step):
    n = len(input_sizes)
    dim = dim % n
    size = input_sizes[dim]
    if step != 1:
        return NotImplemented
    start = 0 if start is None else start
    end = size if end is None else end
    start = start + size if start < 0 else start
    end = end + size if end < 0 else end
    start = max(0, min(start, size))
    end = max(start, min(end, size))
    pad = []
    for d in reversed(range(n)):
        pad += [start, size - end] if d == dim else [0, 0]
    return aten.constant_pad_nd.default(grad, pad, 0.0)


def _one_hot(index: torch.Tensor, size: int, dtype) -> torch.Tensor:
    """[K, size] matrix with a 1 at (k, index[k]); negative indices wrap like torch indexing."""
    ix = index.reshape(-1)
    ix = torch.where(ix < 0, ix + size, ix)
    return (ix.unsqueeze(1) == torch.arange(size, device=ix.device).unsqueeze(0)).to(dtype)


def index_put_accumulate(self, indices, values, accumulate=False):
    """``self.index_put_(indices, values, accumulate=True)`` without a scatter.

    Separable (outer-product) indexing, which is what upsampling backward produces, costs one
    small matmul per indexed dimension; general indexing uses one one-hot matrix over the
    flattened indexed dimensions.
    """
    if not accumulate:
        return NotImplemented
    dims = [i for i, ix in enumerate(indices) if ix is not None]
    if not dims:
        return self + values
    idx = [indices[i] for i in dims]
    if any(ix.dtype == torch.bool for ix in idx):
        raise UnsupportedOpError("boolean-mask index_put(accumulate=True) is not supported")
    bshape = list(torch.broadcast_shapes(*[ix.shape for ix in idx]))
    r, m = len(bshape), len(dims)
    adjacent = dims == list(range(dims[0], dims[0] + m))
    rest = [i for i in range(self.dim()) if i not in dims]
    if adjacent:
        vshape = list(self.shape[:dims[0]]) + bshape + list(self.shape[dims[-1] + 1:])
    else:
        vshape = bshape + [self.shape[i] for i in rest]
    t = values.expand(vshape)
    if adjacent:
        pre = dims[0]
        t = t.permute(list(range(pre, pre + r)) + list(range(pre)) + list(range(pre + r, t.dim())))
    # t is now [*bshape, *rest]
    owners = []
    for a in range(r):
        own = []
        for k, ix in enumerate(idx):
            off = a - (r - ix.dim())
            if off >= 0 and ix.shape[off] > 1:
                own.append(k)
        owners.append(own)
    separable = (r == m and all(len(o) == 1 for o in owners)
                 and sorted(o[0] for o in owners) == list(range(m)))
    if separable:
        order = []
        for a in range(r):
            k = owners[a][0]
            d = dims[k]
            size = self.shape[d]
            oh = _one_hot(idx[k], size, values.dtype)  # [B_a, size]
            sh = list(t.shape)
            t = (oh.t() @ t.reshape(sh[0], -1)).reshape([size] + sh[1:]).movedim(0, -1)
            order.append(d)
        cur = rest + order
    else:
        lin = None
        for k, d in enumerate(dims):
            stride = 1
            for d2 in dims[k + 1:]:
                stride *= self.shape[d2]
            ix = idx[k]
            ix = torch.where(ix < 0, ix + self.shape[d], ix)
            term = ix.expand(bshape) * stride
            lin = term if lin is None else lin + term
        total = 1
        for d in dims:
            total *= self.shape[d]
        oh = _one_hot(lin, total, values.dtype)  # [K, total]
        sh = list(t.shape)
        t = (oh.t() @ t.reshape(oh.shape[0], -1)).reshape([total] + sh[r:]).movedim(0, -1)
        t = t.reshape(sh[r:] + [self.shape[d] for d in dims])
        cur = rest + dims
    inv = [cur.index(i) for i in range(self.dim())]
    return self + t.permute(inv)


def index_add(self, dim, index, source, alpha=1):
    dim = dim % max(self.dim(), 1)
    oh = _one_hot(index, self.shape[dim], source.dtype)  # [K, P]
    src = source.movedim(dim, -1)
    contrib = (src @ oh).movedim(-1, dim)
    return self + alpha * contrib


def scatter_add(self, dim, index, src):
    dim = dim % max(self.dim(), 1)
    size = self.shape[dim]
    src = src[tuple(slice(0, s) for s in index.shape)]
    # one-hot along `dim`: [..., K, ...] x P -> sum over K
    hot = (index.unsqueeze(-1) == torch.arange(size)).to(src.dtype)  # [*index.shape, P]
    contrib = (src.unsqueeze(-1) * hot).sum(dim)  # [..., (dim removed) ..., P]
    contrib = contrib.movedim(-1, dim)
    pad = []
    for d in reversed(range(self.dim())):
        pad += [0, 0] if d == dim else [0, self.shape[d] - contrib.shape[d]]
    if any(pad):
        contrib = aten.constant_pad_nd.default(contrib, pad, 0.0)
    return self + contrib


DERIVATIVE_DECOMPOSITIONS = {
    aten.convolution_backward.default: convolution_backward,
    aten.avg_pool2d_backward.default: avg_pool2d_backward,
    aten.slice_backward.default: slice_backward,
    aten._unsafe_index_put.default: index_put_accumulate,
    aten.index_put.default: index_put_accumulate,
    aten.index_add.default: index_add,
    aten.scatter_add.default: scatter_add,
}
