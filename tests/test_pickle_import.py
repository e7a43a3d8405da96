"""training.pickle_import: generators from network pickles of the official Projected GAN code and of NVIDIA's
StyleGAN2-ADA / StyleGAN3, imported into this toolkit's classes without running anything the file names.

Every pickle here is made by the tests themselves, with the structure those codebases write: modules registered
under the official class paths (`pg_modules.*`, `timm.*`) only while pickling, so the importer could not import
them even if it tried, and `torch_utils.persistence` records whose embedded module source would leave a marker
file if it ever ran. The reference outputs come from the tests' own forward functions of those architectures.
The same comparison against the real official code is in docs/parity_official.md (it needs their checkout).
"""

import collections
import contextlib
import copy
import glob
import os
import pickle
import subprocess
import sys
import types
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from torch import nn

from training import snapshot
from training.generation import seed_latent
from training.pickle_import import PickleImportError

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@contextlib.contextmanager
def fake_modules(classes):
    """Register {'module.path': [cls, ...]} as importable modules while pickling, then remove every trace."""
    added, shadowed = [], []  # a real module (timm's) gets its attribute back afterwards
    missing = object()
    try:
        for path, members in classes.items():
            parts = path.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name not in sys.modules:
                    sys.modules[name] = types.ModuleType(name)
                    added.append(name)
            for obj in members:
                obj.__module__ = path
                module = sys.modules[path]
                shadowed.append((module, obj.__name__, getattr(module, obj.__name__, missing)))
                setattr(module, obj.__name__, obj)
        yield
    finally:
        for module, attr, previous in reversed(shadowed):
            if previous is missing:
                delattr(module, attr)
            else:
                setattr(module, attr, previous)
        for name in reversed(added):
            del sys.modules[name]


# ---------------------------------------------------------------------------------------------
# The official FastGAN's structure, written from its published architecture (Projected GAN's pg_modules).


def _sn(module):
    return nn.utils.spectral_norm(module)  # the old hook-based spectral norm the official code uses


class GLU(nn.Module):
    def forward(self, x):
        half = x.shape[1] // 2
        return x[:, :half] * torch.sigmoid(x[:, half:])


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x + self.weight * torch.randn(x.shape[0], 1, x.shape[2], x.shape[3])


class InitLayer(nn.Module):
    def __init__(self, nz, channel):
        super().__init__()
        self.init = nn.Sequential(_sn(nn.ConvTranspose2d(nz, channel * 2, 4, 1, 0, bias=False)),
                                  nn.BatchNorm2d(channel * 2), GLU())

    def forward(self, z):
        return self.init(z.view(z.shape[0], -1, 1, 1))


class SEBlock(nn.Module):
    def __init__(self, ch_in, ch_out):
        super().__init__()
        self.main = nn.Sequential(nn.AdaptiveAvgPool2d(4), _sn(nn.Conv2d(ch_in, ch_out, 4, 1, 0, bias=False)),
                                  Swish(), _sn(nn.Conv2d(ch_out, ch_out, 1, 1, 0, bias=False)), nn.Sigmoid())

    def forward(self, small, big):
        return big * self.main(small)


def _up_block(cin, cout, lite):
    if lite:
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _sn(nn.Conv2d(cin, cout * 2, 3, 1, 1,
                                                                                          bias=False)),
                             nn.BatchNorm2d(cout * 2), GLU())
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         _sn(nn.Conv2d(cin, cout * 2, 3, 1, 1, bias=False)), NoiseInjection(),
                         nn.BatchNorm2d(cout * 2), GLU(),
                         _sn(nn.Conv2d(cout, cout * 2, 3, 1, 1, bias=False)), NoiseInjection(),
                         nn.BatchNorm2d(cout * 2), GLU())


class DummyMapping(nn.Module):
    def forward(self, z, c, **kwargs):
        return z.unsqueeze(1)


