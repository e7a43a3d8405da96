"""metrics/summary.py: best-<result>.json pointers and metrics.png from metric-*.jsonl lines (no metric is run)."""

import json
import math
import os
import random

import numpy as np
import PIL.Image
import pytest

from metrics import summary
from torch_utils.snapshot_naming import snapshot_name
from training import snapshot  # best pointers are resolved by the snapshot loader


def _line(metric, results, kimg, snap=None, timestamp=0.0):
    if snap is None and kimg is not None:
        snap = snapshot_name(int(round(kimg * 1000)))
    return json.dumps(dict(results=results, metric=metric, total_time=1.0, total_time_str="1s", num_gpus=1,
                           snapshot_pkl=snap, kimg=kimg, timestamp=timestamp))


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


@pytest.mark.parametrize("name,direction", [
    ("fid50k_full", "lower"), ("fid2k", "lower"), ("kid50k_full", "lower"), ("fd_dinov2_50k_full", "lower"),
    ("fd_clip_10k_full", "lower"), ("pr50k3_full_precision", "higher"), ("pr50k3_full_recall", "higher"),
    ("is50k_mean", "higher"), ("is50k_std", "lower"), ("inception_score", "higher"), ("my_new_metric", "lower"),
])
def test_result_direction(name, direction):
    assert summary.result_direction(name) == direction


def test_best_pointers_from_all_lines_in_any_order(tmp_path):
    run = tmp_path / "00003-run"
    run.mkdir()
    fid = [_line("fid50k_full", {"fid50k_full": v}, k) for k, v in
           [(0.5, 80.0), (1.0, 40.0), (1.5, 25.0), (2.0, 31.0)]]
    fid += [_line("fid50k_full", {"fid50k_full": float("nan")}, 2.5),       # non-finite: ignored
            _line("fid50k_full", {"fid50k_full": 1.0}, None, snap=None)]    # no snapshot: cannot be "best"
    pr = [_line("pr50k3_full", {"pr50k3_full_precision": p, "pr50k3_full_recall": r}, k)
          for k, p, r in [(1.0, 0.6, 0.30), (2.0, 0.7, 0.10), (3.0, 0.5, 0.20)]]
    expected = {
        "fid50k_full": dict(metric="fid50k_full", result="fid50k_full", value=25.0, kimg=1.5,
                            snapshot_pkl="network-snapshot-000001.500.pt", direction="lower"),
        "pr50k3_full_precision": dict(metric="pr50k3_full", result="pr50k3_full_precision", value=0.7, kimg=2.0,
                                      snapshot_pkl="network-snapshot-000002.000.pt", direction="higher"),
        "pr50k3_full_recall": dict(metric="pr50k3_full", result="pr50k3_full_recall", value=0.3, kimg=1.0,
                                   snapshot_pkl="network-snapshot-000001.000.pt", direction="higher"),
    }
    rnd = random.Random(0)
    for _trial in range(3):  # the result does not depend on the order of the lines (e.g. after a resume)
        lines = list(fid)
        rnd.shuffle(lines)
        # A half-written last line from a crash, in the middle after a resume appended more lines.
        _write(run / "metric-fid50k_full.jsonl", lines[:3] + ['{"results": {"fid50k_full": 0.1, "metr'] + lines[3:])
        _write(run / "metric-pr50k3_full.jsonl", rnd.sample(pr, len(pr)))
        with pytest.warns(RuntimeWarning, match=r"metric-fid50k_full.jsonl:4: skipping an unreadable line"):
            out = summary.update_run_summaries(str(run))
        assert out["best"] == expected
        for name, entry in expected.items():
            assert json.loads((run / f"best-{name}.json").read_text()) == entry
    leftovers = sorted(n for n in os.listdir(run) if n.startswith("."))
    assert leftovers == []  # atomic writes leave no temp files
    assert sorted(n for n in os.listdir(run) if n.startswith("best-")) == [f"best-{n}.json" for n in sorted(expected)]


