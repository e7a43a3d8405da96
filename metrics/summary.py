"""Run-directory summaries of the metric-*.jsonl files: best-snapshot pointers and a plot.

    update_run_summaries(run_dir)   # after each metric evaluation (training loop, calc_metrics.py)
    inherit_metric_history(src, run_dir, kimg)  # a resumed run starts with its predecessor's lines (training loop)

writes, from *all* lines of run_dir/metric-*.jsonl (so the result does not depend on the order of the lines,
and survives a run resumed into the same directory):

    best-<result>.json  {"metric", "result", "value", "kimg", "snapshot_pkl", "direction"} of the best snapshot
                        for each result name (lower is better for FID/FD/KID, higher for IS, precision, recall);
                        gen_images.py, gen_video.py and calc_metrics.py accept it as --network
    metrics.png         one panel per result name, value vs kimg, the best point marked (drawn with Pillow)

Both are written to a temporary file and renamed. Unreadable lines (e.g. half-written by a crash) are skipped
with a warning; non-finite values are ignored.
"""

import glob
import json
import math
import os
import re
import warnings
from typing import Dict, List, Optional

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from torch_utils import util
from torch_utils.snapshot_naming import parse_snapshot_name

PANEL_W, PANEL_H = 480, 300
_MARGIN_L, _MARGIN_R, _MARGIN_T, _MARGIN_B = 64, 16, 28, 36
LINE_COLOR = (31, 119, 180)
BEST_COLOR = (214, 39, 40)
AXIS_COLOR = (0, 0, 0)
GRID_COLOR = (225, 225, 225)


def result_direction(result_name: str) -> str:
    """'lower' or 'higher': which way `result_name` improves.

    Higher: Inception Score (is*, e.g. is50k_mean), precision, recall (e.g. pr50k3_full_precision).
    Lower: FID / Fréchet distances (fid*, fd_*), KID (kid*), an IS standard deviation (is*_std: the spread
    over splits, not a quality score), and anything unknown.
    """
    name = result_name.lower()
    if name.endswith("_std"):
        return "lower"
    if "precision" in name or "recall" in name or "inception_score" in name or re.match(r"is\d", name):
        return "higher"
    return "lower"


# ---------------------------------------------------------------------------------------------
# Reading.


def _line_kimg(line: dict) -> Optional[float]:
    kimg = line.get("kimg")
    if isinstance(kimg, (int, float)) and not isinstance(kimg, bool) and math.isfinite(kimg):
        return float(kimg)
    snap = line.get("snapshot_pkl")
    if isinstance(snap, str):  # older lines: the snapshot name tells the kimg (exactly for fine names)
        info = parse_snapshot_name(snap)
        if info is not None:
            return info[1] / 1000 if info[1] is not None else float(info[0])
    return None