class FastganSynthesis(nn.Module):
    def __init__(self, ngf, z_dim, nc, img_resolution, lite):
        super().__init__()
        self.img_resolution = img_resolution
        nfc = {k: int(v * ngf) for k, v in {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25}.items()}
        self.init = InitLayer(z_dim, nfc[4])
        for r in (8, 16, 32, 64, 128, 256):  # built up to 256 whatever the resolution, as the official code does
            setattr(self, f"feat_{r}", _up_block(nfc[r // 2], nfc[r], lite))
        for t, s in ((64, 4), (128, 8), (256, 16)):
            setattr(self, f"se_{t}", SEBlock(nfc[s], nfc[t]))
        if img_resolution > 256:
            self.feat_512, self.se_512 = _up_block(nfc[256], nfc[512], lite), SEBlock(nfc[32], nfc[512])
        self.to_big = _sn(nn.Conv2d(nfc[img_resolution], nc, 3, 1, 1, bias=True))

    def forward(self, ws, c=None):
        z = ws[:, 0]
        z = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        f4 = self.init(z)
        f8 = self.feat_8(f4)
        f16 = self.feat_16(f8)
        f32 = self.feat_32(f16)
        f = self.se_64(f4, self.feat_64(f32))
        f = self.se_128(f8, self.feat_128(f))
        if self.img_resolution >= 256:
            f = self.se_256(f16, self.feat_256(f))
        if self.img_resolution >= 512:
            f = self.se_512(f32, self.feat_512(f))
        return self.to_big(f)


class FastganSynthesisCond(FastganSynthesis):
    pass


class Generator(nn.Module):
    def __init__(self, z_dim=256, img_resolution=128, img_channels=3, ngf=4, lite=True, cond=False):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, 0, 0
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.mapping = DummyMapping()
        synthesis = FastganSynthesisCond if cond else FastganSynthesis
        self.synthesis = synthesis(ngf, z_dim, img_channels, img_resolution, lite)

    def forward(self, z, c=None, **kwargs):
        return self.synthesis(self.mapping(z, c), c)


class EfficientNet(nn.Module):  # registered as timm's: the D's feature network in official pickles
    def __init__(self):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 4, 3)


class ProjectedDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.feature_network = EfficientNet()
        self.head = nn.Conv2d(4, 1, 1)


OFFICIAL = {
    "pg_modules.networks_fastgan": [Generator, DummyMapping, FastganSynthesis, FastganSynthesisCond],
    "pg_modules.blocks": [GLU, Swish, NoiseInjection, InitLayer, SEBlock],
    "pg_modules.discriminator": [ProjectedDiscriminator],
    "timm.models.efficientnet": [EfficientNet],
}


def official_fastgan(lite=True, res=128, ngf=4, z_dim=16, seed=0, cond=False):
    """A trained-looking official FastGAN: random weights and noise strengths, BN statistics and spectral-norm
    vectors moved by a few training-mode forwards. Returns (G, G_ema)."""
    torch.manual_seed(seed)
    G = Generator(z_dim, res, 3, ngf, lite, cond)
    with torch.no_grad():
        for name, p in G.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if name.endswith("weight") and p.ndim == 1 else 0.05))
        G.train()
        for _ in range(3):
            G(torch.randn(4, z_dim))
    return G, copy.deepcopy(G).eval()


def write_official_pickle(path, G, G_ema, extra=None):
    data = dict(G=G, G_ema=G_ema, D=ProjectedDiscriminator(),
                training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="data/x.zip",
                                         use_labels=False, max_size=12, xflip=False, resolution=G.img_resolution),
                progress=dict(cur_nimg=torch.LongTensor([2048]), cur_tick=torch.LongTensor([2]),
                              batch_idx=torch.LongTensor([128]), best_fid=9999))
    data.update(extra or {})
    with fake_modules(OFFICIAL), open(path, "wb") as f:
        pickle.dump(data, f)
    return str(path)


