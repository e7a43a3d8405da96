#!/usr/bin/env python
"""Convergence study: quality vs images seen for several discriminators/losses trained alike.

    # Projected D vs the StyleGAN2 D + R1 baseline, same FastGAN-lite generator, on the bundled emoji (CPU):
    python benchmarks/convergence.py --cfg=fastgan_lite --kimg=32
    # The paper's projection ablation (CCM+CSM vs raw features) at one setting:
    python benchmarks/convergence.py --cfg=fastgan_lite --name=proj_type --baseline=proj0 \\
        --arm=proj2=--loss=projected --arm='proj0=--loss=projected --proj-type=0'
    # Tables, plot and grids again from what is recorded (no training, no evaluation):
    python benchmarks/convergence.py --cfg=fastgan_lite --report-only

Every arm is one `train.py` run with the same generator, batch, seed, EMA, data and widths; the arms differ
only by their own train.py options (`--arm NAME=OPTIONS`; the defaults are `projected=--loss=projected` and
`stylegan2=--loss=stylegan2`). Training goes in chunks, one `train.py` process per chunk, each resuming from the
previous chunk's snapshot (train.py's resume is exact, so chunks give the same weights as one long run) and
stopping at the next evaluation point. Evaluation points are geometric in images seen (`--per-octave` per
doubling from `--first-kimg` to `--kimg`, rounded up to whole batches). The arms advance round-robin, point by
point, so a study stopped early still has comparable curves. After each chunk the snapshot is evaluated with all
`--metrics` in this process and a fixed-latent sample grid is written.

Files: STUDY_DIR/ARM/NNNNN-*/ (train.py's run dirs), STUDY_DIR/ARM/grids/grid-KKKKKK.III.png, STUDY_DIR/study.json
(settings, chunks, results; rewritten atomically after each step) and, from study.json, DOCS/convergence_NAME.json
(the study plus the images-to-reach table), DOCS/convergence_NAME.png (each result vs images seen, log x, one line
per arm), DOCS/convergence_NAME_grids.png (arms side by side at equal images seen) and DOCS/convergence_NAME.md.

Rerunning the same command resumes: finished chunks are not retrained (a snapshot at the point exists),
recorded evaluations are not recomputed, an interrupted chunk restarts from the newest snapshot before its
point. Changing anything that defines training (cfg, data, batch, seed, EMA, widths, an arm's options) for an
existing study is an error; the schedule (--kimg, --first-kimg, --per-octave) and --metrics may change.
"""

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

import click

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

STUDY_FORMAT = "projected-gan-toolkit/convergence-study"
STUDY_VERSION = 1
DEFAULT_ARMS = ("projected=--loss=projected", "stylegan2=--loss=stylegan2")
DEFAULT_METRICS = "fid1k_full,kid1k_full,pr1k3_full"
ARM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Options the study sets itself for every arm; an arm may not override them (the arms would stop being alike).
STUDY_OWNED = ("outdir", "cfg", "data", "batch", "seed", "kimg", "tick", "snap", "img-snap", "metrics", "resume",
               "ema-kimg", "ema-rampup", "mirror", "ngf", "cbase", "cmax", "feat-res", "map-depth", "workers",
               "device", "gpus", "dry-run", "grid")

# Plot geometry and colours (one colour per arm, in --arm order).
PLOT_W, PANEL_H = 640, 320
_ML, _MR, _MT, _MB = 70, 20, 30, 44
ARM_COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75),
              (227, 119, 194), (127, 127, 127)]


class StudyError(click.ClickException):
    """A problem with the inputs or the study directory: reported as one line, exit status 1."""


# ---------------------------------------------------------------------------------------------
# Schedule and the images-to-reach computation (pure functions; tested on synthetic curves).


def eval_schedule(first_kimg: float, total_kimg: float, per_octave: int, batch: int) -> list:
    """Image counts at which the arms are evaluated, ascending.

    Geometric: first_kimg * 2^(k / per_octave) for k = 0, 1, ... while below total_kimg, then total_kimg; each
    rounded up to a whole number of batches (training stops at the first step boundary at or past its --kimg)
    and duplicates dropped.
    """
    if not (0 < first_kimg <= total_kimg):
        raise ValueError(f"need 0 < first_kimg <= total_kimg, got {first_kimg} and {total_kimg}")
    if per_octave < 1 or batch < 1:
        raise ValueError("per_octave and batch must be >= 1")
    whole = lambda kimg: max(batch, math.ceil(round(kimg * 1000, 6) / batch) * batch)
    points, k = [], 0
    while True:
        kimg = first_kimg * 2 ** (k / per_octave)
        if kimg >= total_kimg * (1 - 1e-9):
            break
        points.append(whole(kimg))
        k += 1
    points.append(whole(total_kimg))
    return sorted(set(points))


