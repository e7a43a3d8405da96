"""The GAN training loop: phases, gradient accumulation, G EMA, ticks, snapshots, multi-process.

One call of `training_loop(**options, rank=..., device=...)` runs in each process. Everything the
run does is decided by plain config dicts with a `class_name` (see train.py), so any network, loss
or optimizer can be swapped.

Reproducibility design (why the RNG handling looks unusual)
-----------------------------------------------------------
Every step, the global batch of `batch_size` images is cut into chunks of `batch_gpu`; chunk `j`
is processed by rank `j % world_size` in accumulation round `j // world_size`. Before a chunk is
processed the global torch RNG is re-seeded from (seed, step, phase, chunk), and the data sampler
deals the same global index stream into the same chunks whatever the number of processes. Hence

  * a run is a pure function of (options, cur_nimg): resuming from the resume file continues *exactly*
    (bitwise on CPU) as if the run had never stopped, even after a SIGTERM mid-tick, because the data
    iterator is re-created and fast-forwarded to cur_nimg and no RNG state carries over between steps;
  * 1 process x 2 accumulation rounds and 2 processes x 1 round see the same latents, the same
    augmentations and the same real images in the same chunks (results then differ only by
    floating-point reduction order and by per-rank BatchNorm/spectral-norm buffers);
  * tick-end work (image grids, metrics, snapshots) cannot perturb training.
The RNG states are still stored in snapshots (and restored) for code that draws outside chunks.

Stopping (SIGTERM/SIGINT): the handler only sets a flag; the flag travels in the per-step all-reduce of
the non-finite-loss flags (no extra sync), so every rank learns it at the same step and stops at the same
step boundary, where rank 0 writes the resume file.
"""

import contextlib
import copy
import inspect
import itertools
import json
import os
import signal
import threading
import time
from collections import deque
from typing import Any, Dict, List, Optional

import numpy as np
import psutil
import torch

from torch_utils import distributed as dist
from torch_utils import training_stats, util
from torch_utils.image_io import save_image_grid
from torch_utils.snapshot_naming import kimg_label, snapshot_name
from training import snapshot as snapshot_lib


class NonFiniteLossError(RuntimeError):
    """Raised when a loss becomes NaN/inf; the message names the step, kimg and phase."""


# A snapshot or resume-file write failed on a full disk (or quota): an OSError with errno ENOSPC/EDQUOT whose
# message starts with "no space left on device at PATH". The files written before stay intact.
DiskFullError = util.DiskFullError


class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT stopped training; `signum` is the signal, the message says what was saved."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class _StopRequest:
    """Set by the SIGTERM/SIGINT handler; the loop stops at the next step boundary that all ranks agree on.

    A second signal stops at once (raising TrainingInterrupted from the handler; a file write in progress removes
    its temporary file, see util.atomic_write). The same signal again within `REPEAT_WINDOW_S` seconds counts as
    the same request: a signal sent to the whole process group (Ctrl-C, a batch scheduler) reaches this process
    directly and again through train.py's launcher, which forwards it to its training processes.
    """

    REPEAT_WINDOW_S = 2.0

    def __init__(self):
        self.signum = None
        self.time = None

    def handler(self, signum, frame):
        if self.signum is not None:
            if signum == self.signum and time.monotonic() - self.time < self.REPEAT_WINDOW_S:
                return  # the first request, delivered twice
            raise TrainingInterrupted(signum, f"interrupted twice ({signal.Signals(signum).name}): stopped at once; "
                                              f"the snapshots and resume file written before are intact")
        self.signum = signum
        self.time = time.monotonic()


@contextlib.contextmanager
def _stop_signal_handlers(stop: _StopRequest):
    """Route SIGTERM and SIGINT to `stop` while the block runs (main thread only; others keep the defaults)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, stop.handler)
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------
# Data.


class ChunkSampler(torch.utils.data.Sampler):
    """Deal a global stream of dataset indices into this rank's chunks.

    The base sampler yields the *global* order (it must be created for rank 0 of 1 replica). Global
    position `p` belongs to chunk `p // batch_gpu`, and chunk `j` to rank `j % world_size`. The
    first `start` positions are skipped, which is how a resumed run continues the data order.
    Use with `DataLoader(batch_size=batch_gpu)`: each batch it yields is one chunk.
    """

    def __init__(self, base: torch.utils.data.Sampler, rank: int, world_size: int, batch_gpu: int, start: int = 0):
        super().__init__()
        self.base, self.rank, self.world_size, self.batch_gpu, self.start = base, rank, world_size, batch_gpu, start

    def __iter__(self):
        it = iter(self.base)
        if self.start > 0:
            deque(itertools.islice(it, self.start), maxlen=0)  # fast-forward without keeping anything
        for pos, idx in enumerate(it):
            if (pos // self.batch_gpu) % self.world_size == self.rank:
                yield idx


def _seed_chunk(random_seed: int, *ids: int) -> None:
    """Re-seed the global torch RNG (CPU and CUDA) from the seed and the chunk's identity."""
    state = np.random.SeedSequence([int(random_seed) & 0xFFFFFFFF, *[int(i) for i in ids]]).generate_state(2, np.uint32)
    torch.manual_seed((int(state[0]) << 31) ^ int(state[1]))