@pytest.mark.parametrize("lite,res", [(True, 128), (False, 128), (True, 256), (False, 512)])
def test_official_fastgan_imports_and_reproduces_its_outputs(tmp_path, lite, res):
    G, G_ema = official_fastgan(lite=lite, res=res)
    path = write_official_pickle(tmp_path / "official.pkl", G, G_ema)
    assert "pg_modules" not in sys.modules  # the importer cannot import what it names
    ours = snapshot.load_generator(path)
    spec = snapshot.load_snapshot(path)["networks"]["G"]
    assert spec == dict(class_name="training.networks_fastgan.Generator", z_dim=16, c_dim=0, w_dim=16,
                        img_resolution=res, img_channels=3, ngf=4, lite=lite, noise=not lite, tanh=False,
                        rgb_bias=True, init="torch")
    z = torch.randn(3, 16)
    with torch.no_grad():
        torch.manual_seed(7)  # the official code draws fresh noise in every call; draw the same here
        expected = G_ema(z)
        torch.manual_seed(7)
        got = ours(z, None, noise_mode="random")
    assert got.shape == (3, 3, res, res)
    assert expected.abs().max() > 0.1  # a real signal, not a collapsed output
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # G (train-mode weights of the same file) imports too, and differs from G_ema's BN statistics only by mode.
    G_ours = snapshot.load_generator(path, which="G")
    with torch.no_grad():
        torch.manual_seed(7)
        expected_G = G.eval()(z)
        torch.manual_seed(7)
        torch.testing.assert_close(G_ours(z, None, noise_mode="random"), expected_G, rtol=1e-4, atol=1e-5)


def test_imported_snapshot_carries_progress_and_the_dataset(tmp_path):
    G, G_ema = official_fastgan()
    path = write_official_pickle(tmp_path / "official.pkl", G, G_ema)
    data = snapshot.load_snapshot(path)
    assert data["kind"] == "imported" and data["source"] == "Projected GAN fastgan_lite"
    assert data["progress"] == {"cur_nimg": 2048} and "D" not in data
    assert snapshot.dataset_kwargs_from_snapshot(data, path) == dict(
        class_name="training.dataset.ImageFolderDataset", path="data/x.zip", use_labels=False, max_size=12,
        xflip=False, resolution=128)


def test_protocol_2_pickles_import_too(tmp_path):
    G, G_ema = official_fastgan()
    path = tmp_path / "p2.pkl"
    with fake_modules(OFFICIAL), open(path, "wb") as f:
        pickle.dump(dict(G_ema=G_ema), f, protocol=2)
    torch.testing.assert_close(snapshot.load_generator(str(path))(torch.ones(1, 16), None), G_ema(torch.ones(1, 16)))


# ---------------------------------------------------------------------------------------------
# NVIDIA's persistent classes (StyleGAN2-ADA, StyleGAN3, Projected GAN's StyleGAN2).

MARKER_SOURCE = "import pathlib\npathlib.Path({marker!r}).write_text('the embedded source ran')\n"


def _reconstruct_persistent_obj(meta):  # named as torch_utils.persistence's while pickling
    raise AssertionError("never called by the importer")


class EasyDict(dict):
    pass


def write_nvidia_pickle(path, G, init_kwargs, marker, class_names=None, extra=None):
    """Pickle our StyleGAN2 G as NVIDIA's loops do: every network module a torch_utils.persistence record with
    the (here: booby-trapped) module source, the constructor keywords on the top-level one."""
    source = MARKER_SOURCE.format(marker=str(marker))

    class NvidiaPickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, nn.Module) and type(obj).__module__ == "training.networks_stylegan2":
                state = dict(obj.__dict__)
                if obj is G:
                    state.update(_init_args=(), _init_kwargs=EasyDict(init_kwargs))
                name = (class_names or {}).get(type(obj).__name__, type(obj).__name__)
                return _reconstruct_persistent_obj, (dict(type="class", version=6, module_src=source,
                                                          class_name=name, state=state),)
            return NotImplemented

    with fake_modules({"torch_utils.persistence": [_reconstruct_persistent_obj], "dnnlib.util": [EasyDict]}):
        with open(path, "wb") as f:
            NvidiaPickler(f).dump(dict(G=G, G_ema=G, D=None, augment_pipe=None, **(extra or {})))
    return str(path)