def _result_lines(run_dir: str, warn: bool = True):
    """Yield (path, line) for every metric result line of run_dir/metric-*.jsonl, in file order. Unreadable files
    and lines (e.g. half-written by a crash) are skipped, with a RuntimeWarning naming them when `warn`."""
    for path in sorted(glob.glob(os.path.join(glob.escape(run_dir), "metric-*.jsonl"))):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.readlines()
        except OSError as err:
            if warn:
                warnings.warn(f"cannot read {path}: {err}", RuntimeWarning, stacklevel=3)
            continue
        for lineno, text in enumerate(lines, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
                if not isinstance(line, dict) or not isinstance(line.get("results"), dict):
                    raise ValueError("not a metric result line")
            except ValueError as err:
                if warn:
                    warnings.warn(f"{path}:{lineno}: skipping an unreadable line ({err})", RuntimeWarning,
                                  stacklevel=3)
                continue
            yield path, line


def read_metric_points(run_dir: str) -> Dict[str, List[dict]]:
    """{result name: [dict(metric, result, value, kimg, snapshot_pkl, timestamp)]} from run_dir/metric-*.jsonl.

    Every finite value is kept (kimg may be None, e.g. for folder-vs-folder results); malformed lines are
    skipped with a RuntimeWarning naming the file and line.
    """
    points: Dict[str, List[dict]] = {}
    for path, line in _result_lines(run_dir):
        metric = str(line.get("metric", os.path.basename(path)[len("metric-"):-len(".jsonl")]))
        snap = line.get("snapshot_pkl") if isinstance(line.get("snapshot_pkl"), str) else None
        timestamp = line.get("timestamp") if isinstance(line.get("timestamp"), (int, float)) else 0.0
        kimg = _line_kimg(line)
        for name, value in line["results"].items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            points.setdefault(str(name), []).append(dict(metric=metric, result=str(name), value=float(value),
                                                         kimg=kimg, snapshot_pkl=snap, timestamp=timestamp))
    return points


def best_points(points: Dict[str, List[dict]]) -> Dict[str, dict]:
    """{result: best point among those with a snapshot} (ties: the later kimg, then the later line)."""
    best = {}
    for name, pts in points.items():
        direction = result_direction(name)
        sign = 1.0 if direction == "higher" else -1.0
        candidates = [p for p in pts if p["snapshot_pkl"]]
        if not candidates:
            continue
        top = max(candidates, key=lambda p: (sign * p["value"], p["kimg"] if p["kimg"] is not None else -math.inf,
                                             p["timestamp"]))
        best[name] = dict(metric=top["metric"], result=name, value=top["value"], kimg=top["kimg"],
                          snapshot_pkl=top["snapshot_pkl"], direction=direction)
    return best


# ---------------------------------------------------------------------------------------------
# Writing.


def pointer_path(run_dir: str, result_name: str) -> str:
    return os.path.join(run_dir, "best-" + re.sub(r"[^A-Za-z0-9_.-]", "_", result_name) + ".json")


def write_best_pointers(run_dir: str, best: Dict[str, dict]) -> List[str]:
    paths = []
    for name, entry in sorted(best.items()):
        path = pointer_path(run_dir, name)
        data = (json.dumps(entry, indent=2) + "\n").encode("utf-8")
        util.atomic_write(path, lambda f, data=data: f.write(data))
        paths.append(path)
    return paths


def _nice_ticks(lo: float, hi: float, count: int = 5) -> List[float]:
    """About `count` round numbers covering [lo, hi] (1, 2, 5 x 10^k steps)."""
    span = hi - lo
    raw = span / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * 0.999)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _draw_panel(draw, font, top: int, name: str, pts: List[dict], best: Optional[dict]) -> None:
    x0, x1 = _MARGIN_L, PANEL_W - _MARGIN_R
    y0, y1 = top + _MARGIN_T, top + PANEL_H - _MARGIN_B
    xs = [p["kimg"] for p in pts]
    ys = [p["value"] for p in pts]
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = min(ys), max(ys)
    if xhi - xlo < 1e-12:
        pad = max(abs(xlo) * 0.1, 0.5)
        xlo, xhi = xlo - pad, xhi + pad
    if yhi - ylo < 1e-12:
        pad = max(abs(ylo) * 0.1, 1e-3)
        ylo, yhi = ylo - pad, yhi + pad
    xpad, ypad = (xhi - xlo) * 0.03, (yhi - ylo) * 0.08  # keep markers off the frame
    xlo, xhi, ylo, yhi = xlo - xpad, xhi + xpad, ylo - ypad, yhi + ypad
    px = lambda x: x0 + (x - xlo) / (xhi - xlo) * (x1 - x0)
    py = lambda y: y1 - (y - ylo) / (yhi - ylo) * (y1 - y0)

    # Grid, ticks, labels.
    for t in _nice_ticks(ylo, yhi):
        y = py(t)
        draw.line([(x0, y), (x1, y)], fill=GRID_COLOR)
        draw.line([(x0 - 4, y), (x0, y)], fill=AXIS_COLOR)
        label = _fmt(t)
        w = draw.textlength(label, font=font)
        draw.text((x0 - 6 - w, y - 5), label, fill=AXIS_COLOR, font=font)
    for t in _nice_ticks(xlo, xhi):
        x = px(t)
        draw.line([(x, y0), (x, y1)], fill=GRID_COLOR)
        draw.line([(x, y1), (x, y1 + 4)], fill=AXIS_COLOR)
        label = _fmt(t)
        w = draw.textlength(label, font=font)
        draw.text((x - w / 2, y1 + 6), label, fill=AXIS_COLOR, font=font)
    draw.rectangle([x0, y0, x1, y1], outline=AXIS_COLOR)
    draw.text(((x0 + x1) / 2 - draw.textlength("kimg", font=font) / 2, y1 + 20), "kimg", fill=AXIS_COLOR, font=font)
    title = f"{name} ({result_direction(name)} is better)"
    if best is not None:
        title += f"   best {_fmt(best['value'])} @ {_fmt(best['kimg'])} kimg"
    draw.text((x0, top + 8), title, fill=AXIS_COLOR, font=font)

    # Curve (in kimg order) and points; the best point last, on top.
    order = sorted(range(len(pts)), key=lambda i: (xs[i], pts[i]["timestamp"]))
    coords = [(px(xs[i]), py(ys[i])) for i in order]
    if len(coords) > 1:
        draw.line(coords, fill=LINE_COLOR, width=2)
    for x, y in coords:
        draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=LINE_COLOR)
    if best is not None:
        bx, by = px(best["kimg"]), py(best["value"])
        draw.ellipse([bx - 6, by - 6, bx + 6, by + 6], outline=BEST_COLOR, width=2)
        draw.ellipse([bx - 3, by - 3, bx + 3, by + 3], fill=BEST_COLOR)


