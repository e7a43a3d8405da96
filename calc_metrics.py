#!/usr/bin/env python
"""Compute quality metrics of a trained generator, or of one image folder against another.

Examples:

    # Snapshot vs. its training data (dataset taken from the snapshot unless --data is given):
    python calc_metrics.py --metrics=fid50k_full,kid50k_full --network=runs/00003-x/network-snapshot-000500.pt

    # Two folders / zips, like pytorch-fid (no network needed):
    python calc_metrics.py --metrics=fid10k_full,fd_dinov2_10k_full --data=real_images --data2=samples

All metrics are computed in one evaluation that generates and embeds each image once (see metrics/metric_main.py).
Results are printed as a table first, then appended to metric-<name>.jsonl in the run dir (the network's folder,
or --run-dir); with --network, the run dir's best-<result>.json pointers and metrics.png are refreshed too.
A snapshot builds only this toolkit's classes unless --allow-class=module.Class names more.
--network also accepts such a best-<result>.json pointer (it stands for the snapshot it names). Statistics of
real data are cached in --cache-dir ($PGAN_CACHE or ~/.cache/projected_gan).
"""

import logging
import os
import tempfile

import click
import torch

from metrics import metric_main
from metrics.metric_utils import MetricError

logger = logging.getLogger("calc_metrics")


def _one_line(err):
    """The message of `err` on one line (several lines are joined)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


def _snapshot_info(path, extra_classes):
    """(dataset kwargs or None, kimg or None) recorded in the snapshot (memory-mapped: no weights are read).

    The snapshot's network and dataset classes are checked against the allow-list (+ `extra_classes`) here,
    before any work.
    """
    from training import snapshot
    data = snapshot.load_snapshot(path, mmap=True, extra_classes=extra_classes)
    dataset_kwargs = snapshot.dataset_kwargs_from_snapshot(data, path, extra_classes)
    nimg = (data.get("progress") or {}).get("cur_nimg")
    return dataset_kwargs, (int(nimg) / 1000 if nimg is not None else None)


def _is_user_error(e):
    """Errors caused by the inputs (reported as one line, exit code 1) rather than by bugs (traceback)."""
    from metrics.inception import WeightsNotFoundError
    from torch_utils.util import DiskFullError
    from training.snapshot import SnapshotError
    return isinstance(e, (MetricError, SnapshotError, WeightsNotFoundError, FileNotFoundError,
                          metric_main.MetricWriteError, DiskFullError))


def _run(rank, args, init_file):
    """Body of one process (rank): one shared evaluation of all metrics. Returns the result dicts on rank 0.

    Rank 0 prints every result before it writes anything, so a failing write (e.g. a full disk) never hides a
    computed value.
    """
    num_gpus = args["gpus"]
    if args["device"] == "cuda" or (args["device"] is None and torch.cuda.is_available()):
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if num_gpus > 1:
        from torch_utils import distributed
        distributed.init_process_group(rank, num_gpus, device, init_method=f"file://{init_file}")
    G = None
    if args["network"] is not None:
        from training import snapshot
        G = snapshot.load_generator(args["network"], which="G_ema", device=device,
                                    extra_classes=args["allow_class"])
    results = metric_main.calc_metrics(args["metrics"], G=G, dataset_kwargs=args["dataset_kwargs"],
                                       dataset2_kwargs=args["dataset2_kwargs"], num_gpus=num_gpus, rank=rank,
                                       device=device, cache_dir=args["cache_dir"], batch_size=args["batch"],
                                       G_kwargs=dict(noise_mode="const") if G is not None else {},
                                       cache=args["cache"], progress=args["verbose"], fd_method=args["fd_method"])
    if rank != 0:
        return []
    _print_rows(results)
    for result in results:
        metric_main.report_metric(result, run_dir=args["run_dir"], snapshot_pkl=args["network"], kimg=args["kimg"])
    if args["network"] is not None and args["run_dir"] is not None:
        _update_summaries(args["run_dir"])
    return results


def _update_summaries(run_dir):
    """Refresh best-*.json and metrics.png in the run dir; a failure there only warns."""
    from metrics import summary
    try:
        summary.update_run_summaries(run_dir)
    except Exception as e:  # pylint: disable=broad-except
        logger.warning("Warning: could not update the metric summaries in '%s': %s: %s", run_dir,
                       type(e).__name__, _one_line(e))


def _spawned(rank, args, init_file):
    try:
        _run(rank, args, init_file)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _print_rows(results):
    """The result table on stdout (the CLI's output; diagnostics go to the log on stderr)."""
    click.echo(f"{'metric':<24} {'result':<34} {'value':>12}")
    click.echo("-" * 72)
    for r in results:
        for name, value in r["results"].items():
            click.echo(f"{r['metric']:<24} {name:<34} {value:>12.4f}")
    if results:
        click.echo(f"(one shared evaluation of {len(results)} metric(s): {results[0]['total_time_str']})")


@click.command()
@click.option("--metrics", "metrics", default="fid50k_full", show_default=True,
              help="Comma-separated metric names, e.g. fid50k_full,kid50k_full,pr50k3_full,is50k,fd_dinov2_50k_full.")
@click.option("--network", type=str, default=None,
              help="Generator snapshot (network-snapshot-*.pt), or a run dir's best-<result>.json pointer.")
@click.option("--data", type=str, default=None, help="Real data: folder or zip (default: the snapshot's dataset).")
@click.option("--data2", type=str, default=None, help="Second folder/zip compared with --data instead of a network.")
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True, help="Number of GPUs.")
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True, help="Batch size per GPU.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: cuda if available.")
@click.option("--run-dir", type=str, default=None, help="Where metric-*.jsonl goes (default: the network's folder).")
@click.option("--cache-dir", type=str, default=None, help="Cache for dataset statistics and detector weights.")
@click.option("--cache/--no-cache", default=True, show_default=True, help="Use cached real-data statistics.")
@click.option("--fd-method", type=click.Choice(["sqrtm", "eigh"]), default="sqrtm", show_default=True,
              help="Matrix square root for FID/FD: scipy sqrtm (reference) or eigh (several times faster on CPU).")
