"""The torch-cuda-sparse engine's layer rewrite, checked on the CPU with dense matrices
(the sparse kernels themselves need a GPU: tests/test_engines.py runs them where there is one)."""

import pytest
import torch
from torch import nn

from sparsebias.engines.semistructured import Conv2dAsMatmul, conv_matrix, is_2_4, sparsify_2_4
from sparsebias.pruning import nm_masks


def test_is_2_4_reads_groups_of_four_along_rows():
    assert is_2_4(torch.tensor([[1., 0., 2., 0., 0., 0., 0., 3.]]))
    assert not is_2_4(torch.tensor([[1., 1., 2., 0., 0., 0., 0., 3.]]))
    assert not is_2_4(torch.tensor([[1., 0., 0.]]))


@pytest.mark.parametrize("stride,padding,dilation,bias", [(1, 1, 1, False), (2, 1, 1, True), (2, 0, 1, False),
                                                          (1, 2, 2, True)])
def test_a_convolution_as_a_matrix_product_gives_the_convolution(stride, padding, dilation, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=stride, padding=padding, dilation=dilation, bias=bias).double()
    x = torch.randn(3, 8, 11, 9, dtype=torch.double)
    rewritten = Conv2dAsMatmul(conv, conv_matrix(conv.weight.detach()))
    torch.testing.assert_close(rewritten(x), conv(x))


def test_n_m_masks_of_a_convolution_are_2_4_in_its_matrix_layout():
    torch.manual_seed(0)
    weight = torch.randn(16, 8, 3, 3)
    pruned = weight * nm_masks(weight, 2, 4)
    assert is_2_4(conv_matrix(pruned)) and not is_2_4(conv_matrix(weight))
    assert not is_2_4(pruned.reshape(16, -1))   # the plain (out, in*kh*kw) layout would not be


def test_only_2_4_layers_are_replaced_and_the_model_computes_the_same():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.Flatten(),
                          nn.Linear(16 * 25, 8)).double()
    with torch.no_grad():
        model[0].weight.mul_(nm_masks(model[0].weight, 2, 4))
        model[4].weight.mul_(nm_masks(model[4].weight, 2, 4))
    x = torch.randn(2, 8, 5, 5, dtype=torch.double)
    expected = model(x)
    seen = []
    replaced, weights = sparsify_2_4(model, convert=lambda m: seen.append(m.shape) or m.clone())
    assert replaced == 2 and weights == 16 * 8 * 9 + 8 * 16 * 25
    assert isinstance(model[0], Conv2dAsMatmul) and isinstance(model[2], nn.Conv2d)   # the 1x1 conv is dense
    assert seen == [torch.Size([16, 72]), torch.Size([8, 400])]
    torch.testing.assert_close(model(x), expected)
