"""EASE's solve: a float32 Cholesky inverse in place, float64 where float32 would not hold."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys_core.models.ease import co_occurrence, ease_weights, spd_inverse


def _reference(gram: torch.Tensor) -> torch.Tensor:
    precision = torch.linalg.inv(gram.double())
    weights = -precision / precision.diagonal().unsqueeze(0)
    weights.diagonal().zero_()
    return weights


def _relative_error(weights: torch.Tensor, reference: torch.Tensor) -> float:
    return float((weights.double() - reference).abs().max() / reference.abs().max())


def test_ease_weights_match_a_float64_inverse_on_counts():
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((600, 150)) < 0.1).astype(np.float32))
    gram = co_occurrence(x)
    torch.testing.assert_close(gram, torch.from_numpy((x.T @ x).toarray()), rtol=0, atol=0)
    gram.diagonal().add_(20.0)
    weights = ease_weights(lambda dtype: gram.clone().to(dtype))
    assert weights.dtype == torch.float32 and bool((weights.diagonal() == 0).all())
    assert _relative_error(weights, _reference(gram)) < 1e-5


def test_an_ill_conditioned_gram_matrix_is_solved_in_float64():
    torch.manual_seed(0)
    a = torch.randn(300, 150)
    gram = a @ a.T  # rank 150 of 300: conditioned by the small penalty only
    gram.diagonal().add_(1e-3)
    assert spd_inverse(gram.clone()) is None  # float32 refuses it
    weights = ease_weights(lambda dtype: gram.clone().to(dtype))
    assert _relative_error(weights, _reference(gram)) < 1e-6


def test_the_inverse_is_symmetric_and_written_in_place():
    torch.manual_seed(1)
    a = torch.randn(50, 80)
    matrix = a @ a.T + 10 * torch.eye(50)
    work = matrix.clone()
    inverse = spd_inverse(work)
    assert inverse is work
    torch.testing.assert_close(inverse, inverse.T, rtol=0, atol=0)
    torch.testing.assert_close(inverse @ matrix, torch.eye(50), rtol=0, atol=1e-4)