def plot_metrics(points: Dict[str, List[dict]], path: str, best: Optional[Dict[str, dict]] = None) -> Optional[str]:
    """Draw metrics.png: one PANEL_W x PANEL_H panel per result name (sorted), stacked vertically.

    Only points with a known kimg are drawn; results without any get no panel. Returns `path`, or None (and
    writes nothing) when there is nothing to draw.
    """
    series = {}
    for name, pts in sorted(points.items()):
        pts = [p for p in pts if p["kimg"] is not None]  # Values are finite already (read_metric_points).
        if pts:
            series[name] = pts
    if not series:
        return None
    best = best or {}
    image = PIL.Image.new("RGB", (PANEL_W, PANEL_H * len(series)), (255, 255, 255))
    draw = PIL.ImageDraw.Draw(image)
    font = PIL.ImageFont.load_default()
    for idx, (name, pts) in enumerate(series.items()):
        b = best.get(name)
        if b is not None and b["kimg"] is None:
            b = None
        _draw_panel(draw, font, idx * PANEL_H, name, pts, b)
        if idx > 0:
            draw.line([(0, idx * PANEL_H), (PANEL_W, idx * PANEL_H)], fill=(160, 160, 160))
    util.atomic_write(path, lambda f: image.save(f, format="PNG"))
    return path


def inherit_metric_history(source_run_dir: str, run_dir: str, up_to_kimg: float) -> int:
    """Copy the metric lines of the run that `run_dir` resumes (`source_run_dir`), up to the resumed point, into
    run_dir's metric-*.jsonl, their snapshot paths rewritten relative to `run_dir`.

    A resumed run trains in a new run directory; with its predecessor's lines, its metrics.png and best-*.json
    pointers cover the whole run, and a chain of resumes carries the history along. Lines past `up_to_kimg` are a
    future that resuming from an earlier point discarded, so they are left behind; so are lines without a kimg.
    Does nothing when run_dir has metric lines already. Returns the number of lines copied.
    """
    if os.path.abspath(source_run_dir) == os.path.abspath(run_dir) or glob.glob(
            os.path.join(glob.escape(run_dir), "metric-*.jsonl")):
        return 0
    kept: Dict[str, List[str]] = {}  # file name -> lines, in file order
    for path, line in _result_lines(source_run_dir, warn=False):  # the source run's own summaries warn about it
        kimg = _line_kimg(line)
        if kimg is None or kimg > up_to_kimg + 1e-9:
            continue
        snap = line.get("snapshot_pkl")
        if isinstance(snap, str) and snap and not os.path.isabs(snap):
            line["snapshot_pkl"] = os.path.relpath(os.path.join(source_run_dir, snap), run_dir)
        line.setdefault("kimg", kimg)
        kept.setdefault(os.path.basename(path), []).append(json.dumps(line) + "\n")
    copied = 0
    for name, lines in kept.items():
        data = "".join(lines).encode("utf-8")
        util.atomic_write(os.path.join(run_dir, name), lambda f, data=data: f.write(data))
        copied += len(lines)
    if copied:
        update_run_summaries(run_dir)
    return copied


def update_run_summaries(run_dir: str) -> dict:
    """Rewrite run_dir/best-<result>.json for every result and run_dir/metrics.png from all metric-*.jsonl.

    Returns dict(best={result: entry}, pointers=[paths], plot=path or None).
    """
    points = read_metric_points(run_dir)
    best = best_points(points)
    pointers = write_best_pointers(run_dir, best)
    plot = plot_metrics(points, os.path.join(run_dir, "metrics.png"), best)
    return dict(best=best, pointers=pointers, plot=plot)