def _stylegan2(c_dim=0, **kwargs):
    from training.networks_stylegan2 import Generator as G2

    torch.manual_seed(3)
    G = G2(z_dim=12, c_dim=c_dim, w_dim=16, img_resolution=16, img_channels=3,
           mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=16, num_fp16_res=2, conv_clamp=256,
           **kwargs)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        G.mapping.w_avg.normal_()
    return G.eval()


@pytest.mark.parametrize("layout", ["stylegan3", "stylegan2-ada", "projected_gan"])
def test_nvidia_stylegan2_pickles_import_without_running_their_source(tmp_path, layout):
    c_dim = 4 if layout == "stylegan2-ada" else 0
    G = _stylegan2(c_dim=c_dim)
    common = dict(z_dim=12, c_dim=c_dim, w_dim=16, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2))
    synthesis = dict(channel_base=256, channel_max=16, num_fp16_res=2, conv_clamp=256)
    if layout == "stylegan2-ada":
        init_kwargs = dict(common, synthesis_kwargs=synthesis)  # ADA nests them
    elif layout == "stylegan3":
        init_kwargs = dict(common, **synthesis)
    else:
        init_kwargs = dict(common, fused_modconv_default="inference_only", **synthesis)
    marker = tmp_path / "ran.txt"
    path = write_nvidia_pickle(tmp_path / "nv.pkl", G, init_kwargs, marker)
    ours = snapshot.load_generator(path)
    assert not marker.exists()
    assert "torch_utils.persistence" not in sys.modules
    z = torch.randn(3, 12)
    c = torch.eye(c_dim)[:3] if c_dim else torch.zeros(3, 0)
    for psi in (1, 0.6):
        torch.testing.assert_close(ours(z, c, truncation_psi=psi, noise_mode="const"),
                                   G(z, c, truncation_psi=psi, noise_mode="const"), rtol=1e-5, atol=1e-5)
    spec = snapshot.load_snapshot(path)["networks"]["G"]
    assert spec["class_name"] == "training.networks_stylegan2.Generator" and spec["channel_base"] == 256


def test_stylegan3_alias_free_generators_are_refused_with_a_reason(tmp_path):
    G = _stylegan2()
    G.synthesis.input = nn.Linear(2, 2)  # StyleGAN3 config t/r: synthesis.input is a SynthesisInput
    G.synthesis.input.__class__ = type("SynthesisInput", (nn.Linear,), {"__module__": "training.networks_stylegan2"})
    path = write_nvidia_pickle(tmp_path / "sg3.pkl", G, dict(z_dim=12, c_dim=0, w_dim=16, img_resolution=16,
                                                             img_channels=3), tmp_path / "ran.txt")
    with pytest.raises(PickleImportError, match="StyleGAN3 \\(alias-free"):
        snapshot.load_generator(path)


def test_conditional_official_fastgan_is_refused_with_a_reason(tmp_path):
    G, G_ema = official_fastgan(cond=True)
    path = write_official_pickle(tmp_path / "cond.pkl", G, G_ema)
    with pytest.raises(PickleImportError, match="class-conditional official FastGAN"):
        snapshot.load_generator(path)


# ---------------------------------------------------------------------------------------------
# Refusals: nothing the file names outside the allow-list is ever called.


def _global_pickle(module, name, arg="touch /tmp/should-never-exist"):
    """{'G_ema': module.name(arg)} in protocol 2, written opcode by opcode (any global, as an attacker would)."""
    return (b"\x80\x02}X\x05\x00\x00\x00G_emac" + module.encode() + b"\n" + name.encode() + b"\nX"
            + len(arg).to_bytes(4, "little") + arg.encode() + b"\x85Rs.")


