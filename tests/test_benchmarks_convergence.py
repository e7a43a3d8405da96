"""benchmarks/convergence.py: schedule and images-to-reach arithmetic, outputs, and a tiny end-to-end study that is
interrupted and resumed (training runs as real train.py processes; a cheap stand-in detector replaces Inception)."""

import importlib.util
import json
import math
import os
import shutil

import numpy as np
import PIL.Image
import pytest
import torch.nn.functional as F
from click.testing import CliRunner

from metrics import detectors
from metrics.detectors import FeatureDetector

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _load():
    spec = importlib.util.spec_from_file_location("bench_convergence", os.path.join(REPO, "benchmarks",
                                                                                    "convergence.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


conv = _load()


# ---------------------------------------------------------------------------------------------
# Pure functions.


def test_eval_schedule_is_geometric_and_rounded_up_to_whole_batches():
    # 0.5 * 2^(k/2) kimg -> 500, 707.1, 1000, 1414.2, 2000, 2828.4 images, then the total 4000; up to x16.
    assert conv.eval_schedule(0.5, 4, 2, 16) == [512, 720, 1008, 1424, 2000, 2832, 4000]
    assert conv.eval_schedule(1, 8, 1, 1000) == [1000, 2000, 4000, 8000]
    assert conv.eval_schedule(1, 3, 1, 1000) == [1000, 2000, 3000]  # the total is always the last point
    assert conv.eval_schedule(0.001, 0.002, 4, 8) == [8]  # below one batch: one step, duplicates dropped
    with pytest.raises(ValueError):
        conv.eval_schedule(2, 1, 1, 16)


def test_images_to_reach_first_point_and_log_interpolation():
    curve = [(4000, 20.0), (1000, 50.0), (2000, 30.0), (8000, 21.0)]  # any order
    n, interp = conv.images_to_reach(curve, 25.0)
    assert n == 4000
    assert interp == pytest.approx(2000 * math.sqrt(2))  # halfway from 30 to 20 -> halfway in log(nimg)
    assert conv.images_to_reach(curve, 50.0) == (1000, 1000.0)  # the first point already reaches it
    assert conv.images_to_reach(curve, 20.0) == (4000, 4000.0)  # exactly the value
    assert conv.images_to_reach(curve, 10.0) == (None, None)
    n, interp = conv.images_to_reach([(1000, 0.1), (2000, 0.5)], 0.3, direction="higher")
    assert n == 2000 and interp == pytest.approx(1000 * math.sqrt(2))
    assert conv.best_point(curve) == (4000, 20.0)
    assert conv.best_point([(1000, 0.2), (2000, 0.5), (3000, 0.5)], "higher") == (2000, 0.5)


def _synthetic_study(tmp_path):
    def points(curve, extra=None):
        return {str(n): dict(nimg=n, kimg=n / 1000, results={"fid1k_full": v, **(extra or {})}, metrics=[])
                for n, v in curve}

    settings = dict(cfg="fastgan_lite", data="d.zip", batch=16, seed=0, ema_kimg=1, ema_rampup=0.05, mirror=True,
                    ngf=32, cbase=8192, cmax=256, map_depth=2, feat_res=64, train_args="", metrics=["fid1k_full"],
                    schedule=[1000, 8000], baseline="stylegan2")
    return dict(format=conv.STUDY_FORMAT, version=1, name="synthetic", settings=settings,
                arm_order=["projected", "stylegan2"], dir=str(tmp_path),
                arms=dict(projected=dict(args=["--loss=projected"], points=points(
                              [(1000, 70.0), (2000, 35.0), (4000, 30.0), (8000, 28.0)],
                              {"pr1k3_full_precision": 0.5})),
                          stylegan2=dict(args=["--loss=stylegan2"], points=points(
                              [(1000, 100.0), (2000, 60.0), (4000, 40.0), (8000, 41.0)]))))


def test_reach_table_exact_numbers(tmp_path):
    study = _synthetic_study(tmp_path)
    rows = conv.reach_table(study, "stylegan2")
    assert [(r["result"], r["arm"]) for r in rows] == [("fid1k_full", "projected"), ("fid1k_full", "stylegan2")]
    proj, base = rows
    assert proj["baseline_best"] == 40.0 and proj["baseline_nimg"] == 4000
    assert proj["nimg"] == 2000 and proj["ratio"] == 2.0 and proj["arm_best"] == 28.0
    assert proj["nimg_interp"] == pytest.approx(1000 * 2 ** (30 / 35))  # 70 -> 35 crosses 40 at 6/7 of the octave
    assert base["nimg"] == 4000 and base["ratio"] == 1.0
    table = conv.markdown_table(rows)
    assert "| projected | 2 (interp. 1.81) | 2.00x | 28 |" in table
    assert "| stylegan2 | 4 (interp. 4) | 1.00x | 40 |" in table
    # An arm that never gets there.
    study["arms"]["projected"]["points"] = {"1000": dict(nimg=1000, results={"fid1k_full": 90.0})}
    row = conv.reach_table(study, "stylegan2")[0]
    assert row["nimg"] is None and row["ratio"] is None
    assert "| projected | not reached | - | 90 |" in conv.markdown_table([row])


def test_plot_has_one_panel_per_result(tmp_path):
    study = _synthetic_study(tmp_path)
    path = conv.plot_curves(study, str(tmp_path / "plot.png"))
    with PIL.Image.open(path) as im:
        assert im.size == (conv.PLOT_W, 2 * conv.PANEL_H)  # fid1k_full and pr1k3_full_precision
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    for color in conv.ARM_COLORS[:2]:  # both arms' lines are drawn
        assert (pixels == np.array(color)).all(axis=1).sum() > 50


# ---------------------------------------------------------------------------------------------
# End to end.


class BlockMeans(FeatureDetector):
    """Stand-in detector: 2x2 block means per channel -> [N, 12]; counts the images it embeds."""

    feature_dim = 12
    images = 0

    def __init__(self, name):
        super().__init__()
        self.name = name

    def forward(self, images):
        BlockMeans.images += len(images)
        return F.adaptive_avg_pool2d(self.prepare(images), 2).flatten(1) / 255


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setitem(detectors._FACTORIES, "inception", lambda **kw: BlockMeans("inception"))
    monkeypatch.setenv("PGAN_CACHE", str(tmp_path / "cache"))
    BlockMeans.images = 0
    detectors.clear_cache()
    yield BlockMeans
    detectors.clear_cache()


@pytest.fixture
def tiny_data(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    rnd = np.random.RandomState(0)
    for i in range(16):
        img = np.full([32, 32, 3], 40 + 10 * i, np.uint8) + (rnd.rand(32, 32, 3) * 40).astype(np.uint8)
        PIL.Image.fromarray(img).save(root / f"{i:02d}.png")
    return str(root)


ARMS = ("a=--loss=stylegan2 --r1-gamma=0.1", "b=--loss=stylegan2 --r1-gamma=1")


def _args(data, study_dir, docs_dir, kimg="0.016", extra=(), arms=ARMS, baseline="b"):
    # Two cheap arms (the baseline D at tiny widths, with two R1 weights): the study's wiring is what is tested.
    return ["--cfg=fastgan_lite", f"--data={data}", f"--study-dir={study_dir}", f"--docs-dir={docs_dir}",
            "--name=tiny", *[f"--arm={a}" for a in arms], f"--baseline={baseline}", "--batch=4",
            "--first-kimg=0.008", f"--kimg={kimg}", "--per-octave=1", "--ngf=8",
            "--cbase=256", "--cmax=16", "--ema-kimg=0.01", "--metrics=fid16_full,kid16_full,pr16_full",
            "--grid=2x2", "--workers=0", "--device=cpu", "--eval-batch=8", "--quiet", *extra]


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)


def _run_dirs(study_dir):
    return sorted(d for arm in ("a", "b") for d in os.listdir(os.path.join(study_dir, arm)) if d[0].isdigit())


def test_tiny_study_end_to_end_resumes_without_redoing_work(toy, tiny_data, tmp_path):
    study_dir, docs = str(tmp_path / "study"), str(tmp_path / "docs")
    runner = CliRunner()
    res = runner.invoke(conv.main, _args(tiny_data, study_dir, docs), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    study = _read_json(os.path.join(study_dir, "study.json"))
    assert study["arm_order"] == ["a", "b"] and study["settings"]["schedule"] == [8, 16]
    assert study["settings"]["batch"] == 4 and study["settings"]["ngf"] == 8  # the settings are recorded
    for arm in ("a", "b"):
        entry = study["arms"][arm]
        assert [(c["from_nimg"], c["to_nimg"]) for c in entry["chunks"]] == [(0, 8), (8, 16)]  # chunk 2 resumed
        assert sorted(entry["points"]) == ["16", "8"]
        for point in entry["points"].values():
            assert set(point["results"]) == {"fid16_full", "kid16_full", "pr16_full_precision",
                                             "pr16_full_recall"}
            assert all(math.isfinite(v) for v in point["results"].values())
            assert 0 <= point["results"]["pr16_full_precision"] <= 1
            with PIL.Image.open(os.path.join(study_dir, point["grid"])) as im:
                assert im.size == (64, 64)  # 2x2 grid of 32x32 samples
    # The second chunk of each arm really continued the first one's snapshot.
    for arm in ("a", "b"):
        runs = sorted(d for d in os.listdir(os.path.join(study_dir, arm)) if d[0].isdigit())
        opts = _read_json(os.path.join(study_dir, arm, runs[1], "training_options.json"))
        assert opts["resume"] and os.path.dirname(opts["resume"]).endswith(runs[0])
        assert opts["loss_kwargs"]["r1_gamma"] == (0.1 if arm == "a" else 1.0)
        assert opts["batch_size"] == 4 and opts["ema_kimg"] == 0.01 and opts["G_kwargs"]["ngf"] == 8
    # Docs outputs: JSON with the table, the plot (one panel per result), the side-by-side grids.
    out = _read_json(os.path.join(docs, "convergence_tiny.json"))
    assert out["settings"] == study["settings"] and out["arms"].keys() == study["arms"].keys()
    assert {r["arm"] for r in out["reach"]} == {"a", "b"} and {r["result"] for r in out["reach"]} == {
        "fid16_full", "kid16_full"}
    base_row = [r for r in out["reach"] if r["arm"] == "b" and r["result"] == "fid16_full"][0]
    assert base_row["ratio"] == 1.0
    with PIL.Image.open(os.path.join(docs, "convergence_tiny.png")) as im:
        assert im.size == (conv.PLOT_W, 4 * conv.PANEL_H)
    with PIL.Image.open(os.path.join(docs, "convergence_tiny_grids.png")) as im:
        assert im.size[0] > 2 * 64 and im.size[1] > 64
    with open(os.path.join(docs, "convergence_tiny.md")) as f:
        assert "| fid16_full" in f.read()

    # Rerun: nothing is trained or evaluated again.
    runs_before, embedded = _run_dirs(study_dir), toy.images
    res = runner.invoke(conv.main, _args(tiny_data, study_dir, docs), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert _run_dirs(study_dir) == runs_before and toy.images == embedded
    assert _read_json(os.path.join(study_dir, "study.json"))["arms"] == study["arms"]

    # Interrupted during arm b's second chunk (no snapshot at 16 images yet, nothing recorded): the rerun trains
    # only that chunk, from b's snapshot at 8 images, and evaluates only that point.
    b_runs = sorted(d for d in os.listdir(os.path.join(study_dir, "b")) if d[0].isdigit())
    shutil.rmtree(os.path.join(study_dir, "b", b_runs[-1]))
    cut = _read_json(os.path.join(study_dir, "study.json"))
    del cut["arms"]["b"]["points"]["16"]
    cut["arms"]["b"]["chunks"].pop()
    _write_json(os.path.join(study_dir, "study.json"), cut)
    res = runner.invoke(conv.main, _args(tiny_data, study_dir, docs), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    again = _read_json(os.path.join(study_dir, "study.json"))
    assert again["arms"]["a"] == study["arms"]["a"]
    assert [(c["from_nimg"], c["to_nimg"]) for c in again["arms"]["b"]["chunks"]] == [(0, 8), (8, 16)]
    assert len(_run_dirs(study_dir)) == len(runs_before)
    # Training is exact across chunks, so the redone point has the same weights and results as before.
    assert again["arms"]["b"]["points"]["16"]["results"] == pytest.approx(study["arms"]["b"]["points"]["16"]
                                                                           ["results"])
    # 16 generated images per metric (48), or 16 in all where FID/KID/PR share one embedding pass.
    assert toy.images - embedded in (16, 48)


def test_cli_errors_are_one_line(toy, tiny_data, tmp_path):
    runner = CliRunner()
    study_dir, docs = str(tmp_path / "study"), str(tmp_path / "docs")
    cases = [
        (dict(arms=["nameless"]), "--arm"),
        (dict(arms=["x=--loss=stylegan2 --batch=8"], baseline="x"), "sets --batch"),
        (dict(arms=["a=--loss=stylegan2", "a=--loss=projected"], baseline="a"), "two arms are named 'a'"),
        (dict(baseline="zzz"), "'zzz' is not an arm"),
        (dict(extra=["--metrics=fid_wrong"]), "unknown metric"),
        (dict(extra=["--grid=4by4"]), "--grid"),
        (dict(extra=["--first-kimg=1"]), "first_kimg"),
        (dict(extra=[f"--data={tmp_path / 'missing'}"]), "does not exist"),
        (dict(arms=["a=--loss=stylegan2 --r1-gamma=-1", "b=--loss=stylegan2"]), "train.py rejects its options"),
    ]
    for kwargs, expected in cases:
        res = runner.invoke(conv.main, _args(tiny_data, study_dir, docs, **kwargs))
        assert res.exit_code in (1, 2), (kwargs, res.output)  # 2: click usage errors
        assert expected in res.output, (kwargs, res.output)
        assert res.exception is None or isinstance(res.exception, SystemExit), (kwargs, res.exception)
    assert not os.path.exists(os.path.join(docs, "convergence_tiny.json"))  # no half-written output
    # A study dir made with other training settings is refused, naming the option.
    os.makedirs(study_dir, exist_ok=True)
    study = dict(format=conv.STUDY_FORMAT, version=1, name="tiny", arm_order=[], arms={},
                 settings=dict(cfg="fastgan_lite", data=os.path.abspath(tiny_data), batch=8))
    _write_json(os.path.join(study_dir, "study.json"), study)
    res = runner.invoke(conv.main, _args(tiny_data, study_dir, docs))
    assert res.exit_code == 1 and "--batch" in res.output and "was made with 8, now 4" in res.output


def test_log_axis_ticks_cover_short_and_long_ranges():
    assert conv._log_ticks(0.88, 4.6) == [1.0, 2.0, 4.0]  # 1, 2, 5 x 10^k would give only 1 and 2
    assert conv._log_ticks(0.4, 20) == [0.5, 1, 2, 5, 10, 20]
    assert conv._log_ticks(0.05, 200) == [0.1, 1, 10, 100]