def test_a_resumed_run_inherits_the_history_up_to_its_start(tmp_path):
    """A resumed run trains in a new run dir: it starts with its predecessor's lines up to the resumed point, with
    snapshot paths that still resolve, so metrics.png and best-*.json cover the whole run, along a chain too."""
    first, second, third = (tmp_path / n for n in ("00000-a", "00001-b", "00002-c"))
    for d in (first, second, third):
        d.mkdir()
    for k in (1.0, 2.0, 3.0):
        (first / snapshot_name(int(k * 1000))).write_bytes(b"x")
    _write(first / "metric-fid5k_full.jsonl",
           [_line("fid5k_full", {"fid5k_full": v}, k) for k, v in [(1.0, 90.0), (2.0, 60.0), (3.0, 50.0)]]
           + [_line("fid5k_full", {"fid5k_full": 1.0}, None, snap=None), '{"results": {"fid5k_fu'])
    _write(first / "metric-kid5k_full.jsonl", [_line("kid5k_full", {"kid5k_full": 0.2}, 3.0)])

    # Resumed from 2 kimg: the 3-kimg results are a discarded future; lines without kimg or unreadable stay behind.
    assert summary.inherit_metric_history(str(first), str(second), 2.0) == 2
    assert not (second / "metric-kid5k_full.jsonl").exists()
    lines = [json.loads(t) for t in (second / "metric-fid5k_full.jsonl").read_text().splitlines()]
    assert [(ln["kimg"], ln["snapshot_pkl"]) for ln in lines] == [
        (1.0, "../00000-a/network-snapshot-000001.000.pt"), (2.0, "../00000-a/network-snapshot-000002.000.pt")]
    assert snapshot.resolve_network_path(str(second / "best-fid5k_full.json")) == os.path.normpath(
        str(second / "../00000-a/network-snapshot-000002.000.pt"))
    assert (second / "metrics.png").exists()

    # The next link of the chain carries the same history (paths still relative to it), plus the second's own.
    (second / snapshot_name(2500)).write_bytes(b"x")
    with open(second / "metric-fid5k_full.jsonl", "a") as f:
        f.write(_line("fid5k_full", {"fid5k_full": 40.0}, 2.5) + "\n")
    assert summary.inherit_metric_history(str(second), str(third), 2.5) == 3
    best = json.loads((third / "best-fid5k_full.json").read_text())
    assert (best["value"], best["snapshot_pkl"]) == (40.0, "../00001-b/network-snapshot-000002.500.pt")
    assert [p["kimg"] for p in summary.read_metric_points(str(third))["fid5k_full"]] == [1.0, 2.0, 2.5]
    assert summary.read_metric_points(str(third))["fid5k_full"][0]["snapshot_pkl"] == \
        "../00000-a/network-snapshot-000001.000.pt"

    # A run dir with results of its own is left alone; so is a run "resuming" its own dir.
    assert summary.inherit_metric_history(str(first), str(third), 2.0) == 0
    assert summary.inherit_metric_history(str(first), str(first), 2.0) == 0
    assert len((third / "metric-fid5k_full.jsonl").read_text().splitlines()) == 3


def test_best_pointer_resolves_to_its_snapshot(tmp_path):
    run = tmp_path / "00000-run"
    run.mkdir()
    snap = run / "network-snapshot-000001.504.pt"
    snap.write_bytes(b"x")
    _write(run / "metric-kid50k_full.jsonl", [_line("kid50k_full", {"kid50k_full": 0.01}, 1.504, snap=snap.name)])
    summary.update_run_summaries(str(run))
    pointer = run / "best-kid50k_full.json"
    assert snapshot.resolve_network_path(str(pointer)) == str(snap)
    assert snapshot.resolve_network_path(str(snap)) == str(snap)  # a snapshot path is itself
    os.remove(snap)
    with pytest.raises(snapshot.SnapshotError, match=r"names snapshot .*-000001.504.pt.*does not exist"):
        snapshot.resolve_network_path(str(pointer))
    with pytest.raises(snapshot.SnapshotError, match="does not exist"):
        snapshot.load_snapshot(str(pointer))
    (run / "bad.json").write_text("{not json")
    with pytest.raises(snapshot.SnapshotError, match="cannot read best pointer"):
        snapshot.resolve_network_path(str(run / "bad.json"))