@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"), ("builtins", "eval"),
                                         ("builtins", "exec"), ("subprocess", "Popen"), ("torch", "load"),
                                         ("torch.nn.modules.conv", "F"), ("pg_modules.networks_fastgan", "Evil"),
                                         ("numpy", "load"), ("pickle", "loads"), ("copyreg", "_reconstructor"),
                                         ("torch_utils.persistence", "_import_hook")])
def test_names_off_the_allow_list_are_refused_before_anything_runs(tmp_path, module, name):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(_global_pickle(module, name, f"touch {marker}"))
    with pytest.raises(PickleImportError) as err:
        snapshot.load_snapshot(str(path))
    assert f"'{module}.{name}'" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_unknown_persistent_classes_and_malformed_records_are_refused(tmp_path):
    G = _stylegan2()
    path = write_nvidia_pickle(tmp_path / "nv.pkl", G, {}, tmp_path / "ran", class_names={"Generator": "Evil"})
    with pytest.raises(PickleImportError, match="persistent class 'Evil'"):
        snapshot.load_snapshot(path)
    # A record that is not a class, or carries no name.
    for meta in (dict(type="function", class_name="Generator"), dict(type="class")):
        class Obj:
            def __reduce__(self, meta=meta):
                return _reconstruct_persistent_obj, (meta,)

        with fake_modules({"torch_utils.persistence": [_reconstruct_persistent_obj]}):
            (tmp_path / "bad.pkl").write_bytes(pickle.dumps({"G_ema": Obj()}, protocol=4))
        with pytest.raises(PickleImportError, match="persistence record is malformed"):
            snapshot.load_snapshot(str(tmp_path / "bad.pkl"))


class _HugeView:
    """A tensor record whose view is far larger than its storage (zero strides)."""

    def __reduce__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage is deprecated, but it is what pickled tensors hold
            storage = torch.zeros(4).storage()
        return torch._utils._rebuild_tensor_v2, (storage, 0, (10 ** 6, 10 ** 6), (0, 0), False,
                                                 collections.OrderedDict())


def test_crafted_records_cannot_blow_up_memory_or_smuggle_objects(tmp_path):
    cases = {
        "huge_view": ({"G_ema": _HugeView()}, "does not fit its storage"),
        "object_array": ({"G_ema": np.array([1, "a"], dtype=object)}, "not a plain number type"),
        "not_a_network": ([1, 2, 3], "not a network pickle"),
        "no_generator": ({"G_ema": 3}, "not a network pickle"),
    }
    for name, (obj, fragment) in cases.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=4))
        with pytest.raises(PickleImportError, match=fragment):
            snapshot.load_snapshot(str(path))
    # _reconstruct with a shape would allocate what the file never paid for.
    raw = (b"\x80\x02}X\x05\x00\x00\x00G_emacnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\xe1\xf5\x05"
           b"\x85C\x01b\x87Rs.")
    (tmp_path / "reconstruct.pkl").write_bytes(raw)
    with pytest.raises(PickleImportError, match="numpy array record is malformed"):
        snapshot.load_snapshot(str(tmp_path / "reconstruct.pkl"))