def images_to_reach(curve, target: float, direction: str = "lower"):
    """Images an arm needed to reach `target`: (first evaluated count at or past it, log-interpolated count).

    curve: [(nimg, value)] in any order. `direction` 'lower' (FID, KID) or 'higher' (precision, recall).
    The first number is what was measured (the true count lies between the previous point and it); the second
    interpolates value linearly in log(nimg) between those two points. (None, None) if never reached.
    """
    pts = sorted((int(n), float(v)) for n, v in curve if v is not None and math.isfinite(v))
    sign = 1.0 if direction == "lower" else -1.0
    for i, (n, v) in enumerate(pts):
        if sign * v <= sign * target:
            if i == 0 or v == target:
                return n, float(n)
            n0, v0 = pts[i - 1]
            t = (target - v0) / (v - v0) if v != v0 else 1.0
            return n, float(math.exp(math.log(n0) + t * (math.log(n) - math.log(n0))))
    return None, None


def best_point(curve, direction: str = "lower"):
    """(nimg, value) of the best value (ties: the earliest); None for an empty curve."""
    pts = sorted((int(n), float(v)) for n, v in curve if v is not None and math.isfinite(v))
    if not pts:
        return None
    sign = 1.0 if direction == "lower" else -1.0
    return min(pts, key=lambda p: (sign * p[1], p[0]))


def result_direction(name: str) -> str:
    from metrics import summary

    return summary.result_direction(name)


def reach_table(study: dict, baseline: str) -> list:
    """Rows {result, baseline_best, baseline_nimg, arm, nimg, nimg_interp, ratio} for every lower-is-better result
    (FID, KID, FD) of the baseline: the images each arm needed to reach the baseline's best value.

    ratio = baseline_nimg / nimg: how many times fewer images than the baseline needed for its best (None when the
    arm never got there).
    """
    curves = result_curves(study)
    rows = []
    for result in sorted(curves):
        if result_direction(result) != "lower" or baseline not in curves[result]:
            continue
        best = best_point(curves[result][baseline])
        if best is None:
            continue
        base_nimg, base_value = best
        for arm in study["arm_order"]:
            if arm not in curves[result]:
                continue
            nimg, interp = images_to_reach(curves[result][arm], base_value)
            rows.append(dict(result=result, baseline=baseline, baseline_best=base_value, baseline_nimg=base_nimg,
                             arm=arm, nimg=nimg, nimg_interp=interp,
                             ratio=(base_nimg / nimg) if nimg else None,
                             arm_best=best_point(curves[result][arm])[1]))
    return rows


def result_curves(study: dict) -> dict:
    """{result: {arm: [(nimg, value)]}} from the recorded evaluations."""
    curves = {}
    for arm in study["arm_order"]:
        for point in study["arms"][arm]["points"].values():
            for result, value in point.get("results", {}).items():
                curves.setdefault(result, {}).setdefault(arm, []).append((point["nimg"], value))
    for per_arm in curves.values():
        for pts in per_arm.values():
            pts.sort()
    return curves


