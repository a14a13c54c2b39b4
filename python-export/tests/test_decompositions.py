"""The scatter-free decompositions agree with the ops they replace (eager, exact up to rounding)."""

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from itoflow_export import checks
from itoflow_export.checks import ContractError
from itoflow_export.decompositions import (avg_pool2d_backward, convolution_backward,
                                           index_add, index_put_accumulate, scatter_add,
                                           slice_backward)

aten = torch.ops.aten


def test_index_put_accumulate_separable_like_upsampling():
    torch.manual_seed(0)
    base = torch.randn(2, 3, 4, 5)
    ih = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])[:, None]
    iw = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    vals = torch.randn(2, 3, 8, 10)
    want = aten.index_put(base, [None, None, ih, iw], vals, True)
    got = index_put_accumulate(base, [None, None, ih, iw], vals, True)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("indices_fn", [
    lambda: [torch.tensor([0, 2, 2, -1])],                                       # repeated, negative
    lambda: [None, torch.tensor([[1, 1], [0, 3]]), torch.tensor([[2, 2], [0, 1]])],  # general 2-D
    lambda: [torch.tensor([1, 1, 0]), None, torch.tensor([0, 0, 2])],              # non-adjacent
])
def test_index_put_accumulate_general(indices_fn):
    torch.manual_seed(1)
    base = torch.randn(4, 4, 3)
    idx = indices_fn()
    probe = base.clone()[tuple(slice(None) if i is None else i for i in idx)]
    vals = torch.randn(probe.shape)
    want = aten.index_put(base, idx, vals, True)
    got = index_put_accumulate(base, idx, vals, True)
    torch.testing.assert_close(got, want)


def test_index_put_without_accumulate_is_left_alone():
    assert index_put_accumulate(torch.zeros(3), [torch.tensor([0])], torch.ones(1), False) is NotImplemented


def test_index_add_and_scatter_add():
    torch.manual_seed(2)
    base = torch.randn(5, 3)
    idx = torch.tensor([0, 4, 4, 1])
    src = torch.randn(4, 3)
    torch.testing.assert_close(index_add(base, 0, idx, src, 2.0), base.index_add(0, idx, src, alpha=2.0))
    sidx = torch.tensor([[0, 1, 2], [0, 0, 0], [4, 4, 1]])
    ssrc = torch.randn(3, 3)
    torch.testing.assert_close(scatter_add(base, 0, sidx, ssrc), base.scatter_add(0, sidx, ssrc))


@pytest.mark.parametrize("stride, padding, transposed", [(1, 1, False), (2, 1, False), (2, 0, True)])
def test_convolution_backward_input_grad(stride, padding, transposed):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    w = torch.randn(3, 4, 3, 3) if transposed else torch.randn(4, 3, 3, 3)
    y = aten.convolution(x, w, None, [stride] * 2, [padding] * 2, [1, 1], transposed, [0, 0], 1)
    g = torch.randn_like(y)
    (want,) = torch.autograd.grad(y, x, g)
    got, _, _ = convolution_backward(g, x.detach(), w, None, [stride] * 2, [padding] * 2, [1, 1],
                                     transposed, [0, 0], 1, [True, False, False])
    torch.testing.assert_close(got, want)


def test_convolution_backward_refuses_weight_grad():
    with pytest.raises(RuntimeError, match="weight gradient"):
        convolution_backward(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 1),
                             None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, False])


@pytest.mark.parametrize("k, s, p, cip", [(2, 2, 0, True), (3, 2, 1, True), (3, 2, 1, False), (3, 1, 1, False)])
def test_avg_pool2d_backward(k, s, p, cip):
    torch.manual_seed(4)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    y = torch.nn.functional.avg_pool2d(x, k, s, p, count_include_pad=cip)
    g = torch.randn_like(y)
    (want,) = torch.autograd.grad(y, x, g)
    got = avg_pool2d_backward(g, x.detach(), [k, k], [s, s], [p, p], False, cip, None)
    torch.testing.assert_close(got, want)


def test_slice_backward_is_a_pad():
    g = torch.randn(2, 3, 2)
    want = aten.slice_backward(g, [2, 3, 5], 2, 1, 3, 1)
    torch.testing.assert_close(slice_backward(g, [2, 3, 5], 2, 1, 3, 1), want)
    torch.testing.assert_close(slice_backward(g, [2, 3, 5], -1, -4, -2, 1),
                               aten.slice_backward(g, [2, 3, 5], -1, -4, -2, 1))


def _scatter_model(reduction):
    node = helper.make_node("ScatterND", ["data", "idx", "upd"], ["out"], reduction=reduction)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, [2, 1]),
         helper.make_tensor_value_info("upd", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_reducing_scatter_is_detected():
    bad = _scatter_model("add")
    assert checks.reducing_scatters(bad)
    with pytest.raises(ContractError, match="reducing scatters.*2 intra-op threads"):
        checks.check_no_reducing_scatter(bad, "derivative graph")
    assert checks.reducing_scatters(_scatter_model("none")) == []