@click.option("--verbose/--quiet", default=True, show_default=True, help="Log progress (on stderr).")
@click.option("--allow-class", "allow_class", multiple=True, metavar="MODULE.CLASS",
              help="Also allow the snapshot to build this class (repeatable); by default only this toolkit's "
                   "networks and datasets are built from a snapshot's config.")
def main(metrics, network, data, data2, gpus, batch, device, run_dir, cache_dir, cache, fd_method, verbose,
         allow_class):
    """Compute metrics of a network snapshot, or of --data2 against --data."""
    from training import cli_common
    cli_common.setup_logging()
    names = list(dict.fromkeys(m.strip() for m in metrics.split(",") if m.strip()))
    if not names:
        raise click.BadParameter("no metric given", param_hint="--metrics")
    for name in names:  # Validate everything before any work (and any output): names and minimum counts.
        try:
            metric_main.validate_metric(name)
        except MetricError as e:
            raise click.BadParameter(str(e), param_hint="--metrics") from None
    if network is None and data2 is None:
        raise click.UsageError("give --network=SNAPSHOT, or two datasets --data=A --data2=B")
    if network is not None and data2 is not None:
        raise click.UsageError("--data2 replaces the network: give either --network or --data2, not both")
    if network is not None and not os.path.isfile(network):
        raise click.BadParameter(f"file not found: {network}", param_hint="--network")
    for opt, path in (("--data", data), ("--data2", data2)):
        if path is not None and not os.path.exists(path):
            raise click.BadParameter(f"not found: {path}", param_hint=opt)
    if network is None and data is None:
        raise click.UsageError("--data2 needs --data (the reference set)")
    if gpus > 1 and (device == "cpu" or not torch.cuda.is_available() or torch.cuda.device_count() < gpus):
        raise click.BadParameter(f"{gpus} GPUs requested, {torch.cuda.device_count()} available", param_hint="--gpus")
    for opt, path in (("--run-dir", run_dir), ("--cache-dir", cache_dir)):
        if path is None:
            continue
        problem = cli_common.output_dir_problem(path)
        if problem:
            raise click.BadParameter(problem, param_hint=opt)
    allow_class = tuple(c.strip() for c in allow_class)
    for name in allow_class:
        if not name or "." not in name:
            raise click.BadParameter(f"'{name}' is not a dotted module.Class name", param_hint="--allow-class")

    snap_dataset, kimg = None, None
    if network is not None:
        from training import snapshot
        try:
            network = snapshot.resolve_network_path(network)  # a best-*.json pointer -> its snapshot
        except snapshot.SnapshotError as e:
            raise click.BadParameter(_one_line(e), param_hint="--network") from None
        try:
            snap_dataset, kimg = _snapshot_info(network, allow_class)  # A broken file is reported before any work.
        except Exception as e:  # pylint: disable=broad-except
            raise click.ClickException(f"--network={network}: {_one_line(e)}") from None
        if data is None and (not snap_dataset or not snap_dataset.get("path")):
            raise click.ClickException(f"--network={network}: the snapshot does not record its dataset; pass --data")
    dataset_kwargs = dict(path=data) if data is not None else snap_dataset
    if run_dir is None and network is not None:
        run_dir = os.path.dirname(os.path.abspath(network))
    args = dict(metrics=names, network=network, dataset_kwargs=dataset_kwargs,
                dataset2_kwargs=dict(path=data2) if data2 is not None else None, gpus=gpus, batch=batch,
                device=device, run_dir=run_dir, cache_dir=cache_dir, cache=cache, fd_method=fd_method,
                verbose=verbose, kimg=kimg, allow_class=allow_class)
    run_dir_existed = run_dir is not None and os.path.isdir(run_dir)
    try:
        if gpus == 1:
            _run(0, args, None)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                torch.multiprocessing.spawn(_spawned, args=(args, os.path.join(tmp, ".torch_distributed_init")),
                                            nprocs=gpus)
    except Exception as e:
        if run_dir is not None and not run_dir_existed:
            cli_common.remove_if_empty(run_dir)  # a --run-dir this call created and could not write into
        if _is_user_error(e):
            raise click.ClickException(_one_line(e)) from None
        raise
    if run_dir is not None:
        click.echo(f"Results appended to {os.path.join(run_dir, 'metric-<name>.jsonl')}")


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