def markdown_table(rows: list) -> str:
    """The images-to-reach table as GitHub markdown."""
    out = ["| metric | arm | kimg to reach the baseline's best | ratio (baseline's kimg / arm's) | arm's best |",
           "| --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["nimg"] is None:
            reach, ratio = "not reached", "-"
        else:
            reach = f"{r['nimg'] / 1000:g} (interp. {r['nimg_interp'] / 1000:.3g})"
            ratio = f"{r['ratio']:.2f}x"
        label = (f"{r['result']} (baseline {r['baseline']}: {r['baseline_best']:.4g} @ "
                 f"{r['baseline_nimg'] / 1000:g} kimg)")
        out.append(f"| {label} | {r['arm']} | {reach} | {ratio} | {r['arm_best']:.4g} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Arms.


def parse_arm(spec: str):
    """'NAME=train.py options' -> (name, [options]). Raises StyleError-free ValueError naming the problem."""
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not ARM_NAME_RE.fullmatch(name):
        raise ValueError(f"'{spec}' is not NAME=TRAIN_OPTIONS (NAME: letters, digits, _ . -), e.g. "
                         f"'proj0=--loss=projected --proj-type=0'")
    try:
        args = shlex.split(rest)
    except ValueError as err:
        raise ValueError(f"'{spec}': cannot split the options ({err})") from err
    for arg in args:
        opt = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        if opt in STUDY_OWNED:
            raise ValueError(f"arm '{name}' sets --{opt}, which the study sets for every arm (use the study's "
                             f"own --{opt} option)")
    return name, args


def arm_loss(args: list) -> str:
    """The --loss an arm's options select (train.py's default: projected)."""
    loss = "projected"
    for i, arg in enumerate(args):
        if arg.startswith("--loss="):
            loss = arg.split("=", 1)[1]
        elif arg == "--loss" and i + 1 < len(args):
            loss = args[i + 1]
    return loss


def common_train_args(s: dict, loss: str) -> list:
    """train.py options every arm shares, limited to those that apply to (cfg, loss) (train.py rejects others)."""
    sg2_nets = s["cfg"] == "stylegan2" or loss == "stylegan2"
    args = [f"--cfg={s['cfg']}", f"--data={s['data']}", f"--batch={s['batch']}", f"--seed={s['seed']}",
            f"--mirror={int(s['mirror'])}", f"--ema-kimg={s['ema_kimg']:g}", f"--ema-rampup={s['ema_rampup']:g}",
            f"--workers={s['workers']}", f"--device={s['device']}", "--gpus=1", "--metrics=none"]
    if s["cfg"] != "stylegan2":
        args.append(f"--ngf={s['ngf']}")
    else:
        args.append(f"--map-depth={s['map_depth']}")
    if sg2_nets:
        args += [f"--cbase={s['cbase']}", f"--cmax={s['cmax']}"]
    if loss == "projected" and s["feat_res"]:
        args.append(f"--feat-res={s['feat_res']}")
    return args + shlex.split(s["train_args"])


def arm_train_args(study: dict, arm: str) -> list:
    s = study["settings"]
    arm_args = study["arms"][arm]["args"]
    return common_train_args(s, arm_loss(arm_args)) + list(arm_args)


def validate_arm(study: dict, arm: str) -> None:
    """train.py --dry-run in this process: a bad option fails now, before any arm trains."""
    import train

    args = arm_train_args(study, arm) + [f"--outdir={os.path.join(study['dir'], arm)}", "--kimg=1", "--dry-run"]
    try:
        with open(os.devnull, "w") as devnull:
            stdout = sys.stdout
            sys.stdout = devnull
            try:
                train.main.main(args=args, standalone_mode=False, prog_name="train.py")
            finally:
                sys.stdout = stdout
    except click.ClickException as err:
        raise StudyError(f"arm '{arm}': train.py rejects its options: {err.format_message()}") from None


# ---------------------------------------------------------------------------------------------
# The study file.


def study_path(study_dir: str) -> str:
    return os.path.join(study_dir, "study.json")


def save_study(study: dict) -> None:
    from torch_utils import util

    data = {k: v for k, v in study.items() if k != "dir" and not k.startswith("_")}
    text = (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8")
    os.makedirs(study["dir"], exist_ok=True)
    util.atomic_write(study_path(study["dir"]), lambda f: f.write(text))


def load_study(study_dir: str):
    path = study_path(study_dir)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise StudyError(f"'{path}' is unreadable ({err}); move it away to start a new study there") from None
    if not isinstance(data, dict) or data.get("format") != STUDY_FORMAT:
        raise StudyError(f"'{path}' is not a convergence study file")
    if int(data.get("version", 0)) > STUDY_VERSION:
        raise StudyError(f"'{path}' has version {data['version']}; this script reads up to {STUDY_VERSION}")
    data["dir"] = study_dir
    return data


def merge_study(old, settings: dict, arms: list, study_dir: str, name: str) -> dict:
    """The study to continue: the recorded one (checked against the current options) or a new one."""
    if old is None:
        study = dict(format=STUDY_FORMAT, version=STUDY_VERSION, name=name, settings=settings, arm_order=[],
                     arms={}, dir=study_dir)
    else:
        study = old
        for key in TRAINING_SETTINGS:
            value = settings[key]
            if study["settings"].get(key) != value:
                raise StudyError(f"--{key.replace('_', '-')}: the study in '{study_dir}' was made with "
                                 f"{study['settings'].get(key)!r}, now {value!r}; use another --study-dir or the "
                                 f"same value")
        study["settings"].update(settings)  # schedule and metrics may change
    for arm, args in arms:
        if arm in study["arms"]:
            if study["arms"][arm]["args"] != args:
                raise StudyError(f"--arm {arm}: the study in '{study_dir}' trained it with options "
                                 f"{shlex.join(study['arms'][arm]['args'])!r}, now {shlex.join(args)!r}; give the "
                                 f"arm another name")
        else:
            study["arms"][arm] = dict(args=args, chunks=[], points={}, snapshots={})
    study["arm_order"] = [a for a, _ in arms]
    return study


# Settings that define how the networks train: fixed for the life of a study.
TRAINING_SETTINGS = ("cfg", "data", "batch", "seed", "ema_kimg", "ema_rampup", "mirror", "ngf", "cbase", "cmax",
                     "feat_res", "map_depth", "train_args")


# ---------------------------------------------------------------------------------------------
# Snapshots of an arm.


def scan_snapshots(study: dict, arm: str) -> dict:
    """{nimg: info} of every snapshot file in the arm's run dirs; info = dict(path, full, G_ema).

    The image count and contents are read from each file (memory-mapped, no weights) and remembered in study.json
    by (path, size, mtime), so a file overwritten in place (a rolling resume file) is read again.
    """
    from training import snapshot as snapshot_lib

    arm_dir = os.path.join(study["dir"], arm)
    known = study["arms"][arm].setdefault("snapshots", {})
    found = {}
    if not os.path.isdir(arm_dir):
        return found
    for run in sorted(os.listdir(arm_dir)):
        run_dir = os.path.join(arm_dir, run)
        if not os.path.isdir(run_dir) or not re.fullmatch(r"\d+-.*", run):
            continue
        for fname in sorted(os.listdir(run_dir)):
            if not fname.endswith(".pt") or fname.startswith("."):
                continue
            path = os.path.join(run_dir, fname)
            rel = os.path.relpath(path, study["dir"])
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
            info = known.get(rel)
            if info is None or info.get("stamp") != stamp:
                try:
                    data = snapshot_lib.load_snapshot(path, mmap=True)
                except snapshot_lib.SnapshotError:
                    continue  # not one of ours, or unreadable: never resume from it
                nimg = data.get("progress", {}).get("cur_nimg")
                if nimg is None:
                    continue
                info = dict(stamp=stamp, nimg=int(nimg), full=all(k in data for k in ("G", "D", "G_opt", "D_opt")),
                            G_ema="G_ema" in data)
                known[rel] = info
            entry = found.get(info["nimg"])
            # Prefer a full snapshot (it can be resumed from) over a lean one of the same count.
            if entry is None or (info["full"] and not entry["full"]):
                found[info["nimg"]] = dict(path=rel, full=info["full"], G_ema=info["G_ema"])
    for rel in [r for r in known if not os.path.exists(os.path.join(study["dir"], r))]:
        del known[rel]
    return found


def train_chunk(study: dict, arm: str, target: int, log) -> None:
    """Train `arm` up to `target` images in one train.py process, from its newest full snapshot before that."""
    snaps = scan_snapshots(study, arm)
    start = max((n for n, i in snaps.items() if i["full"] and n < target), default=None)
    args = [sys.executable, os.path.join(REPO, "train.py"), f"--outdir={os.path.join(study['dir'], arm)}",
            *arm_train_args(study, arm), f"--kimg={target / 1000:.3f}",
            f"--tick={max((target - (start or 0)) / 4000, study['settings']['batch'] / 1000):.3f}",
            "--snap=1000000", "--img-snap=1000000",
            # train.py's own grids at the study's grid size: the default (up to 16x16) costs more than a short chunk.
            f"--grid={study['settings']['grid'][0]}x{study['settings']['grid'][1]}"]
    if start is not None:
        args.append(f"--resume={os.path.join(study['dir'], snaps[start]['path'])}")
    log(f"[{arm}] training {(start or 0) / 1000:g} -> {target / 1000:g} kimg")
    t0 = time.time()
    proc = subprocess.run(args, cwd=REPO, stdin=subprocess.DEVNULL, stdout=None if study.get("_verbose") else
                          subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.time() - t0
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise StudyError(f"arm '{arm}': train.py failed while training to {target / 1000:g} kimg: {last}")
    study["arms"][arm]["chunks"].append(dict(from_nimg=start or 0, to_nimg=target, seconds=round(seconds, 2),
                                             sec_per_kimg=round(seconds / max((target - (start or 0)) / 1000,
                                                                              1e-9), 2)))
    if target not in scan_snapshots(study, arm):
        raise StudyError(f"arm '{arm}': train.py finished but wrote no snapshot at {target} images "
                         f"(under '{os.path.join(study['dir'], arm)}')")
    save_study(study)


# ---------------------------------------------------------------------------------------------
# Evaluation.


def _device(kind: str):
    import torch

    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(kind)


def evaluate_metrics(G, names: list, dataset_kwargs: dict, device, batch_size: int = 64) -> dict:
    """{result: value} of all metrics `names` for generator G (images at noise_mode='const').

    Uses metric_main.calc_metrics (one embedding pass per detector shared by FID/KID/PR) when the metrics
    package has it, else one calc_metric per name (real statistics come from the disk cache either way).
    """
    from metrics import metric_main

    results = {}
    calc_many = getattr(metric_main, "calc_metrics", None)
    if calc_many is not None:
        out = calc_many(names, G=G, dataset_kwargs=dataset_kwargs, device=device, batch_size=batch_size,
                        G_kwargs=dict(noise_mode="const"))
        for r in (out.values() if isinstance(out, dict) and "results" not in out else out):
            results.update(r["results"])
        return results
    for name in names:
        r = metric_main.calc_metric(name, G=G, dataset_kwargs=dataset_kwargs, device=device, batch_size=batch_size,
                                    G_kwargs=dict(noise_mode="const"))
        results.update(r["results"])
    return results


def _is_user_error(err) -> bool:
    from metrics.inception import WeightsNotFoundError
    from metrics.metric_utils import MetricError
    from training.snapshot import SnapshotError

    return isinstance(err, (MetricError, SnapshotError, WeightsNotFoundError, FileNotFoundError))


def grid_path(study: dict, arm: str, nimg: int) -> str:
    return os.path.join(arm, "grids", f"grid-{nimg // 1000:06d}.{nimg % 1000:03d}.png")


def write_sample_grid(G, path: str, grid: tuple, seed: int, device) -> None:
    """cols x rows images of G at fixed latents (the same for every arm: same seed, same z_dim)."""
    import torch

    from torch_utils import image_io

    cols, rows = grid
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([cols * rows, G.z_dim], generator=gen).to(device)
    c = torch.zeros([cols * rows, G.c_dim], device=device)
    with torch.no_grad():
        images = torch.cat([G(z[i:i + 16], c[i:i + 16], noise_mode="const") for i in range(0, len(z), 16)])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image_io.save_image_grid(images.cpu(), path, grid_size=[cols, rows])


def evaluate_point(study: dict, arm: str, nimg: int, metric_names: list, log) -> None:
    """Evaluate the arm's snapshot at `nimg` with the metrics not yet recorded there, and write its sample grid."""
    from training import snapshot as snapshot_lib

    s = study["settings"]
    point = study["arms"][arm]["points"].setdefault(str(nimg), dict(nimg=nimg, kimg=nimg / 1000, results={}))
    todo = [m for m in metric_names if m not in point.get("metrics", [])]
    need_grid = not point.get("grid") or not os.path.isfile(os.path.join(study["dir"], point["grid"]))
    if not todo and not need_grid:
        return
    snap = scan_snapshots(study, arm).get(nimg)
    if snap is None or not snap["G_ema"]:
        raise StudyError(f"arm '{arm}': no snapshot with G_ema at {nimg} images under "
                         f"'{os.path.join(study['dir'], arm)}'")
    device = _device(s["eval_device"])
    G = snapshot_lib.load_generator(os.path.join(study["dir"], snap["path"]), which="G_ema", device=device)
    point["snapshot"] = snap["path"]
    if need_grid:
        rel = grid_path(study, arm, nimg)
        write_sample_grid(G, os.path.join(study["dir"], rel), tuple(s["grid"]), s["seed"], device)
        point["grid"] = rel
    if todo:
        log(f"[{arm}] evaluating {nimg / 1000:g} kimg: {', '.join(todo)}")
        t0 = time.time()
        try:
            results = evaluate_metrics(G, todo, dict(path=s["data"]), device, s["eval_batch"])
        except Exception as err:  # input problems (data, weights) are one line; bugs keep their traceback
            if _is_user_error(err):
                raise StudyError(f"arm '{arm}': evaluating {nimg / 1000:g} kimg failed: {err}") from None
            raise
        point["results"].update({k: float(v) for k, v in results.items()})
        point["metrics"] = sorted(set(point.get("metrics", [])) | set(todo))
        point["eval_seconds"] = round(point.get("eval_seconds", 0) + time.time() - t0, 2)
        log(f"[{arm}] {nimg / 1000:g} kimg: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(results.items())))
    save_study(study)


def run_study(study: dict, schedule: list, metric_names: list, log) -> None:
    """Round-robin over the points: every arm trains to the point (unless a snapshot is there) and is evaluated."""
    for nimg in schedule:
        for arm in study["arm_order"]:
            point = study["arms"][arm]["points"].get(str(nimg), {})
            done = all(m in point.get("metrics", []) for m in metric_names) and point.get("grid")
            if done and os.path.isfile(os.path.join(study["dir"], point["grid"])):
                continue
            if nimg not in scan_snapshots(study, arm):
                train_chunk(study, arm, nimg, log)
            evaluate_point(study, arm, nimg, metric_names, log)


# ---------------------------------------------------------------------------------------------
# Outputs: plot, side-by-side grids, JSON + markdown.


def _log_ticks(lo: float, hi: float) -> list:
    """Tick values for a log axis over [lo, hi]: 1, 2, 5 x 10^k (only powers of 10 when that gives >= 3), or powers of
    two when the range is too short for three of those (a study from 1 to 4 kimg gets 1, 2, 4)."""
    ticks = []
    for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo <= v <= hi:
                ticks.append((v, m == 1))
    major = [v for v, is_major in ticks if is_major]
    if len(major) >= 3:
        return major
    if len(ticks) >= 3:
        return [v for v, _ in ticks]
    powers_of_two = [2.0 ** k for k in range(math.floor(math.log2(lo)), math.ceil(math.log2(hi)) + 1)]
    return [v for v in powers_of_two if lo <= v <= hi] or [v for v, _ in ticks]


def _draw_curve_panel(draw, font, top: int, name: str, per_arm: dict, arms: list, colors: dict, baseline) -> None:
    """One panel of plot_curves: per_arm = {arm: [(nimg, value)]}, drawn at y offset `top`."""
    from metrics.summary import _fmt, _nice_ticks

    x0, x1, y0, y1 = _ML, PLOT_W - _MR, top + _MT + 14, top + PANEL_H - _MB
    pts = [p for arm_pts in per_arm.values() for p in arm_pts]
    direction = result_direction(name) if pts else "lower"
    draw.text((x0, top + 6), f"{name} ({direction} is better) vs images seen", fill=(0, 0, 0), font=font)
    lx = x0
    for arm in arms:
        draw.line([(lx, top + 26), (lx + 16, top + 26)], fill=colors[arm], width=3)
        draw.text((lx + 20, top + 20), arm, fill=(0, 0, 0), font=font)
        lx += 32 + draw.textlength(arm, font=font)
    draw.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    if not pts:
        return
    xs = [p[0] / 1000 for p in pts]
    ys = [p[1] for p in pts]
    xlo, xhi = min(xs) / 1.15, max(xs) * 1.15
    ylo, yhi = min(ys), max(ys)
    if yhi - ylo < 1e-12:
        ylo, yhi = ylo - max(abs(ylo) * 0.1, 1e-3), yhi + max(abs(yhi) * 0.1, 1e-3)
    pad = (yhi - ylo) * 0.08
    ylo, yhi = ylo - pad, yhi + pad

    def px(x):
        return x0 + (math.log(x) - math.log(xlo)) / (math.log(xhi) - math.log(xlo)) * (x1 - x0)

    def py(y):
        return y1 - (y - ylo) / (yhi - ylo) * (y1 - y0)

    for t in _nice_ticks(ylo, yhi):
        draw.line([(x0, py(t)), (x1, py(t))], fill=(225, 225, 225))
        label = _fmt(t)
        draw.text((x0 - 6 - draw.textlength(label, font=font), py(t) - 5), label, fill=(0, 0, 0), font=font)
    for t in _log_ticks(xlo, xhi):
        draw.line([(px(t), y0), (px(t), y1)], fill=(225, 225, 225))
        label = _fmt(t)
        draw.text((px(t) - draw.textlength(label, font=font) / 2, y1 + 6), label, fill=(0, 0, 0), font=font)
    draw.text(((x0 + x1) / 2 - 80, y1 + 22), "kimg (images seen / 1000, log scale)", fill=(0, 0, 0), font=font)
    draw.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    if baseline in per_arm and direction == "lower":
        best = best_point(per_arm[baseline])
        y = py(best[1])
        for xd in range(int(x0), int(x1), 8):  # dashed: the level the other arms must reach
            draw.line([(xd, y), (min(xd + 4, x1), y)], fill=colors.get(baseline, (0, 0, 0)))
    for arm in arms:
        coords = [(px(n / 1000), py(v)) for n, v in per_arm.get(arm, [])]
        if len(coords) > 1:
            draw.line(coords, fill=colors[arm], width=2)
        for x, y in coords:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colors[arm])


def plot_curves(study: dict, path: str) -> str:
    """One PLOT_W x PANEL_H panel per result, value vs kimg on a log axis, one line per arm, legend on top.

    Lower-is-better results get the baseline's best value as a dashed line. Returns `path`.
    """
    import PIL.Image
    import PIL.ImageDraw
    import PIL.ImageFont

    from torch_utils import util

    curves = result_curves(study)
    names = sorted(curves) or ["(no results yet)"]
    image = PIL.Image.new("RGB", (PLOT_W, PANEL_H * len(names)), (255, 255, 255))
    draw = PIL.ImageDraw.Draw(image)
    font = PIL.ImageFont.load_default()
    colors = {arm: ARM_COLORS[i % len(ARM_COLORS)] for i, arm in enumerate(study["arm_order"])}
    for idx, name in enumerate(names):
        if idx > 0:
            draw.line([(0, idx * PANEL_H), (PLOT_W, idx * PANEL_H)], fill=(160, 160, 160))
        _draw_curve_panel(draw, font, idx * PANEL_H, name, curves.get(name, {}), study["arm_order"], colors,
                          study["settings"].get("baseline"))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    util.atomic_write(path, lambda f: image.save(f, format="PNG"))
    return path


def grid_rows(study: dict, wanted_kimg=None) -> list:
    """Image counts for the side-by-side grids: those evaluated for every arm, either the ones nearest to
    `wanted_kimg` or (default) the last common one and the common ones nearest to 1/4 and 1/16 of it."""
    common = None
    for arm in study["arm_order"]:
        have = {int(n) for n, p in study["arms"][arm]["points"].items() if p.get("grid")}
        common = have if common is None else common & have
    common = sorted(common or [])
    if not common:
        return []
    if wanted_kimg:
        targets = [k * 1000 for k in wanted_kimg]
    else:
        targets = [common[-1] / 16, common[-1] / 4, common[-1]]
    rows = sorted({min(common, key=lambda n: abs(math.log(n) - math.log(max(t, 1)))) for t in targets})
    return rows


def compose_grids(study: dict, rows: list, path: str):
    """One row per image count, one column per arm: the arms' sample grids at equal images seen, labelled."""
    import PIL.Image
    import PIL.ImageDraw
    import PIL.ImageFont

    from torch_utils import util

    if not rows:
        return None
    cells = {}
    for nimg in rows:
        for arm in study["arm_order"]:
            cells[nimg, arm] = PIL.Image.open(os.path.join(study["dir"], study["arms"][arm]["points"][str(nimg)]
                                                           ["grid"])).convert("RGB")
    cw = max(im.width for im in cells.values())
    ch = max(im.height for im in cells.values())
    label_w, head_h, gap = 90, 20, 6
    arms = study["arm_order"]
    image = PIL.Image.new("RGB", (label_w + len(arms) * (cw + gap), head_h + len(rows) * (ch + gap)),
                          (255, 255, 255))
    draw = PIL.ImageDraw.Draw(image)
    font = PIL.ImageFont.load_default()
    for j, arm in enumerate(arms):
        draw.text((label_w + j * (cw + gap) + 4, 4), arm, fill=(0, 0, 0), font=font)
    for i, nimg in enumerate(rows):
        y = head_h + i * (ch + gap)
        draw.text((4, y + ch // 2 - 6), f"{nimg / 1000:g} kimg", fill=(0, 0, 0), font=font)
        for j, arm in enumerate(arms):
            image.paste(cells[nimg, arm], (label_w + j * (cw + gap), y))
    util.atomic_write(path, lambda f: image.save(f, format="PNG"))
    return path


def write_outputs(study: dict, docs_dir: str, grid_kimg=None) -> dict:
    """docs/convergence_NAME.{json,png,md} and _grids.png from the recorded study. Returns their paths."""
    from torch_utils import util

    name = study["name"]
    os.makedirs(docs_dir, exist_ok=True)
    base = os.path.join(docs_dir, f"convergence_{name}")
    rows = reach_table(study, study["settings"]["baseline"]) if study["settings"]["baseline"] in study["arms"] \
        else []
    grid_nimgs = grid_rows(study, grid_kimg)
    paths = dict(json=base + ".json", plot=base + ".png", markdown=base + ".md",
                 grids=base + "_grids.png" if grid_nimgs else None)
    plot_curves(study, paths["plot"])
    if grid_nimgs:
        compose_grids(study, grid_nimgs, paths["grids"])
    table = markdown_table(rows)
    doc = {k: v for k, v in study.items() if k != "dir" and not k.startswith("_")}
    doc = dict(doc, reach=rows, grid_nimg=grid_nimgs, table_markdown=table)
    text = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    util.atomic_write(paths["json"], lambda f: f.write(text))
    md = [f"# Convergence study '{name}'", "", describe_settings(study), "", table]
    if grid_nimgs:
        md += [f"![sample grids at equal images seen]({os.path.basename(paths['grids'])})", ""]
    md += [f"![metrics vs images seen]({os.path.basename(paths['plot'])})", ""]
    md_bytes = "\n".join(md).encode("utf-8")
    util.atomic_write(paths["markdown"], lambda f: f.write(md_bytes))
    return paths


def describe_settings(study: dict) -> str:
    s = study["settings"]
    arms = "; ".join(f"`{a}`: `{shlex.join(study['arms'][a]['args'])}`" for a in study["arm_order"])
    data = os.path.relpath(s["data"], REPO) if os.path.abspath(s["data"]).startswith(REPO + os.sep) else s["data"]
    return (f"--cfg={s['cfg']} on `{data}`, batch {s['batch']}, seed {s['seed']}, EMA half-life "
            f"{s['ema_kimg']:g} kimg (ramp-up {s['ema_rampup']:g}), mirror {int(s['mirror'])}, widths: ngf "
            f"{s['ngf']}, cbase {s['cbase']}, cmax {s['cmax']}, map-depth {s['map_depth']}, feat-res "
            f"{s['feat_res']}; extra train.py options `{s['train_args']}`; metrics {', '.join(s['metrics'])}; "
            f"evaluated at {len(s['schedule'])} points from {s['schedule'][0] / 1000:g} to "
            f"{s['schedule'][-1] / 1000:g} kimg. Arms: {arms}. Baseline: `{s['baseline']}`.")


# ---------------------------------------------------------------------------------------------
# CLI.


def _fail(option: str, message: str):
    raise click.BadParameter(message, param_hint=f"'--{option}'")


@click.command(context_settings=dict(max_content_width=120, help_option_names=["-h", "--help"]))
@click.option("--cfg", type=click.Choice(["fastgan", "fastgan_lite", "stylegan2"]), required=True,
              help="Generator of every arm")
@click.option("--data", default=os.path.join(REPO, "data", "fluent-emoji-64.zip"), show_default=True,
              metavar="PATH", help="Training data (zip or folder)")
@click.option("--name", default=None, metavar="NAME", help="Study name: docs/convergence_NAME.*  [default: --cfg]")
@click.option("--study-dir", default=None, metavar="DIR", help="Where runs and study.json go  [default: "
              "runs/convergence-NAME]")
@click.option("--docs-dir", default=os.path.join(REPO, "docs"), show_default=True, metavar="DIR",
              help="Where the JSON, plot, grids and table go")
@click.option("--arm", "arm_specs", multiple=True, metavar="NAME=OPTIONS",
              help="An arm: name and its own train.py options (repeatable)  [default: projected=--loss=projected, "
              "stylegan2=--loss=stylegan2]")
@click.option("--baseline", default="stylegan2", show_default=True, metavar="ARM",
              help="The arm whose best FID/KID the others must reach")
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True, metavar="INT")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="INT")
@click.option("--kimg", type=float, default=32, show_default=True, metavar="FLOAT", help="Last evaluation point")
@click.option("--first-kimg", type=float, default=0.5, show_default=True, metavar="FLOAT",
              help="First evaluation point")
@click.option("--per-octave", type=click.IntRange(min=1), default=2, show_default=True, metavar="INT",
              help="Evaluation points per doubling of the images seen")
@click.option("--ema-kimg", type=click.FloatRange(min=0), default=1.0, show_default=True, metavar="FLOAT",
              help="G EMA half-life of every arm")
@click.option("--ema-rampup", type=click.FloatRange(min=0), default=0.05, show_default=True, metavar="FLOAT",
              help="EMA ramp-up of every arm")
@click.option("--mirror", type=bool, default=True, show_default=True, metavar="BOOL", help="Dataset x-flips")
@click.option("--ngf", type=click.IntRange(min=1), default=32, show_default=True, metavar="INT",
              help="FastGAN width (FastGAN cfgs)")
@click.option("--cbase", type=click.IntRange(min=1), default=8192, show_default=True, metavar="INT",
              help="StyleGAN2 channel base (StyleGAN2 G and the baseline D)")
@click.option("--cmax", type=click.IntRange(min=1), default=256, show_default=True, metavar="INT",
              help="StyleGAN2 max channels")
@click.option("--map-depth", type=click.IntRange(min=1), default=2, show_default=True, metavar="INT",
              help="StyleGAN2 G mapping layers (--cfg=stylegan2; the same in every arm)")
@click.option("--feat-res", type=int, default=64, show_default=True, metavar="INT",
              help="Projected D feature-network input size (projected arms; 0 = the backbone's own)")
@click.option("--train-args", default="", metavar="OPTIONS", help="More train.py options for every arm")
@click.option("--metrics", "metric_list", default=DEFAULT_METRICS, show_default=True, metavar="A,B,C",
              help="Metrics at every point (see calc_metrics.py)")
@click.option("--grid", "grid_spec", default="4x4", show_default=True, metavar="COLSxROWS",
              help="Sample grid per arm and point")
@click.option("--grid-kimg", default=None, metavar="K,K,...",
              help="Rows of the side-by-side grids  [default: the last common point, ~1/4 and ~1/16 of it]")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Training and evaluation device")
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True, metavar="INT",
              help="train.py DataLoader workers")
@click.option("--eval-batch", type=click.IntRange(min=1), default=64, show_default=True, metavar="INT")
@click.option("--report-only", is_flag=True, help="Only rewrite the docs outputs from study.json")
@click.option("--verbose/--quiet", default=True, show_default=True, help="Show train.py's output")
def main(cfg, data, name, study_dir, docs_dir, arm_specs, baseline, batch, seed, kimg, first_kimg, per_octave,
         ema_kimg, ema_rampup, mirror, ngf, cbase, cmax, map_depth, feat_res, train_args, metric_list, grid_spec,
         grid_kimg, device, workers, eval_batch, report_only, verbose):
    """Train several arms alike and record quality vs images seen (see the module docstring)."""
    name = name or cfg
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        _fail("name", f"'{name}' may only contain letters, digits, _ . -")
    study_dir = os.path.abspath(study_dir or os.path.join("runs", f"convergence-{name}"))
    arms = []
    for spec in arm_specs or DEFAULT_ARMS:
        try:
            arm = parse_arm(spec)
        except ValueError as err:
            _fail("arm", str(err))
        if arm[0] in [a for a, _ in arms]:
            _fail("arm", f"two arms are named '{arm[0]}'")
        arms.append(arm)
    if baseline not in [a for a, _ in arms]:
        _fail("baseline", f"'{baseline}' is not an arm ({', '.join(a for a, _ in arms)})")
    try:
        schedule = eval_schedule(first_kimg, kimg, per_octave, batch)
    except ValueError as err:
        _fail("first-kimg", str(err))
    metric_names = [m.strip() for m in metric_list.split(",") if m.strip()]
    if not metric_names:
        _fail("metrics", "give at least one metric")
    from metrics import metric_main

    for m in metric_names:
        if not metric_main.is_valid_metric(m):
            _fail("metrics", f"unknown metric '{m}' (e.g. {DEFAULT_METRICS})")
    from torch_utils import image_io

    try:
        grid = image_io.parse_grid(grid_spec)
    except ValueError as err:
        _fail("grid", str(err))
    try:
        grid_kimg = [float(v) for v in grid_kimg.split(",")] if grid_kimg else None
    except ValueError:
        _fail("grid-kimg", f"'{grid_kimg}' is not a comma-separated list of numbers")
    if feat_res and (feat_res < 32 or feat_res % 32):
        _fail("feat-res", f"must be 0 or a multiple of 32 >= 32, got {feat_res}")
    if not report_only and not os.path.exists(data):
        _fail("data", f"'{data}' does not exist")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            _fail("device", "CUDA is not available")

    settings = dict(cfg=cfg, data=os.path.abspath(data), batch=batch, seed=seed, ema_kimg=ema_kimg,
                    ema_rampup=ema_rampup, mirror=bool(mirror), ngf=ngf, cbase=cbase, cmax=cmax, map_depth=map_depth,
                    feat_res=feat_res or None, train_args=train_args, metrics=metric_names, schedule=schedule,
                    kimg=kimg, first_kimg=first_kimg, per_octave=per_octave, baseline=baseline, grid=list(grid),
                    device=device, eval_device=device, workers=workers, eval_batch=eval_batch)
    old = load_study(study_dir)
    if report_only:
        if old is None:
            raise StudyError(f"--report-only: no study.json in '{study_dir}'")
        old["settings"]["baseline"] = baseline
        if baseline not in old["arms"]:
            _fail("baseline", f"'{baseline}' is not an arm of the recorded study ({', '.join(old['arm_order'])})")
        paths = write_outputs(old, docs_dir, grid_kimg)
        _print_paths(paths)
        return
    study = merge_study(old, settings, arms, study_dir, name)
    study["_verbose"] = verbose
    log = lambda msg: click.echo(f"[{time.strftime('%H:%M:%S')}] {msg}")
    for arm, _ in arms:
        if not study["arms"][arm]["points"]:
            validate_arm(study, arm)
    save_study(study)
    log(f"study '{name}' in {study_dir}: arms {', '.join(study['arm_order'])}; points (kimg) "
        f"{', '.join(f'{n / 1000:g}' for n in schedule)}")
    try:
        run_study(study, schedule, metric_names, log)
    finally:
        save_study(study)  # whatever was trained and evaluated stays recorded, even on Ctrl-C
    paths = write_outputs(study, docs_dir, grid_kimg)
    click.echo(markdown_table(reach_table(study, baseline)))
    _print_paths(paths)


def _print_paths(paths):
    for kind in ("json", "plot", "grids", "markdown"):
        if paths.get(kind):
            click.echo(f"Wrote {paths[kind]}")


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