def test_damaged_pickles_are_one_line_errors(tmp_path):
    G, G_ema = official_fastgan()
    path = write_official_pickle(tmp_path / "official.pkl", G, G_ema)
    with open(path, "rb") as f:
        data = f.read()
    for cut in (len(data) // 2, len(data) - 3, 40):
        (tmp_path / "cut.pkl").write_bytes(data[:cut])
        with pytest.raises(PickleImportError) as err:
            snapshot.load_snapshot(str(tmp_path / "cut.pkl"))
        assert "cut.pkl" in str(err.value) and "\n" not in str(err.value)


def test_a_tensor_the_architecture_does_not_have_is_refused(tmp_path):
    G, G_ema = official_fastgan()
    G_ema.synthesis.extra = nn.Linear(2, 2)
    path = write_official_pickle(tmp_path / "x.pkl", G_ema, G_ema)
    with pytest.raises(PickleImportError, match="synthesis.extra.weight"):
        snapshot.load_generator(path)


# ---------------------------------------------------------------------------------------------
# The CLIs take these files like their own snapshots.


def _run(args, cwd=REPO):
    return subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_gen_images_writes_the_official_generators_images(tmp_path):
    G, G_ema = official_fastgan(lite=True)
    path = write_official_pickle(tmp_path / "official.pkl", G, G_ema)
    proc = _run(["gen_images.py", f"--network={path}", "--seeds=0-2", f"--outdir={tmp_path / 'out'}"])
    assert proc.returncode == 0, proc.stderr
    from torch_utils import image_io

    for seed in range(3):
        with torch.no_grad():
            expected = image_io.to_uint8(G_ema(seed_latent(seed, 16)))[0].permute(1, 2, 0).numpy()
        got = np.asarray(PIL.Image.open(tmp_path / "out" / f"seed{seed:04d}.png"))
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_clis_refuse_a_crafted_pickle_in_one_line_and_write_nothing(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(_global_pickle("os", "system", f"touch {marker}"))
    for args in (["gen_images.py", f"--network={evil}", "--seeds=0", f"--outdir={tmp_path / 'o1'}"],
                 ["gen_video.py", f"--network={evil}", "--seeds=0-1", f"--output={tmp_path / 'v.gif'}"],
                 ["calc_metrics.py", f"--network={evil}", "--metrics=fid2k_full", "--data=data/fluent-emoji-64.zip"],
                 ["train.py", f"--outdir={tmp_path / 'runs'}", "--cfg=fastgan_lite", "--data=data/fluent-emoji-64.zip",
                  "--batch=4", f"--resume={evil}"]):
        proc = _run(args)
        assert proc.returncode != 0
        errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
        assert len(errors) == 1 and "'os.system'" in errors[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not marker.exists()
    assert not any(os.path.exists(tmp_path / name) for name in ("o1", "v.gif", "runs"))


def _dataset_128(root, num=8):
    os.makedirs(root, exist_ok=True)
    rnd = np.random.RandomState(0)
    for i in range(num):
        PIL.Image.fromarray((rnd.rand(128, 128, 3) * 255).astype(np.uint8)).save(os.path.join(root, f"{i}.png"))
    return str(root)


def test_resume_from_an_official_pickle_trains_its_generator_with_a_fresh_D(tmp_path):
    G, G_ema = official_fastgan(lite=True, z_dim=256)
    path = write_official_pickle(tmp_path / "official.pkl", G, G_ema)
    data = _dataset_128(tmp_path / "data")
    common = [f"--outdir={tmp_path / 'runs'}", "--cfg=fastgan_lite", f"--data={data}", "--batch=4", "--kimg=0.004",
              "--tick=0.004", "--snap=1", "--metrics=none", "--workers=0", "--feat-res=32", "--grid=2x2",
              f"--resume={path}"]
    proc = _run(["train.py"] + common + ["--ngf=8"])  # the wrong width: says which options build it
    assert proc.returncode != 0
    assert "--cfg=fastgan_lite --g-arch=official --ngf=4" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run(["train.py"] + common + ["--ngf=4", "--g-arch=official"])
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert "is a Projected GAN fastgan_lite network pickle: G and G_ema come from it, D is new" in log
    (snap,) = glob.glob(str(tmp_path / "runs" / "*" / "network-snapshot-000000.004.pt"))
    trained = snapshot.load_snapshot(snap)
    imported = snapshot.load_snapshot(path)
    assert trained["progress"]["cur_nimg"] == 4  # counted from 0
    # One step moved G from the imported weights: close to them, not equal.
    key = "synthesis.blocks.8.convs.0.weight"
    delta = (trained["G"][key] - imported["G"][key]).abs().max()
    assert 0 < delta < 0.01


def test_writing_a_stand_in_pickle_leaves_real_modules_untouched(tmp_path):
    import timm.models.efficientnet as effnet
    real = effnet.EfficientNet
    G, G_ema = official_fastgan()
    write_official_pickle(tmp_path / "official.pkl", G, G_ema)
    assert effnet.EfficientNet is real  # later tests build the real feature network
