"""The torch models' shared parts: the full-softmax loss, dropout, the item table."""

from __future__ import annotations

import pytest
import torch

from recsys_core.models.networks import ItemRepresentation, dropout, softmax_cross_entropy


@pytest.mark.parametrize("with_bias", [True, False])
def test_the_fused_softmax_loss_equals_cross_entropy_in_value_and_gradients(with_bias):
    torch.manual_seed(0)
    # large logits, which overflow an unshifted exponential, and a target repeated across rows
    hidden = (torch.randn(40, 6, dtype=torch.float64) * 300).requires_grad_()
    table = torch.randn(25, 6, dtype=torch.float64).requires_grad_()
    bias = torch.randn(25, dtype=torch.float64).requires_grad_() if with_bias else None
    targets = torch.randint(0, 25, (40,))
    targets[:5] = 3
    leaves = [hidden, table] + ([bias] if with_bias else [])

    expected = torch.nn.functional.cross_entropy(
        hidden @ table.T + (bias if with_bias else 0), targets
    )
    want = torch.autograd.grad(expected * 2.5, leaves)
    got_loss = softmax_cross_entropy(hidden, table, targets, bias)
    got = torch.autograd.grad(got_loss * 2.5, leaves)

    assert torch.isfinite(got_loss)
    assert torch.allclose(got_loss, expected, rtol=1e-12, atol=1e-12)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12)


def test_the_fused_softmax_loss_refuses_a_second_backward():
    hidden = torch.randn(4, 3, requires_grad=True)
    loss = softmax_cross_entropy(hidden, torch.randn(5, 3), torch.tensor([0, 1, 2, 3]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        loss.backward()


def test_dropout_hides_its_share_and_scales_the_rest_only_while_training():
    torch.manual_seed(0)
    x = torch.rand(400, 500) + 0.5  # no zeros of its own
    out = dropout(x, 0.2, training=True)
    hidden = out == 0
    assert abs(hidden.float().mean().item() - 0.2) < 0.01
    assert torch.allclose(out[~hidden], x[~hidden] * 1.25)
    assert dropout(x, 0.2, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    assert torch.equal(dropout(x, 1.0, training=True), torch.nn.functional.dropout(x, 1.0))


def test_the_item_table_is_every_items_forward():
    torch.manual_seed(0)
    text = torch.randn(7, 5)
    items = ItemRepresentation(7, 4, text)
    with torch.no_grad():
        items.known[2] = 0.0  # an item without training events keeps only its text
    items.eval()
    every = items(torch.arange(7))
    assert torch.allclose(items.table(), every)
    assert torch.allclose(items.table()[2], items.project(text[2]))
