"""torch_utils.training_stats: reporting and per-interval collection (single process)."""

import math

import numpy as np
import pytest
import torch

from torch_utils import training_stats


@pytest.fixture
def fresh_stats():
    training_stats.reset()
    yield
    training_stats.reset()


def test_collector_mean_std_num_per_interval(fresh_stats):
    collector = training_stats.Collector(regex="Loss/.*")
    training_stats.report("Loss/a", torch.tensor([1.0, 2.0, 3.0]))
    training_stats.report("Loss/a", 4.0)
    training_stats.report("Other/b", 100.0)  # filtered out by the regex
    collector.update()
    assert collector.num("Loss/a") == 4
    assert collector.mean("Loss/a") == pytest.approx(2.5)
    assert collector.std("Loss/a") == pytest.approx(np.std([1, 2, 3, 4]))
    assert "Other/b" not in collector.as_dict()
    # The next interval only sees new reports; keep_previous keeps stale names visible.
    training_stats.report("Loss/c", torch.tensor([10.0, 20.0]))
    collector.update()
    assert collector.mean("Loss/c") == pytest.approx(15.0)
    assert collector.mean("Loss/a") == pytest.approx(2.5)
    nokeep = training_stats.Collector(regex="Loss/.*", keep_previous=False)
    training_stats.report("Loss/c", 1.0)
    nokeep.update()
    assert nokeep.num("Loss/c") == 1 and math.isnan(nokeep.mean("Loss/a"))


def test_report_returns_value_and_counts_nan(fresh_stats):
    collector = training_stats.Collector()
    x = torch.tensor([1.0, float("nan")], requires_grad=True)
    assert training_stats.report("Loss/x", x) is x
    training_stats.report0("Progress/tick", 7)
    collector.update()
    assert collector.num("Loss/x") == 2 and math.isnan(collector.mean("Loss/x"))
    assert collector["Progress/tick"] == 7
