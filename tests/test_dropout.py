"""FastDropout (train.fast_dropout) against torch's dropout: the same distribution, the same gradients given the
mask, the same module everywhere else."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmtune.train.dropout import FastDropout, kept_fraction, use_fast_dropout


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_masks_drop_each_element_independently_with_probability_p(p):
    torch.manual_seed(0)
    x = torch.ones(1_000, 1_001)  # an odd count: the last 64-bit draw is cut
    out = FastDropout(p).train()(x)
    dropped = out == 0
    sd = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(dropped.float().mean().item() - p) < 5 * sd
    assert torch.allclose(out[~dropped], torch.full_like(out[~dropped], 1 / (1 - p)), rtol=1e-4)
    # each of the four 16-bit lanes of a draw, and pairs of neighbours, behave like torch's independent draws
    flat = dropped.flatten()[: 4 * (x.numel() // 4)].view(-1, 4).float()
    for lane in range(4):
        assert abs(flat[:, lane].mean().item() - p) < 5 * (p * (1 - p) / flat.shape[0]) ** 0.5
    both = (dropped.flatten()[1:] & dropped.flatten()[:-1]).float().mean().item()
    assert abs(both - p * p) < 5 * (p * p * (1 - p * p) / x.numel()) ** 0.5
    reference = nn.functional.dropout(x, p, training=True)
    assert abs((reference == 0).float().mean().item() - dropped.float().mean().item()) < 10 * sd
    assert out.mean().item() == pytest.approx(1.0, abs=10 * sd)  # unbiased, as inverted dropout is


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    weights = torch.randn(64, 33)
    out = FastDropout(0.1).train()(x)
    (out * weights).sum().backward()
    keep = out.detach() != 0
    assert torch.allclose(x.grad, weights * keep / kept_fraction(0.1))  # what autograd gives x * keep / (1 - p)
    assert torch.allclose(out, x.detach() * keep / kept_fraction(0.1))


def test_eval_mode_and_the_edges_are_torchs():
    x = torch.randn(8, 8)
    assert torch.equal(FastDropout(0.3).eval()(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))
    assert kept_fraction(0.1) == pytest.approx(0.9, abs=1e-5)


def test_only_plain_dropouts_with_p_above_zero_are_swapped():
    class Custom(nn.Dropout):
        pass

    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.Dropout(0.0), Custom(0.2), nn.ModuleDict({"a": nn.Dropout(0.3)}))
    assert use_fast_dropout(model) == 2
    assert use_fast_dropout(model) == 2  # a second call changes nothing
    assert [type(m).__name__ for m in model.modules() if isinstance(m, nn.Dropout)] == [
        "FastDropout", "Dropout", "Custom", "FastDropout"]
    assert model[1].p == 0.1 and isinstance(model[1], nn.Dropout)
