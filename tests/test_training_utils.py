"""Unit tests of the training-loop building blocks (fast, no training): torch_utils.training_stats,
torch_utils.distributed (single process) and the sampler / loss-watch / grid helpers of training.training_loop.
torch_utils.util and training.snapshot have their own files (test_util.py, test_snapshot.py)."""

import math

import numpy as np
import PIL.Image
import pytest
import torch

from torch_utils import distributed as dist
from torch_utils import image_io, training_stats
from training import training_loop as tl

# ---------------------------------------------------------------------------------------------
# training_stats


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


# ---------------------------------------------------------------------------------------------
# distributed helpers (single process)


def test_average_gradients_single_process_scrubs_non_finite_and_fills_missing():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([1.0, float("nan"), float("inf")])
    dist.average_gradients([a, b])
    assert torch.equal(a.grad, torch.tensor([1.0, 0.0, 1e5]))
    assert torch.equal(b.grad, torch.zeros(2))  # missing gradient -> zeros, same layout on every rank


# ---------------------------------------------------------------------------------------------
# training_loop helpers


class _Stream(torch.utils.data.Sampler):
    def __init__(self):
        super().__init__()

    def __iter__(self):
        i = 0
        while True:
            yield 100 + i
            i += 1


def _take(it, n):
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("world,batch_gpu,rounds", [(1, 4, 1), (1, 2, 2), (2, 2, 1), (2, 1, 3), (4, 1, 1)])
def test_chunk_sampler_deals_the_same_chunks_for_any_split(world, batch_gpu, rounds):
    """Chunk j of a step always holds global positions [j*bg, (j+1)*bg) and goes to rank j % world."""
    batch = world * batch_gpu * rounds
    steps, start = 3, 2 * batch
    per_rank = {r: _take(iter(tl.ChunkSampler(_Stream(), r, world, batch_gpu, start=start)), steps * rounds * batch_gpu)
                for r in range(world)}
    for step in range(steps):
        for round_idx in range(rounds):
            for rank in range(world):
                chunk = round_idx * world + rank
                got = per_rank[rank][(step * rounds + round_idx) * batch_gpu:][:batch_gpu]
                first = 100 + start + step * batch + chunk * batch_gpu
                assert got == list(range(first, first + batch_gpu))


def test_loss_watch_names_phase_and_step():
    training_stats.reset()
    watch = tl.LossWatch(["Gboth", "Dboth"], torch.device("cpu"))
    watch.phase_idx = 0
    watch.report("Loss/G/loss", torch.tensor(0.5))
    watch.phase_idx = 1
    watch.report("Loss/D/loss", torch.tensor([1.0, float("inf")]))
    watch.report("Timing/whatever", torch.tensor(float("nan")))  # not a loss: ignored
    watch.check()  # nothing closed yet: a no-op
    watch.end_step(batch_idx=7, cur_nimg=28)
    with pytest.raises(tl.NonFiniteLossError, match=r"step 7 \(kimg 0.028\): 'Loss/D/loss' in phase Dboth;"):
        watch.check()
    watch.phase_idx = 0
    watch.report("Loss/G/loss", torch.tensor(0.5))
    watch.end_step(batch_idx=8, cur_nimg=32)
    assert watch.check() is False  # finite: no error, nobody asked to stop
    watch.end_step(batch_idx=9, cur_nimg=36, stop=True)
    assert watch.check() is True  # a stop request travels with the step's flags
    training_stats.reset()


def test_save_image_grid_layout(tmp_path):
    """The training loop's grids (torch_utils.image_io.save_image_grid): row-major tiles, drange scaling."""
    assert tl.save_image_grid is image_io.save_image_grid
    imgs = np.zeros([6, 3, 2, 2], np.float32) - 1
    for i in range(6):
        imgs[i, 0] = i / 5 * 2 - 1  # red channel encodes the index
    fname = str(tmp_path / "g.png")
    image_io.save_image_grid(imgs, fname, drange=(-1, 1), grid_size=[3, 2])
    out = np.array(PIL.Image.open(fname))
    assert out.shape == (4, 6, 3)
    for i in range(6):
        row, col = divmod(i, 3)
        assert out[row * 2, col * 2, 0] == round(i / 5 * 255) and out[row * 2, col * 2, 1] == 0
    assert tl.default_grid_size(64) == [16, 16] and tl.default_grid_size(256) == [7, 4]
