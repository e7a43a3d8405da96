"""metrics/inception_score.py: the Inception Score against its formula."""

import numpy as np
import pytest
import torch

from metrics.inception_score import inception_score


def test_is_uniform_predictions_is_one():
    mean, std = inception_score(torch.zeros(100, 1008))
    assert mean == pytest.approx(1.0)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_is_confident_and_diverse_equals_number_of_classes():
    # Each split holds 10 images, one per class, each classified with certainty -> IS = 10 exactly.
    logits = torch.full([100, 1008], -1e4)
    logits[torch.arange(100), torch.arange(100) % 10] = 0
    mean, std = inception_score(logits, num_splits=10)
    assert mean == pytest.approx(10.0, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_is_matches_direct_formula():
    logits = torch.randn(40, 12, generator=torch.Generator().manual_seed(0)) * 3
    p = torch.softmax(logits.double(), 1).numpy()
    scores = []
    for part in np.array_split(p, 4):
        py = part.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), axis=1))))
    mean, std = inception_score(logits, num_splits=4)
    assert mean == pytest.approx(np.mean(scores), rel=1e-10)
    assert std == pytest.approx(np.std(scores), rel=1e-8)
    with pytest.raises(ValueError, match="at least 10"):
        inception_score(logits[:5])
