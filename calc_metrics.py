#!/usr/bin/env python
"""Compute quality metrics of a trained generator, or of one image folder against another.

Examples:

    # Snapshot vs. its training data (dataset taken from the snapshot unless --data is given):
    python calc_metrics.py --metrics=fid50k_full,kid50k_full --network=runs/00003-x/network-snapshot-000500.pt

    # Two folders / zips, like pytorch-fid (no network needed):
    python calc_metrics.py --metrics=fid10k_full,fd_dinov2_10k_full --data=real_images --data2=samples

Results are printed as a table and appended to metric-<name>.jsonl in the run dir (the network's folder, or
--run-dir); with --network, the run dir's best-<result>.json pointers and metrics.png are refreshed too.
--network also accepts such a best-<result>.json pointer (it stands for the snapshot it names). Statistics of
real data are cached in --cache-dir ($PGAN_CACHE or ~/.cache/projected_gan).
"""

import os
import tempfile

import click
import torch

from metrics import metric_main
from metrics.metric_utils import MetricError


def _snapshot_info(path):
    """(config, kimg or None) recorded in the snapshot (memory-mapped: no weights are read)."""
    from training import snapshot
    data = snapshot.load_snapshot(path, mmap=True)
    nimg = data.get("progress", {}).get("cur_nimg")
    return data.get("config", {}), (int(nimg) / 1000 if nimg is not None else None)


def _dataset_from_config(path, config):
    kwargs = config.get("training_set_kwargs")
    if not kwargs or not kwargs.get("path"):
        raise click.ClickException(f"--network={path}: the snapshot does not record its dataset; pass --data")
    return dict(kwargs)


def _is_user_error(e):
    """Errors caused by the inputs (reported as one line, exit code 1) rather than by bugs (traceback)."""
    from training.snapshot import SnapshotError
    from metrics.inception import WeightsNotFoundError
    return isinstance(e, (MetricError, SnapshotError, WeightsNotFoundError, FileNotFoundError))


def _run(rank, args, init_file):
    """Body of one process (rank). Returns a list of (metric, results dict, seconds) on rank 0."""
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
        G = snapshot.load_generator(args["network"], which="G_ema", device=device)
    rows = []
    for metric in args["metrics"]:
        result = metric_main.calc_metric(metric, G=G, dataset_kwargs=args["dataset_kwargs"],
                                         dataset2_kwargs=args["dataset2_kwargs"], num_gpus=num_gpus, rank=rank,
                                         device=device, cache_dir=args["cache_dir"], batch_size=args["batch"],
                                         G_kwargs=dict(noise_mode="const") if G is not None else {},
                                         cache=args["cache"], progress=args["verbose"],
                                         fd_method=args["fd_method"])
        if rank == 0:
            metric_main.report_metric(result, run_dir=args["run_dir"], snapshot_pkl=args["network"],
                                      kimg=args["kimg"])
            rows.append(result)
            _print_rows([result], header=len(rows) == 1)
    if rank == 0 and rows and args["network"] is not None and args["run_dir"] is not None:
        _update_summaries(args["run_dir"])
    return rows


def _update_summaries(run_dir):
    """Refresh best-*.json and metrics.png in the run dir; a failure there only warns."""
    from metrics import summary
    try:
        summary.update_run_summaries(run_dir)
    except Exception as e:  # pylint: disable=broad-except
        click.echo(f"Warning: could not update the metric summaries in '{run_dir}': {type(e).__name__}: {e}",
                   err=True)


def _spawned(rank, args, init_file):
    try:
        _run(rank, args, init_file)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _print_rows(results, header=True):
    if header:
        click.echo(f"{'metric':<24} {'result':<34} {'value':>12} {'time':>9}")
        click.echo("-" * 82)
    for r in results:
        for name, value in r["results"].items():
            click.echo(f"{r['metric']:<24} {name:<34} {value:>12.4f} {r['total_time_str']:>9}")


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
@click.option("--verbose/--quiet", default=True, show_default=True, help="Print progress.")
def main(metrics, network, data, data2, gpus, batch, device, run_dir, cache_dir, cache, fd_method, verbose):
    """Compute metrics of a network snapshot, or of --data2 against --data."""
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    if not names:
        raise click.BadParameter("no metric given", param_hint="--metrics")
    for name in names:  # Validate everything before any work (and any output).
        try:
            metric_main.parse_metric(name)
        except MetricError as e:
            raise click.BadParameter(str(e), param_hint="--metrics")
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

    config, kimg = {}, None
    try:
        if network is not None:
            from training import snapshot
            try:
                network = snapshot.resolve_network_path(network)  # a best-*.json pointer -> its snapshot
            except snapshot.SnapshotError as e:
                raise click.BadParameter(str(e), param_hint="--network")
            config, kimg = _snapshot_info(network)  # A broken file is reported here, before any work.
        dataset_kwargs = dict(path=data) if data is not None else _dataset_from_config(network, config)
    except click.ClickException:
        raise
    except Exception as e:
        raise click.ClickException(f"--network={network}: {e}")
    if run_dir is None and network is not None:
        run_dir = os.path.dirname(os.path.abspath(network))
    args = dict(metrics=names, network=network, dataset_kwargs=dataset_kwargs,
                dataset2_kwargs=dict(path=data2) if data2 is not None else None, gpus=gpus, batch=batch,
                device=device, run_dir=run_dir, cache_dir=cache_dir, cache=cache, fd_method=fd_method,
                verbose=verbose, kimg=kimg)
    try:
        if gpus == 1:
            _run(0, args, None)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                torch.multiprocessing.spawn(_spawned, args=(args, os.path.join(tmp, ".torch_distributed_init")),
                                            nprocs=gpus)
    except Exception as e:
        if _is_user_error(e):
            raise click.ClickException(str(e))
        raise
    if run_dir is not None:
        click.echo(f"Results appended to {os.path.join(run_dir, 'metric-<name>.jsonl')}")


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
