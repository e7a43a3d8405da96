#!/usr/bin/env python
"""Parity study: the official Projected GAN code vs this repository, same generator, data, batch, learning rates,
EMA, seed and images seen, every snapshot evaluated by this repository's metric code.

    # FastGAN-lite at 128x128 (the official FastGAN needs >= 128), two seeds per arm, 16 kimg:
    python benchmarks/parity_official.py --official=/path/to/projected_gan --cfg=fastgan_lite \\
        --data=emoji128.zip --kimg=16 --seeds=0,1
    # StyleGAN2 generator at 64x64 (the collapse question), 8 kimg:
    python benchmarks/parity_official.py --official=/path/to/projected_gan --cfg=stylegan2 \\
        --data=data/fluent-emoji-64.zip --kimg=8 --seeds=0,1 --cbase=8192 --cmax=256
    # Tables, plot and grids again from what is recorded:
    python benchmarks/parity_official.py --cfg=fastgan_lite --report-only

Arms (`--arms`, in this order):
  official      their train.py through benchmarks/official_harness.py (their loop, D, loss, blur and EMA
                settings; the shims are listed there and in docs/parity_official.md).
  ours_equal    train.py with the same generator (--g-arch=official), the same feature-network input (224, their
                `interp224`), no blur (theirs has none), their EMA ramp-up (0.05), their effective D learning rate
                (x 16/17: their loop builds D's Adam for a lazy-regularisation phase their loss leaves empty) and
                --reuse-fakes=0, so that G runs twice per step as in their loop: equal work per image.
  ours_default  train.py with the same generator and this repository's loss defaults (--reuse-fakes=1, blur
                sigma 2 fading over batch*200/32 kimg).
Both of our arms pin the D design (--csm-layout=official, separable mini-Ds for StyleGAN2 only, as in the official
configs). An ablation is an extra arm (--extra-arm=NAME=OPTIONS): the FastGAN-lite runs recorded with the earlier
compact layout are the extra arm 'ours_equal_compact' (ours_equal's options + --csm-layout=compact), the StyleGAN2
ones 'ours_equal_compact' (+ --csm-layout=compact --separable=strided).
Both codebases print and snapshot at the same image counts (tick 0 after the first step, then every 1,000 images:
batch + k*ceil(1000/batch)*batch), so the arms are compared at identical counts. Each run is one process; every
run and evaluation is recorded in STUDY_DIR/study.json as it completes, and a rerun continues where it stopped
(finished runs and recorded evaluations are kept; a run that did not finish is trained again from zero). One runner
per STUDY_DIR: a second one is refused while the first lives. docs/parity_official_CFG.{json,md,png} and _grids.png
are written from it.
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

from benchmarks import convergence  # noqa: E402  (plots, grids and metric evaluation of the convergence study)

STUDY_FORMAT = "projected-gan-toolkit/parity-study"
ARMS = ("official", "ours_equal", "ours_default")
SNAPSHOT_RE = re.compile(r"network-snapshot-(\d{6})\.(\d{3})\.(pkl|pt)$")


def tick_points(batch: int, total_kimg: float) -> list:
    """Image counts at which both loops end a tick with --tick=1: batch, then every ceil(1000/batch) batches, then
    the first count at or past total_kimg*1000 (both loops stop there)."""
    step = math.ceil(1000 / batch) * batch
    total = math.ceil(round(total_kimg * 1000) / batch) * batch
    points, nimg = [], batch
    while nimg < total:
        points.append(nimg)
        nimg += step
    return points + [total]


def eval_points(batch: int, total_kimg: float, kimgs) -> list:
    """The tick points nearest to the wanted kimg values (and always the last one)."""
    ticks = tick_points(batch, total_kimg)
    wanted = {min(ticks, key=lambda n: abs(n - k * 1000)) for k in kimgs if k * 1000 <= ticks[-1]}
    return sorted(wanted | {ticks[-1]})


def arm_args(arm: str, s: dict, seed: int, outdir: str) -> list:
    """The command line of one run."""
    kimg = math.ceil(s["kimg"]) if arm == "official" else s["kimg"]  # their CLI takes whole kimg only
    common = [f"--outdir={outdir}", f"--cfg={s['cfg']}", f"--data={s['data']}", "--gpus=1", f"--batch={s['batch']}",
              f"--kimg={kimg:g}", "--tick=1", "--snap=1", f"--mirror={int(s['mirror'])}", "--metrics=none",
              "--workers=1", f"--seed={seed}"]
    if s["cfg"] == "stylegan2":
        common += [f"--cbase={s['cbase']}", f"--cmax={s['cmax']}"]
    if arm == "official":
        harness = [sys.executable, os.path.join(REPO, "benchmarks", "official_harness.py"), "train",
                   f"--official={s['official']}", "--no-image-snapshots"]
        if s["cfg"] != "stylegan2":
            harness.append(f"--ngf={s['ngf']}")
        return harness + ["--"] + common
    ours = [sys.executable, os.path.join(REPO, "train.py")] + common
    if arm in s.get("extra_arms", {}):  # an ablation: train.py with exactly these options besides the shared ones
        return ours + ["--loss=projected", "--img-snap=1000000", "--grid=4x4"] + shlex.split(s["extra_arms"][arm])
    ours += ["--loss=projected", "--g-arch=official", "--ema-rampup=0.05", "--img-snap=1000000", "--grid=4x4"]
    if s["cfg"] == "stylegan2":
        ours.append("--map-depth=2")  # the official StyleGAN2 config
    else:
        ours.append(f"--ngf={s['ngf']}")
    # The D design is pinned, not left to the defaults, so that every seed of an arm trains the same D even when a
    # default changes (the runs recorded before 2026-12-06 used the compact layout: arm 'ours_equal_compact').
    ours += ["--csm-layout=official", f"--separable={int(s['cfg'] == 'stylegan2')}"]
    if arm == "ours_equal":
        # Their loop keeps StyleGAN's D_reg_interval=16 and their loss skips the Dreg phase, so their D's Adam runs
        # at lr x 16/17 (and betas ** (16/17): beta2 0.9906 instead of 0.99, which train.py does not expose).
        base_lr = 0.002 if s["cfg"] == "stylegan2" else 0.0002
        ours += ["--reuse-fakes=0", "--blur-sigma=0", f"--dlr={base_lr * 16 / 17:.9g}"]
    return ours + shlex.split(s.get("extra", {}).get(arm, ""))


def run_key(arm: str, seed: int) -> str:
    return f"{arm}/s{seed}"


def find_snapshots(run_dir: str) -> dict:
    """{nimg: path} of the network snapshots (.pkl of the official loop, .pt of ours) under run_dir."""
    found = {}
    for root, _, files in os.walk(run_dir):
        for name in files:
            m = SNAPSHOT_RE.fullmatch(name)
            if m:
                found[int(m.group(1)) * 1000 + int(m.group(2))] = os.path.join(root, name)
    return found


def sec_per_kimg(run_dir: str):
    """Median of the sec/kimg of the ticks after the first (both loops print it on every tick line)."""
    values = []
    for root, _, files in os.walk(run_dir):
        if "log.txt" in files:
            with open(os.path.join(root, "log.txt"), errors="replace") as f:
                for line in f:
                    m = re.search(r"^tick (\d+)\s.*sec/kimg\s+([\d.]+)", line)
                    if m and int(m.group(1)) > 0:
                        values.append(float(m.group(2)))
    return sorted(values)[len(values) // 2] if values else None


def save(study: dict) -> None:
    from torch_utils import util

    text = (json.dumps({k: v for k, v in study.items() if not k.startswith("_")}, indent=2) + "\n").encode()
    util.atomic_write(os.path.join(study["_dir"], "study.json"), lambda f: f.write(text))


def run_evaluated(study: dict, key: str) -> bool:
    """True when every evaluation point of the run has all its metrics recorded (nothing left to train for)."""
    s, run = study["settings"], study["runs"].get(key)
    if run is None:
        return False
    for nimg in s["eval_points"]:
        point = run["points"].get(str(nimg), {})
        wanted = s["final_metrics"] if nimg == s["eval_points"][-1] else s["metrics"]
        if not set(wanted) <= set(point.get("metrics", [])):
            return False
    return True


def lock_study(study_dir: str):
    """Hold the study folder for this process (released when it exits, however it exits).

    A second runner on the same folder would take the first one's training run for an interrupted one and delete
    it under the running process; it is refused instead. Returns the open lock file: keep it open."""
    os.makedirs(study_dir, exist_ok=True)
    path = os.path.join(study_dir, ".runner.lock")
    f = open(path, "a+")  # noqa: SIM115 (the lock lives as long as this file stays open)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): unguarded, as before
        return f
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        owner = f.read().strip() or "unknown"
        f.close()
        raise click.ClickException(f"--study-dir: another parity_official.py (pid {owner}) is running on "
                                   f"'{study_dir}'; wait for it to finish or use another --study-dir") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def wait_for_last_snapshot(proc, run_dir: str, last_nimg: int, poll: float = 10.0) -> bool:
    """Wait for the run to end; stop it once the snapshot of the last point is written completely (size unchanged
    over one poll). The official CLI only takes whole kimg, so it would train on to the next one for nothing.
    Returns whether the run was stopped here."""
    size = None
    while proc.poll() is None:
        time.sleep(poll)
        path = find_snapshots(run_dir).get(last_nimg)
        new_size = os.path.getsize(path) if path and os.path.isfile(path) else None
        if new_size and new_size == size:
            proc.terminate()
            proc.wait()
            return True
        size = new_size
    return False


def train_run(study: dict, arm: str, seed: int, log) -> None:
    s = study["settings"]
    key = run_key(arm, seed)
    run = study["runs"].setdefault(key, dict(arm=arm, seed=seed, points={}))
    outdir = os.path.join(study["_dir"], arm, f"s{seed}")
    run["dir"] = os.path.relpath(outdir, study["_dir"])
    if run_evaluated(study, key) or s["eval_points"][-1] in find_snapshots(outdir):
        return
    if os.path.isdir(outdir) and os.listdir(outdir):
        # An interrupted run: both loops would restart from zero anyway (the official one cannot resume exactly).
        import shutil

        shutil.rmtree(outdir)
    os.makedirs(outdir, exist_ok=True)
    args = arm_args(arm, s, seed, outdir)
    run["command"] = shlex.join(args)
    log(f"[{key}] training: {run['command']}")
    t0 = time.time()
    with open(os.path.join(study["_dir"], arm, f"s{seed}.log"), "w") as out:
        proc = subprocess.Popen(args, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        # Only the official arm trains past the last point (its --kimg is rounded up); ours ends there by itself.
        stopped = wait_for_last_snapshot(proc, outdir, s["eval_points"][-1]) if arm == "official" else False
        proc.wait()
    run["train_seconds"] = round(time.time() - t0, 1)
    if proc.returncode != 0 and not stopped:
        raise click.ClickException(f"[{key}] training failed (exit status {proc.returncode}); see "
                                   f"{os.path.join(study['_dir'], arm, f's{seed}.log')}")
    run["sec_per_kimg"] = sec_per_kimg(outdir)
    save(study)


def evaluate_run(study: dict, arm: str, seed: int, log) -> None:
    """Evaluate the run's snapshots at the study's points with the metrics not yet recorded; write the sample grid
    of the last point; delete snapshots that no point needs (the official ones are 200+ MB each)."""
    import torch

    from training import snapshot

    s = study["settings"]
    key = run_key(arm, seed)
    run = study["runs"][key]
    if run_evaluated(study, key):
        return
    outdir = os.path.join(study["_dir"], run["dir"])
    snaps = find_snapshots(outdir)
    for nimg in s["eval_points"]:
        point = run["points"].setdefault(str(nimg), dict(nimg=nimg, results={}, metrics=[]))
        metrics = s["final_metrics"] if nimg == s["eval_points"][-1] else s["metrics"]
        todo = [m for m in metrics if m not in point["metrics"]]
        grid = os.path.join(arm, "grids", f"s{seed}-{nimg // 1000:06d}.{nimg % 1000:03d}.png")
        need_grid = not os.path.isfile(os.path.join(study["_dir"], grid))
        if not todo and not need_grid:
            continue
        if nimg not in snaps:
            raise click.ClickException(f"[{key}] no snapshot at {nimg} images under {outdir}")
        G = snapshot.load_generator(snaps[nimg], which="G_ema", device=torch.device("cpu"))
        if need_grid:
            convergence.write_sample_grid(G, os.path.join(study["_dir"], grid), (4, 4), 0, torch.device("cpu"))
            point["grid"] = grid
        if todo:
            log(f"[{key}] evaluating {nimg / 1000:g} kimg: {', '.join(todo)}")
            t0 = time.time()
            from metrics import metric_main

            out = metric_main.calc_metrics(todo, G=G, dataset_kwargs=dict(path=s["data"]), batch_size=32,
                                           G_kwargs=dict(noise_mode="const"), fd_method="eigh")
            for r in out:
                point["results"].update({k: float(v) for k, v in r["results"].items()})
            point["metrics"] = sorted(set(point["metrics"]) | set(todo))
            point["eval_seconds"] = round(point.get("eval_seconds", 0) + time.time() - t0, 1)
            log(f"[{key}] {nimg / 1000:g} kimg: " + ", ".join(f"{k} {v:.4g}" for k, v in
                                                               sorted(point["results"].items())))
        save(study)
    keep = set(s["eval_points"])
    for nimg, path in snaps.items():
        if nimg not in keep:
            os.remove(path)


# ---------------------------------------------------------------------------------------------
# Report.


def arm_order(study: dict) -> list:
    """The arms of the study: the three standard ones, then the ablations, in the order they were added."""
    extra = list((study.get("settings") or {}).get("extra_arms", {}))
    return [a for a in list(ARMS) + extra if any(r["arm"] == a for r in study["runs"].values())]


def summary_rows(study: dict) -> list:
    """[dict(arm, nimg, result, mean, lo, hi, n)] over the seeds of each arm."""
    rows = []
    values = {}
    for run in study["runs"].values():
        for point in run["points"].values():
            for result, value in point["results"].items():
                values.setdefault((run["arm"], point["nimg"], result), []).append(value)
    order = arm_order(study)
    for (arm, nimg, result), vals in sorted(values.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1],
                                                                              kv[0][2])):
        rows.append(dict(arm=arm, nimg=nimg, result=result, mean=sum(vals) / len(vals), lo=min(vals), hi=max(vals),
                         n=len(vals), values=vals))
    return rows


def markdown_table(rows: list, arms: list) -> str:
    """One row per (images seen, metric), one column per arm: mean [min, max] over seeds (n)."""
    cells = {(r["nimg"], r["result"], r["arm"]): r for r in rows}
    keys = sorted({(r["nimg"], r["result"]) for r in rows})
    out = ["| kimg | metric | " + " | ".join(arms) + " |", "| --- | --- |" + " --- |" * len(arms)]
    for nimg, result in keys:
        line = [f"{nimg / 1000:g}", result]
        for arm in arms:
            r = cells.get((nimg, result, arm))
            if r is None:
                line.append("-")
            elif r["n"] == 1:
                line.append(f"{r['mean']:.4g} (1 seed)")
            else:
                line.append(f"{r['mean']:.4g} [{r['lo']:.4g}, {r['hi']:.4g}]")
        out.append("| " + " | ".join(line) + " |")
    return "\n".join(out) + "\n"


def write_report(study: dict, docs_dir: str) -> dict:
    from torch_utils import util

    name = f"parity_official_{study['settings']['cfg']}"
    base = os.path.join(docs_dir, name)
    arms = arm_order(study)
    rows = summary_rows(study)
    # Mean curves as a convergence 'study' (one line per arm) for its plot.
    mean_study = dict(arm_order=arms, settings=dict(baseline="official"), arms={a: dict(points={}) for a in arms})
    for r in rows:
        pt = mean_study["arms"][r["arm"]]["points"].setdefault(str(r["nimg"]), dict(nimg=r["nimg"], results={}))
        pt["results"][r["result"]] = r["mean"]
    paths = dict(json=base + ".json", plot=base + ".png", markdown=base + ".md", grids=base + "_grids.png")
    convergence.plot_curves(mean_study, paths["plot"])
    # Side-by-side grids at the last point: one column per arm x seed.
    last = study["settings"]["eval_points"][-1]
    grid_study = dict(dir=study["_dir"], arm_order=[], arms={})
    for key, run in sorted(study["runs"].items(), key=lambda kv: (arms.index(kv[1]["arm"]), kv[1]["seed"])):
        point = run["points"].get(str(last), {})
        if point.get("grid") and os.path.isfile(os.path.join(study["_dir"], point["grid"])):
            grid_study["arm_order"].append(key)
            grid_study["arms"][key] = dict(points={str(last): dict(grid=point["grid"])})
    if grid_study["arm_order"]:
        convergence.compose_grids(grid_study, [last], paths["grids"])
    else:
        paths["grids"] = None
    table = markdown_table(rows, arms)
    doc = {k: v for k, v in study.items() if not k.startswith("_")}
    doc = dict(doc, summary=rows, table_markdown=table)
    text = (json.dumps(doc, indent=2) + "\n").encode()
    util.atomic_write(paths["json"], lambda f: f.write(text))
    s = study["settings"]
    md = [f"# Parity study '{s['cfg']}': official Projected GAN code vs this repository", "",
          f"`{s['cfg']}` on `{os.path.basename(s['data'])}`, batch {s['batch']}, {s['kimg']:g} kimg, seeds "
          f"{', '.join(str(x) for x in s['seeds'])}; metrics {', '.join(s['metrics'])} (last point: "
          f"{', '.join(s['final_metrics'])}), all computed by this repository's metric code on each arm's G_ema "
          f"(the official snapshots imported with training/pickle_import.py). Cells: mean [min, max] over seeds.", "",
          table, "", "Runs:", ""]
    for key, run in sorted(study["runs"].items()):
        spk = run.get("sec_per_kimg")
        line = f"- `{key}`: {spk:g} sec/kimg (median tick)" if spk else f"- `{key}`"
        if run.get("command"):
            line += f", `{run['command']}`"
        if run.get("note"):
            line += f". {run['note']}"
        md.append(line)
    md.append("")
    if paths["grids"]:
        md += [f"![samples at {last / 1000:g} kimg, one column per arm and seed]({os.path.basename(paths['grids'])})",
               ""]
    md += [f"![metrics vs images seen (mean over seeds)]({os.path.basename(paths['plot'])})", ""]
    data = "\n".join(md).encode()
    util.atomic_write(paths["markdown"], lambda f: f.write(data))
    return paths


# ---------------------------------------------------------------------------------------------


@click.command(context_settings=dict(max_content_width=120))
@click.option("--official", default=None, metavar="DIR", help="Root of an autonomousvision/projected_gan checkout")
@click.option("--cfg", type=click.Choice(["fastgan_lite", "fastgan", "stylegan2"]), required=True)
@click.option("--data", default=None, metavar="PATH", help="Training data (zip)")
@click.option("--study-dir", default=None, metavar="DIR", help="[default: runs/parity-CFG]")
@click.option("--docs-dir", default=os.path.join(REPO, "docs"), show_default=True, metavar="DIR")
@click.option("--arms", default=",".join(ARMS), show_default=True, help="Arms to run, in order")
@click.option("--extra-arm", "extra_arm", multiple=True, metavar="NAME=OPTIONS",
              help="An ablation arm: this repo's train.py with these options (besides data, batch, kimg, seed, "
                   "snapshots); name it in --arms too")
@click.option("--seeds", default="0,1", show_default=True, help="Seeds, run in this order (seed-major)")
@click.option("--batch", type=int, default=16, show_default=True)
@click.option("--kimg", type=float, default=16, show_default=True)
@click.option("--ngf", type=int, default=32, show_default=True, help="FastGAN width (their default 128)")
@click.option("--cbase", type=int, default=8192, show_default=True, help="StyleGAN2 channel base")
@click.option("--cmax", type=int, default=256, show_default=True, help="StyleGAN2 max channels")
@click.option("--mirror", type=bool, default=True, show_default=True)
@click.option("--points", default="2,4,8,16", show_default=True, help="kimg of the evaluated snapshots")
@click.option("--metrics", default="fid2k_full,kid2k_full", show_default=True)
@click.option("--final-metrics", default="fid5k_full,kid5k_full,pr1k3_full", show_default=True,
              help="Metrics of the last point")
@click.option("--report-only", is_flag=True)
def main(official, cfg, data, study_dir, docs_dir, arms, extra_arm, seeds, batch, kimg, ngf, cbase, cmax, mirror,
         points, metrics, final_metrics, report_only):
    """Train the arms seed by seed, evaluate each run when it finishes, and write the report."""
    study_dir = os.path.abspath(study_dir or os.path.join("runs", f"parity-{cfg}"))
    path = os.path.join(study_dir, "study.json")
    study = None
    if os.path.isfile(path):
        with open(path) as f:
            study = json.load(f)
        if study.get("format") != STUDY_FORMAT:
            raise click.ClickException(f"'{path}' is not a parity study")
    recorded = os.path.join(docs_dir, f"parity_official_{cfg}.json")
    if study is None and os.path.isfile(recorded):
        # A new machine: the runs recorded in docs/ (by an earlier session) count as done, only the rest is trained.
        with open(recorded) as f:
            doc = json.load(f)
        study = {k: doc[k] for k in ("format", "settings", "runs") if k in doc}
    study = study or dict(format=STUDY_FORMAT, runs={})
    study["_dir"] = study_dir
    if report_only:
        if not study["runs"]:
            raise click.ClickException(f"no study in {study_dir}")
        for p in write_report(study, docs_dir).values():
            if p:
                click.echo(f"Wrote {p}")
        return
    if not official or not data:
        raise click.UsageError("--official and --data are required (except with --report-only)")
    lock = lock_study(study_dir)  # noqa: F841 (held until the process exits)
    arm_list = [a.strip() for a in arms.split(",") if a.strip()]
    extra_arms = dict((study.get("settings") or {}).get("extra_arms", {}))
    for spec in extra_arm:
        name, sep, options = spec.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_]+", name) or name in ARMS:
            raise click.BadParameter(f"'{spec}' is not NAME=OPTIONS with a new name", param_hint="--extra-arm")
        if name in extra_arms and extra_arms[name] != options:
            raise click.BadParameter(f"arm '{name}' was recorded with options {extra_arms[name]!r}; give it another "
                                     f"name", param_hint="--extra-arm")
        extra_arms[name] = options
    for a in arm_list:
        if a not in ARMS and a not in extra_arms:
            raise click.BadParameter(f"unknown arm '{a}' (known: {', '.join(list(ARMS) + list(extra_arms))})",
                                     param_hint="--arms")
    seed_list = [int(x) for x in seeds.split(",")]
    settings = dict(cfg=cfg, data=os.path.abspath(data), official=os.path.abspath(official), batch=batch, kimg=kimg,
                    ngf=ngf, cbase=cbase, cmax=cmax, mirror=mirror,
                    eval_points=eval_points(batch, kimg, [float(k) for k in points.split(",")]),
                    metrics=[m for m in metrics.split(",") if m], final_metrics=[m for m in final_metrics.split(",")
                                                                                 if m], extra_arms=extra_arms)
    old = study.get("settings")
    if old:
        for k in ("cfg", "data", "batch", "kimg", "ngf", "cbase", "cmax", "mirror"):
            if old.get(k) != settings[k]:
                raise click.ClickException(f"--{k}: the study in {study_dir} used {old.get(k)!r}, now "
                                           f"{settings[k]!r}; use another --study-dir")
        settings["seeds"] = sorted(set(old.get("seeds", [])) | set(seed_list))
    else:
        settings["seeds"] = seed_list
    study["settings"] = settings
    os.makedirs(study_dir, exist_ok=True)
    save(study)
    log = lambda msg: click.echo(f"[{time.strftime('%H:%M:%S')}] {msg}", err=False)  # noqa: E731
    for seed in seed_list:
        for arm in arm_list:
            train_run(study, arm, seed, log)
            evaluate_run(study, arm, seed, log)
            write_report(study, docs_dir)
    for p in write_report(study, docs_dir).values():
        if p:
            click.echo(f"Wrote {p}")


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