def _labels_of(dataset) -> Optional[torch.Tensor]:
    """All labels [len(dataset), label_dim] (float32) or None when the dataset has none."""
    label_dim = int(getattr(dataset, "label_dim", 0) or 0)
    if label_dim == 0:
        return None
    if hasattr(dataset, "get_label"):
        labels = [dataset.get_label(i) for i in range(len(dataset))]
    else:
        labels = [dataset[i][1] for i in range(len(dataset))]
    return torch.from_numpy(np.stack(labels).astype(np.float32)).reshape(len(dataset), label_dim)


# ---------------------------------------------------------------------------------------------
# Image grids.


def default_grid_size(resolution: int) -> List[int]:
    """[columns, rows] of the sample grids: about 1920x1080 pixels, between 4 and 16 per side."""
    return [int(np.clip(1920 // resolution, 4, 16)), int(np.clip(1080 // resolution, 4, 16))]


def setup_snapshot_image_grid(training_set, grid_size, random_seed=0):
    """Pick grid_size[0]*grid_size[1] training images (a fixed, seeded choice).

    Conditional datasets show classes row by row (sorted by label) so the fakes grid, which uses the
    same labels, is easy to compare. Returns (images uint8 [N, C, H, W], labels float32 [N, c_dim]).
    """
    gw, gh = grid_size
    rnd = np.random.RandomState(random_seed)
    num = gw * gh
    indices = rnd.permutation(len(training_set))
    indices = np.resize(indices, num)  # repeats when the dataset is smaller than the grid
    items = [training_set[int(i)] for i in indices]
    labels = np.stack([np.asarray(item[1], dtype=np.float32).reshape(-1) for item in items])
    if labels.shape[1] > 0:
        order = np.lexsort(labels.T[::-1])  # group by label
        items = [items[i] for i in order]
        labels = labels[order]
    images = np.stack([np.asarray(item[0]) for item in items])
    return images, labels


@torch.no_grad()
def generate_grid(G, grid_z, grid_c, batch_gpu: int) -> torch.Tensor:
    """Images [N, C, H, W] in [-1, 1] (CPU) from fixed latents, constant noise, in chunks of batch_gpu."""
    out = []
    for z, c in zip(grid_z.split(batch_gpu), grid_c.split(batch_gpu)):
        out.append(G(z, c, noise_mode="const").cpu())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# Non-finite loss detection without a GPU sync per report.


class LossWatch:
    """Forwards loss reports to training_stats and flags non-finite values on the device.

    `end_step()` closes a step: it reduces the step's flags to one "any non-finite" value, all-reduces
    it over the ranks (MAX) together with this rank's "stop requested" flag (a signal), and starts an
    asynchronous copy to the host. `check()`, called by the
    loop after it has queued the *next* step, waits only for that copy (a CUDA event), so the GPU
    queue never drains; before snapshots the loop calls `end_step()` + `check()` back to back.
    """

    def __init__(self, phases: List[str], device: torch.device):
        self.phases = phases
        self.device = device
        self.phase_idx = 0
        self.current = {}  # (phase, name) -> count of non-finite elements [1] (this step)
        self.pending = None

    def report(self, name: str, value):
        training_stats.report(name, value)
        if name.startswith("Loss/") and torch.is_tensor(value) and value.numel() > 0:
            key = (self.phases[self.phase_idx], name)
            bad = (~torch.isfinite(value.detach())).sum().to(torch.float32).reshape([1])
            self.current[key] = self.current[key] + bad if key in self.current else bad
        return value

    def end_step(self, batch_idx: int, cur_nimg: int, stop: bool = False) -> None:
        """Close this step's flags and start moving them to the host; `check()` looks at them."""
        keys = sorted(self.current)
        local = torch.cat([self.current[k] for k in keys]) if keys else torch.zeros([1], device=self.device)
        stop_flag = torch.full([1], float(bool(stop)), device=self.device)
        # [any non-finite, any rank asked to stop]: every rank must stop together.
        any_bad = torch.cat([local.max().reshape([1]).to(self.device), stop_flag])
        any_bad = dist.all_reduce_max(any_bad)
        event = None
        if self.device.type == "cuda":
            local, any_bad = local.to("cpu", non_blocking=True), any_bad.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        self.pending = (keys, local, any_bad, event, batch_idx, cur_nimg)
        self.current = {}

    def check(self) -> bool:
        """Raise NonFiniteLossError if the closed step saw a non-finite loss on any rank; else return whether any
        rank asked to stop at that step (False when no step is pending)."""
        if self.pending is None:
            return False
        keys, local, any_bad, event, batch_idx, cur_nimg = self.pending
        self.pending = None
        if event is not None:
            event.synchronize()
        if float(any_bad[0]) == 0:
            return bool(float(any_bad[1]) > 0)
        bad = [k for k, v in zip(keys, local.tolist()) if v > 0]
        where = ", ".join(f"'{name}' in phase {phase}" for phase, name in bad) if bad else "another rank's losses"
        raise NonFiniteLossError(
            f"non-finite loss at step {batch_idx} (kimg {cur_nimg / 1000:.3f}): {where}; "
            f"training stopped without writing a snapshot of these weights"
        )


def _all_finite(modules, device) -> bool:
    """True when every float parameter and buffer of `modules` is finite on every rank (collective)."""
    tensors = [t.detach() for m in modules for t in itertools.chain(m.parameters(), m.buffers())
               if t.is_floating_point()]
    bad = torch.zeros([1], device=device)
    if tensors:
        bad += (~torch.stack([torch.isfinite(t).all() for t in tensors]).all()).to(bad.dtype)
    return float(dist.all_reduce_max(bad).cpu()) == 0


# ---------------------------------------------------------------------------------------------
# Misc.


def _count_params(module: torch.nn.Module):
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    buffers = sum(b.numel() for b in module.buffers())
    return trainable, frozen, buffers


def _make_optimizer(params, opt_kwargs: Dict[str, Any], mb_ratio: float = 1.0):
    """Build an optimizer from {'class_name': ..., lr, betas, ...}; lazy regularization rescales lr/betas."""
    kwargs = copy.deepcopy(dict(opt_kwargs))
    if "betas" in kwargs:
        kwargs["betas"] = tuple(float(b) for b in kwargs["betas"])
    if mb_ratio != 1.0:
        # Regularizing every `interval` steps makes each optimizer step see (interval+1)/interval
        # times the minibatches; shrink lr and momentum so the effective schedule is unchanged.
        kwargs["lr"] = kwargs["lr"] * mb_ratio
        if "betas" in kwargs:
            kwargs["betas"] = tuple(b ** mb_ratio for b in kwargs["betas"])
    return util.construct_class_by_name(params=params, **kwargs)


def _format_mem(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:<6.2f}"


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if torch.is_tensor(obj):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


# ---------------------------------------------------------------------------------------------
# The loop.


def training_loop(
    run_dir: str = ".",                 # Output directory (only rank 0 writes).
    training_set_kwargs: dict = {},     # Dataset: {'class_name': ..., 'path': ..., ...}.
    data_loader_kwargs: dict = {},      # Extra torch DataLoader arguments (num_workers, pin_memory, ...).
    G_kwargs: dict = {},                # Generator: {'class_name': ..., ...} (+ c_dim/img_resolution/img_channels).
    D_kwargs: dict = {},                # Discriminator, likewise.
    G_opt_kwargs: dict = {},            # Generator optimizer: {'class_name': 'torch.optim.Adam', 'lr': ...}.
    D_opt_kwargs: dict = {},            # Discriminator optimizer.
    loss_kwargs: dict = {},             # Loss: {'class_name': ..., ...}; gets device, G, D, report.
    metrics: list = [],                 # Metric names evaluated at every network snapshot.
    random_seed: int = 0,               # Global seed.
    num_gpus: int = 1,                  # World size (processes), whatever the devices.
    rank: int = 0,                      # Rank of this process.
    device: Any = None,                 # torch.device; default cuda:rank if available, else cpu.
    batch_size: int = 4,                # Global batch per step (all ranks, all rounds).
    batch_gpu: int = 4,                 # Images per process per accumulation round.
    ema_kimg: float = 10,               # Half-life of the G EMA, in kimg.
    ema_rampup: Optional[float] = None, # EMA ramp-up: half-life at most cur_nimg * ema_rampup (None/0: off).
    G_reg_interval: Optional[int] = None,  # Lazy G regularization interval (None: Gboth every step).
    D_reg_interval: Optional[int] = None,  # Lazy D regularization interval (None: Dboth every step).
    total_kimg: float = 25000,          # Total length of training (a resumed run continues up to it).
    kimg_per_tick: float = 4,           # Progress print / stats interval.
    image_snapshot_ticks: Optional[int] = 50,    # Fakes grid every N ticks (None: never).
    network_snapshot_ticks: Optional[int] = 50,  # Snapshot (+ metrics) every N ticks (None: never).
    resume: Optional[str] = None,       # Resume file, history snapshot, run dir, or 'latest' (under run_dir's parent).
    snapshot_keep: int = 0,             # History snapshots to keep in run_dir: 0 = all, N = the newest N.
    grid_size: Optional[list] = None,   # [columns, rows] of reals.png / fakes*.png; None: from resolution.
    cudnn_benchmark: bool = True,       # torch.backends.cudnn.benchmark.
    allow_tf32: bool = False,           # TF32 tensor cores for float32 convs/matmuls (Ampere+): faster, ~1e-3 error.
    **extra_options,                    # Recorded in snapshots' config (e.g. the CLI's choices); unused here.
) -> Dict[str, Any]:
    """Train. Returns {'run_dir', 'cur_nimg', 'last_snapshot', 'resume_state', 'sec_per_kimg', 'peak_gpu_mem', 'G',
    'G_ema', 'D'} (speed and CUDA peak memory in bytes of the last tick; the networks as trained).

    At every network snapshot, rank 0 writes the run's rolling resume file `resume-state.pt` (full state,
    optimizers included) and a lean history snapshot `network-snapshot-*.pt`. While it runs in the main thread,
    SIGTERM/SIGINT stop training at the next step boundary: the resume file is written, one line says so, and
    TrainingInterrupted is raised (a second signal stops at once, without saving).

    Raises NonFiniteLossError when a loss goes NaN/inf (the last good snapshot stays the newest), DiskFullError
    when a snapshot cannot be written for lack of space (the earlier files stay intact), SnapshotError for a bad
    resume file.
    """
    kwargs = dict(locals())
    stop = _StopRequest()
    with _stop_signal_handlers(stop):
        return _train(stop=stop, **kwargs)


def resolve_device(device, rank=0):
    """The torch.device to train on: None -> this rank's GPU (or the CPU without CUDA); a bare "cuda" gets the current
    device's index, since torch.cuda.set_device() and DDP need one."""
    if device is None:
        use_cuda = torch.cuda.is_available()
        device = torch.device("cuda", rank % max(torch.cuda.device_count(), 1)) if use_cuda else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _worker_ignores_stop_signals(worker_id):
    """DataLoader workers leave SIGTERM/SIGINT to the training process. A signal sent to the whole process group
    (a cluster scheduler's SIGTERM, Ctrl-C in a terminal) would otherwise kill them first, and the training process
    would die of "DataLoader worker ... is killed by signal" instead of saving its resume state and stopping
    cleanly. The workers still exit with the training process (PyTorch's workers watch their parent)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _train(*, stop: _StopRequest, run_dir, training_set_kwargs, data_loader_kwargs, G_kwargs, D_kwargs, G_opt_kwargs,
           D_opt_kwargs, loss_kwargs, metrics, random_seed, num_gpus, rank, device, batch_size, batch_gpu, ema_kimg,
           ema_rampup, G_reg_interval, D_reg_interval, total_kimg, kimg_per_tick, image_snapshot_ticks,
           network_snapshot_ticks, resume, snapshot_keep, grid_size, cudnn_benchmark, allow_tf32, extra_options):
    """The body of `training_loop` (same arguments), run with the stop-signal handlers installed."""
    options = {k: v for k, v in locals().items() if k not in ("rank", "device", "extra_options", "stop")}
    options.update(extra_options)
    start_time = time.time()
    device = resolve_device(device, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = cudnn_benchmark
        # Off by default, as in NVIDIA's loops: fp32 layers stay exact unless the user trades that for speed.
        torch.backends.cuda.matmul.allow_tf32 = bool(allow_tf32)
        torch.backends.cudnn.allow_tf32 = bool(allow_tf32)
    world = num_gpus
    if batch_size % (batch_gpu * world) != 0:
        raise ValueError(f"batch_size={batch_size} must be a multiple of batch_gpu*num_gpus={batch_gpu * world}")
    num_rounds = batch_size // (batch_gpu * world)
    np.random.seed(random_seed % (1 << 32))
    torch.manual_seed(random_seed)
    training_stats.reset()
    training_stats.init_multiprocessing(rank=rank,
                                        sync_device=device if (world > 1 and device.type == "cuda") else None)

    def log(msg=""):
        if rank == 0:
            print(msg, flush=True)

    # Resume: read the snapshot first so that a bad file fails before anything heavy happens. The networks are
    # built from the current options below, never from classes the file names (load_snapshot also refuses files
    # naming classes off the allow-list).
    resume_data = None
    resume_path = None
    history_dir = None  # the run dir whose metric history this run continues
    if resume is not None:
        outdir = os.path.dirname(os.path.abspath(run_dir))
        resume_path = snapshot_lib.resolve_resume(resume, outdir=outdir)
        log(f"Resuming from '{resume_path}'")
        if rank == 0:
            for path in snapshot_lib.clean_stale_temp_files(outdir):
                log(f"Removed a half-written snapshot left by a killed run: {path}")
        resume_data = snapshot_lib.load_snapshot(resume_path, map_location="cpu")
        imported = resume_data.get("kind") in ("imported", "generator")
        if resume_data.get("kind") == "generator":  # a shared model: its G_ema is the starting G as well
            resume_data["G"] = resume_data.get("G_ema")
        for key in ("G", "G_ema", "progress") + (() if imported else ("D",)):
            if key not in resume_data:
                raise snapshot_lib.SnapshotError(f"'{resume_path}' has no '{key}': it is not a training snapshot")
        if imported:
            # A network pickle of another codebase: its generators only, as training from a pretrained G.
            what = ("a generator-only snapshot" if resume_data.get("kind") == "generator" else
                    f"a {resume_data.get('source', 'foreign')} network pickle")
            log(f"Warning: '{resume_path}' is {what}: G and G_ema come from it, D is new, the optimizers start from "
                f"zero and images are counted from 0")
            resume_data["progress"] = {}
        else:
            history_dir = os.path.dirname(os.path.abspath(resume_path))
            if "G_opt" not in resume_data or "D_opt" not in resume_data:
                log(f"Warning: '{resume_path}' is a history snapshot without optimizer state: the optimizers "
                    f"restart from zero (resume from the run's {snapshot_lib.RESUME_STATE_NAME} to continue exactly)")

    # Dataset.
    log("Loading training set...")
    training_set = util.construct_class_by_name(**training_set_kwargs)
    all_labels = _labels_of(training_set)
    start_nimg = int(resume_data["progress"].get("cur_nimg", 0)) if resume_data else 0
    from training import dataset as dataset_lib  # imported here so stand-in datasets work without it in tests

    base_sampler = dataset_lib.InfiniteSampler(dataset=training_set, rank=0, num_replicas=1, shuffle=True,
                                               seed=random_seed)
    sampler = ChunkSampler(base_sampler, rank=rank, world_size=world, batch_gpu=batch_gpu, start=start_nimg)
    loader_kwargs = dict(data_loader_kwargs)
    if loader_kwargs.get("num_workers", 0) == 0:
        loader_kwargs.pop("prefetch_factor", None)
        loader_kwargs.pop("persistent_workers", None)
    if device.type != "cuda":
        loader_kwargs["pin_memory"] = False
    if loader_kwargs.get("num_workers", 0) > 0:
        loader_kwargs.setdefault("worker_init_fn", _worker_ignores_stop_signals)
    loader = torch.utils.data.DataLoader(
        dataset=training_set, sampler=sampler, batch_size=batch_gpu,
        generator=torch.Generator().manual_seed(random_seed), **loader_kwargs,
    )
    training_set_iterator = iter(loader)
    log(f"Num images:  {len(training_set)}")
    log(f"Image shape: {list(getattr(training_set, 'image_shape', []))}")
    log(f"Label shape: {list(getattr(training_set, 'label_shape', [getattr(training_set, 'label_dim', 0)]))}")
    log()

    # Networks. `networks` records the fully resolved constructor arguments for snapshots.
    log("Constructing networks...")
    common_kwargs = dict(
        c_dim=int(getattr(training_set, "label_dim", 0) or 0),
        img_resolution=int(training_set.resolution),
        img_channels=int(training_set.num_channels),
    )
    networks = {"G": {**G_kwargs, **common_kwargs}, "D": {**D_kwargs, **common_kwargs}}
    if resume_data is not None and "D" in resume_data:
        spec = snapshot_lib.legacy_d_spec(networks["D"], resume_data["D"], resume_data["networks"].get("D"))
        if spec is not networks["D"]:
            changed = ", ".join(f"{k}={v!r}" for k, v in spec.items() if networks["D"].get(k) != v)
            log(f"Note: '{resume_path}' has a discriminator of an earlier design; it keeps that design for this "
                f"run ({changed}).")
            networks["D"] = spec
    # Each network is initialized from its own seed, so that e.g. swapping D never changes G's init.
    _seed_chunk(random_seed, 0, 0)  # (0, k): initialization streams
    G = util.construct_class_by_name(**networks["G"]).train().to(device)
    _seed_chunk(random_seed, 0, 1)
    D = util.construct_class_by_name(**networks["D"]).train().to(device)
    G_ema = copy.deepcopy(G).eval()
    # Only what is trainable at construction ever gets optimized or gradients; a frozen feature
    # network stays out of the optimizers whatever the phases do.
    G_params = [p for p in G.parameters() if p.requires_grad]
    D_params = [p for p in D.parameters() if p.requires_grad]
    param_counts = {"G": _count_params(G), "D": _count_params(D)}
    for p in G_params + D_params:
        p.requires_grad_(False)
    G_ema.requires_grad_(False)
    if resume_data is not None:
        for name, module in (("G", G), ("G_ema", G_ema), ("D", D)):
            if name in resume_data:
                snapshot_lib.load_state(module, resume_data, name, resume_path)
    # Every rank starts from rank 0's weights (initializations may differ per process).
    for module in (G, D, G_ema):
        dist.broadcast_module(module, src=0)
    if rank == 0:
        for name, module in (("G", G), ("D", D)):
            trainable, frozen, buffers = param_counts[name]
            log(f"{name}: {type(module).__module__}.{type(module).__name__}: {trainable / 1e6:.3f}M trainable params, "
                f"{frozen / 1e6:.3f}M frozen params, {buffers / 1e6:.3f}M buffer elements")
        log()

    # Phases: (name, params, optimizer, interval).
    log("Setting up training phases...")
    phases = []
    optimizers = {}
    for name, params, opt_kwargs, reg_interval in (
        ("G", G_params, G_opt_kwargs, G_reg_interval),
        ("D", D_params, D_opt_kwargs, D_reg_interval),
    ):
        if not params:
            raise ValueError(f"{name} has no trainable parameters")
        if reg_interval is None or reg_interval <= 0:
            opt = _make_optimizer(params, opt_kwargs)
            phases.append(util.EasyDict(name=name + "both", params=params, opt=opt, interval=1))
        else:
            opt = _make_optimizer(params, opt_kwargs, mb_ratio=reg_interval / (reg_interval + 1))
            phases.append(util.EasyDict(name=name + "main", params=params, opt=opt, interval=1))
            phases.append(util.EasyDict(name=name + "reg", params=params, opt=opt, interval=int(reg_interval)))
        optimizers[name] = opt
    # StyleGAN order: Gmain, Greg, Dmain, Dreg.
    if resume_data is not None and "G_opt" in resume_data and "D_opt" in resume_data:
        try:
            optimizers["G"].load_state_dict(resume_data["G_opt"])
            optimizers["D"].load_state_dict(resume_data["D_opt"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise snapshot_lib.SnapshotError(f"'{resume_path}': the optimizer states do not fit the current options: "
                                             f"{err}") from err

    # Loss.
    watch = LossWatch([p.name for p in phases], device)
    loss_kwargs = dict(loss_kwargs)
    loss_class = util.get_obj_by_name(loss_kwargs["class_name"])
    sig = inspect.signature(loss_class)
    accepts_report = "report" in sig.parameters or any(
        p.kind == inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    if accepts_report:
        loss_kwargs["report"] = watch.report
    loss = util.construct_class_by_name(device=device, G=G, D=D, **loss_kwargs)
    if resume_data is not None:
        snapshot_lib.load_loss_state_dict(loss, resume_data.get("loss_state", {}))

    # Output files (rank 0).
    grid_size = list(grid_size) if grid_size else default_grid_size(common_kwargs["img_resolution"])
    grid_z = grid_c = None
    stats_jsonl = stats_tfevents = None
    if rank == 0:
        os.makedirs(run_dir, exist_ok=True)
        if history_dir is not None:
            # The metric results of the run(s) this one continues, so that metrics.png shows the whole run.
            try:
                from metrics import summary

                carried = summary.inherit_metric_history(history_dir, run_dir, start_nimg / 1000)
                if carried:
                    log(f"Carried {carried} metric result line(s) over from '{history_dir}'")
            except Exception as err:  # pylint: disable=broad-except  (a convenience: never stops training)
                log(f"Warning: could not carry the metric history over from '{history_dir}': "
                    f"{type(err).__name__}: {err}")
        log("Exporting sample images...")
        images, labels = setup_snapshot_image_grid(training_set, grid_size, random_seed)
        save_image_grid(images, os.path.join(run_dir, "reals.png"), drange=(0, 255), grid_size=grid_size)
        gen = torch.Generator().manual_seed(random_seed)
        grid_z = torch.randn([len(images), G.z_dim], generator=gen).to(device)
        grid_c = torch.from_numpy(labels).reshape(len(images), common_kwargs["c_dim"]).to(device)
        if image_snapshot_ticks is not None:
            save_image_grid(generate_grid(G_ema, grid_z, grid_c, batch_gpu), os.path.join(run_dir, "fakes_init.png"),
                            grid_size=grid_size)
        # Appended to line by line for the whole run; closed after the loop.
        stats_jsonl = open(os.path.join(run_dir, "stats.jsonl"), "a", encoding="utf-8")  # noqa: SIM115
        try:
            from torch.utils import tensorboard  # noqa: F401  (only when the tensorboard package exists)

            stats_tfevents = tensorboard.SummaryWriter(run_dir)
        except ImportError:
            stats_tfevents = None

    # Restore RNG streams last: everything above may have drawn from them.
    cur_nimg = start_nimg
    cur_tick = 0
    batch_idx = 0
    if resume_data is not None:
        cur_tick = int(resume_data["progress"].get("cur_tick", -1)) + 1
        batch_idx = int(resume_data["progress"].get("batch_idx", 0))
        if "rng" in resume_data:
            snapshot_lib.restore_rng_state(resume_data["rng"])
        del resume_data

    total_nimg = int(round(total_kimg * 1000))
    log(f"Training for {total_kimg} kimg (from kimg {cur_nimg / 1000:.3f}); {world} process(es), "
        f"batch {batch_size} = {world} x {num_rounds} round(s) x {batch_gpu}, device {device.type}...")
    log()
    tick_start_nimg = cur_nimg
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    stats_collector = training_stats.Collector(regex=".*")
    last_snapshot = None
    resume_state_path = os.path.join(run_dir, snapshot_lib.RESUME_STATE_NAME)
    last_resume_state = None

    def save_state(rng_state, progress_tick, history: bool):
        """Rank 0: the resume file (first: it is what continues the run), then a lean history snapshot."""
        state = dict(networks=networks, G=G, G_ema=G_ema, D=D, rng=rng_state, loss=loss, config=options,
                     progress=dict(cur_nimg=cur_nimg, cur_tick=progress_tick, batch_idx=batch_idx))
        path = resume_state_path
        try:
            snapshot_lib.save_snapshot(path, G_opt=optimizers["G"], D_opt=optimizers["D"], **state)
            if history:
                path = os.path.join(run_dir, snapshot_name(cur_nimg))
                snapshot_lib.save_snapshot(path, **state)
        except util.DiskFullError as err:
            kept = last_snapshot or last_resume_state or resume_path
            raise DiskFullError(err.path, err.errno, detail=f"training stopped at kimg {cur_nimg / 1000:.3f}; the "
                                f"files written before are intact (newest: {kept or 'none'})") from err
        return path

    def interrupt():
        """All ranks, at a step boundary: check the last step, save the resume state, raise TrainingInterrupted."""
        watch.check()
        signame = signal.Signals(stop.signum).name if stop.signum is not None else "a signal on another rank"
        if not _all_finite([G, G_ema, D], device):
            raise NonFiniteLossError(f"non-finite weights after step {batch_idx - 1} (kimg {cur_nimg / 1000:.3f}); "
                                     f"interrupted by {signame} without saving them")
        msg = f"Interrupted by {signame} at kimg {cur_nimg / 1000:.3f}"
        if rank == 0:
            save_state(snapshot_lib.capture_rng_state(), cur_tick - 1, history=False)
            msg += f": saved the resume state to '{resume_state_path}' (continue with --resume={run_dir})"
            log(msg)
        raise TrainingInterrupted(stop.signum or signal.SIGTERM, msg)

    stop_seen = False  # A rank asked to stop (known to every rank at the same step).
    sec_per_kimg = float("nan")
    peak_gpu_mem = 0
    done = cur_nimg >= total_nimg
    z_dim = G.z_dim
    c_dim = common_kwargs["c_dim"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    while not done:
        if stop_seen:
            interrupt()
        # Fetch this step's real images: num_rounds chunks of batch_gpu for this rank.
        real_chunks = []
        for _ in range(num_rounds):
            img, c = next(training_set_iterator)
            img = img.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1
            c = c.to(device, non_blocking=True).to(torch.float32).reshape(img.shape[0], c_dim)
            real_chunks.append((img, c))

        for phase_idx, phase in enumerate(phases):
            if batch_idx % phase.interval != 0:
                continue
            watch.phase_idx = phase_idx
            phase.opt.zero_grad(set_to_none=True)
            for p in phase.params:
                p.requires_grad_(True)
            for round_idx, (real_img, real_c) in enumerate(real_chunks):
                chunk = round_idx * world + rank
                _seed_chunk(random_seed, 1, batch_idx, phase_idx, chunk)  # (1, ...): training
                gen_z = torch.randn([batch_gpu, z_dim], device=device)
                if all_labels is not None:
                    gen_c = all_labels[torch.randint(len(all_labels), [batch_gpu])].to(device)
                else:
                    gen_c = torch.zeros([batch_gpu, 0], device=device)
                # gain: the interval compensates lazy regularization; 1/num_rounds makes the summed
                # gradient a mean over the global batch whatever the split into rounds and ranks.
                loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z,
                                          gen_c=gen_c, gain=phase.interval / num_rounds, cur_nimg=cur_nimg)
            for p in phase.params:
                p.requires_grad_(False)
            dist.average_gradients(phase.params)
            phase.opt.step()

        # G EMA.
        with torch.no_grad():
            ema_nimg = ema_kimg * 1000
            if ema_rampup:
                ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
            ema_beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
            ema_params = list(G_ema.parameters())
            torch._foreach_lerp_(ema_params, [p.detach() for p in G.parameters()], 1 - ema_beta)
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)

        # Check the previous step's losses now that this step is queued, then close this step.
        stop_seen |= watch.check()
        watch.end_step(batch_idx, cur_nimg, stop=stop.signum is not None)
        cur_nimg += batch_size
        batch_idx += 1

        done = cur_nimg >= total_nimg
        # Tick 0 of a fresh run ends after its first step: an early sanity check of every output.
        if not done and cur_tick != 0 and cur_nimg < tick_start_nimg + kimg_per_tick * 1000:
            continue

        # ---- Tick end. Nothing below may change the training trajectory. ----
        rng_state = snapshot_lib.capture_rng_state()
        stop_seen |= watch.check()  # synchronous: never snapshot weights from a step with a non-finite loss
        tick_end_time = time.time()
        tick_kimg = (cur_nimg - tick_start_nimg) / 1000
        sec_per_tick = tick_end_time - tick_start_time
        sec_per_kimg = sec_per_tick / max(tick_kimg, 1e-8)
        cpu_mem = psutil.Process(os.getpid()).memory_info().rss
        gpu_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
        gpu_reserved = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else 0
        peak_gpu_mem = gpu_mem
        training_stats.report0("Progress/tick", cur_tick)
        training_stats.report0("Progress/kimg", cur_nimg / 1e3)
        training_stats.report0("Timing/total_sec", tick_end_time - start_time)
        training_stats.report0("Timing/sec_per_tick", sec_per_tick)
        training_stats.report0("Timing/sec_per_kimg", sec_per_kimg)
        training_stats.report0("Timing/maintenance_sec", maintenance_time)
        training_stats.report0("Resources/cpu_mem_gb", cpu_mem / 2**30)
        training_stats.report0("Resources/peak_gpu_mem_gb", gpu_mem / 2**30)
        training_stats.report0("Resources/peak_gpu_mem_reserved_gb", gpu_reserved / 2**30)
        stats_collector.update()
        stats_dict = stats_collector.as_dict()

        eta = (total_nimg - cur_nimg) / 1000 * sec_per_kimg
        fields = [
            f"tick {cur_tick:<5d}",
            f"kimg {cur_nimg / 1e3:<8.3f}",
            f"time {util.format_time(tick_end_time - start_time):<12s}",
            f"sec/tick {sec_per_tick:<7.1f}",
            f"sec/kimg {sec_per_kimg:<7.2f}",
            f"maint {maintenance_time:<6.1f}",
            f"cpumem {_format_mem(cpu_mem)}",
            f"gpumem {_format_mem(gpu_mem)}",
            f"reserved {_format_mem(gpu_reserved)}",
        ]
        for short, name in (("loss/G", "Loss/G/loss"), ("loss/D", "Loss/D/loss")):
            if name in stats_dict:
                fields.append(f"{short} {stats_dict[name]['mean']:<8.4f}")
        fields.append(f"eta {util.format_time(eta) if not done else '-'}")
        log(" ".join(fields))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        # Fakes grid.
        if rank == 0 and image_snapshot_ticks is not None and (done or cur_tick % image_snapshot_ticks == 0):
            fakes = generate_grid(G_ema, grid_z, grid_c, batch_gpu)
            save_image_grid(fakes, os.path.join(run_dir, f"fakes{kimg_label(cur_nimg)}.png"), grid_size=grid_size)

        # Network snapshot (+ metrics).
        snapshot_path = None
        stats_metrics = {}
        if network_snapshot_ticks is not None and (done or cur_tick % network_snapshot_ticks == 0):
            if not _all_finite([G, G_ema, D], device):
                raise NonFiniteLossError(
                    f"non-finite weights after step {batch_idx - 1} (kimg {cur_nimg / 1000:.3f}); "
                    f"not writing a snapshot (last good one: {last_snapshot or resume})")
            if rank == 0:
                snapshot_path = save_state(rng_state, cur_tick, history=True)
                last_snapshot, last_resume_state = snapshot_path, resume_state_path
            if metrics:
                from metrics import metric_main

                # One shared evaluation: the metrics on one detector embed the same generated images once.
                for result_dict in metric_main.calc_metrics(metrics, G=G_ema, dataset_kwargs=training_set_kwargs,
                                                            num_gpus=world, rank=rank, device=device):
                    if rank == 0:
                        metric_main.report_metric(result_dict, run_dir=run_dir, snapshot_pkl=snapshot_path,
                                                  kimg=cur_nimg / 1000)
                        for name, value in result_dict["results"].items():
                            log(f"metric {name} = {value:.4f} ({result_dict.get('total_time_str', '')})")
                            stats_metrics[f"Metrics/{name}"] = dict(num=1, mean=float(value), std=0.0)
                if rank == 0:
                    # best-<result>.json pointers and metrics.png; never allowed to stop training.
                    try:
                        from metrics import summary

                        summary.update_run_summaries(run_dir)
                    except Exception as err:  # pylint: disable=broad-except
                        log(f"Warning: could not update the metric summaries in '{run_dir}': "
                            f"{type(err).__name__}: {err}")
            if rank == 0:
                # After the summaries: the snapshots their best-*.json pointers name are kept.
                snapshot_lib.prune_snapshots(run_dir, snapshot_keep)

        # Statistics.
        stats_dict.update(stats_metrics)
        timestamp = time.time()
        if stats_jsonl is not None:
            stats_jsonl.write(json.dumps(dict(stats_dict, timestamp=timestamp), default=_json_default) + "\n")
            stats_jsonl.flush()
        if stats_tfevents is not None:
            global_step = int(cur_nimg / 1e3)
            walltime = timestamp - start_time
            for name, value in stats_dict.items():
                stats_tfevents.add_scalar(name, value["mean"], global_step=global_step, walltime=walltime)
            stats_tfevents.flush()

        snapshot_lib.restore_rng_state(rng_state)
        cur_tick += 1
        tick_start_nimg = cur_nimg
        tick_start_time = time.time()
        maintenance_time = tick_start_time - tick_end_time

    if stats_jsonl is not None:
        stats_jsonl.close()
    if stats_tfevents is not None:
        stats_tfevents.close()
    log()
    log("Exiting...")
    return dict(run_dir=run_dir, cur_nimg=cur_nimg, last_snapshot=last_snapshot, resume_state=last_resume_state,
                sec_per_kimg=sec_per_kimg, peak_gpu_mem=peak_gpu_mem, G=G, G_ema=G_ema, D=D)