def _plot(tmp_path, name, series):
    run = tmp_path / name
    run.mkdir()
    for metric, values in series.items():
        _write(run / f"metric-{metric}.jsonl", [_line(metric, {metric: v}, k) for k, v in values])
    out = summary.update_run_summaries(str(run))
    assert out["plot"] == str(run / "metrics.png")
    return np.array(PIL.Image.open(run / "metrics.png").convert("RGB"))


def _has_color(img, color):
    return bool((img == np.array(color, np.uint8)).all(axis=-1).any())


def test_metrics_png_panels_curves_and_best_marker(tmp_path):
    a = _plot(tmp_path, "a", {"fid50k_full": [(0.5, 80.0), (1.0, 40.0), (1.5, 60.0)],
                              "kid50k_full": [(0.5, 0.05), (1.0, 0.02), (1.5, 0.04)]})
    assert a.shape == (2 * summary.PANEL_H, summary.PANEL_W, 3)
    b = _plot(tmp_path, "b", {"fid50k_full": [(0.5, 80.0), (1.0, 70.0), (1.5, 20.0)],
                              "kid50k_full": [(0.5, 0.05), (1.0, 0.02), (1.5, 0.04)]})
    for img in (a, b):
        for panel in range(2):
            rows = img[panel * summary.PANEL_H:(panel + 1) * summary.PANEL_H]
            assert _has_color(rows, summary.BEST_COLOR) and _has_color(rows, summary.LINE_COLOR)
            assert (rows.min(axis=-1) < 128).sum() > 500  # axes, ticks, labels: dark pixels in every panel
    # The first panel (fid50k_full, sorted first) shows the curve: different values, different pixels.
    plot_area = (slice(summary._MARGIN_T + 2, summary.PANEL_H - summary._MARGIN_B - 2),
                 slice(summary._MARGIN_L + 2, summary.PANEL_W - summary._MARGIN_R - 2))
    assert (a[plot_area] != b[plot_area]).any(axis=-1).sum() > 200
    # The best point (a: kimg 1.0, middle of the x range) is marked where it is: red around the middle column.
    red_cols = np.nonzero((a[:summary.PANEL_H] == np.array(summary.BEST_COLOR, np.uint8)).all(axis=-1).any(axis=0))[0]
    mid = (summary._MARGIN_L + summary.PANEL_W - summary._MARGIN_R) / 2
    assert abs(red_cols.mean() - mid) < 3
    # The second panel is identical in a and b (same kid values).
    assert np.array_equal(a[summary.PANEL_H:], b[summary.PANEL_H:])


def test_metrics_png_single_point_non_finite_and_nothing_to_draw(tmp_path):
    img = _plot(tmp_path, "one", {"fid2k_full": [(4.0, 12.5), (5.0, math.inf)]})
    assert img.shape == (summary.PANEL_H, summary.PANEL_W, 3) and _has_color(img, summary.BEST_COLOR)
    empty = tmp_path / "empty"
    empty.mkdir()
    _write(empty / "metric-fid10_full.jsonl", [_line("fid10_full", {"fid10_full": 3.0}, None, snap=None)])
    out = summary.update_run_summaries(str(empty))
    assert out == dict(best={}, pointers=[], plot=None) and os.listdir(empty) == ["metric-fid10_full.jsonl"]


def test_old_lines_without_kimg_take_it_from_the_snapshot_name(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    lines = [_line("fid50k_full", {"fid50k_full": 9.0}, None, snap="network-snapshot-000012.pt"),
             _line("fid50k_full", {"fid50k_full": 7.0}, None, snap="network-snapshot-000003.250.pt")]
    _write(run / "metric-fid50k_full.jsonl", lines)
    points = summary.read_metric_points(str(run))["fid50k_full"]
    assert sorted(p["kimg"] for p in points) == [3.25, 12.0]
    assert summary.update_run_summaries(str(run))["best"]["fid50k_full"]["kimg"] == 3.25
