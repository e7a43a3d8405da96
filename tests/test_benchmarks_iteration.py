"""benchmarks/bench_iteration.py's `official` row without the official code: a stand-in checkout with the same
layout (train.py building a config and calling launch_training, dnnlib, pg_modules, a namespace `training/`) is
imported next to ours, driven through one iteration, and ours are back in sys.modules afterwards."""

import os
import sys
import textwrap
import types

import pytest
import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import bench_iteration  # noqa: E402

STAND_IN = {
    "train.py": """
        import click
        import dnnlib

        def launch_training(c, desc, outdir, dry_run):
            raise RuntimeError("the benchmark must not launch training")

        @click.command()
        @click.option("--outdir")
        @click.option("--cfg")
        @click.option("--data")
        @click.option("--gpus", type=int)
        @click.option("--batch", type=int)
        @click.option("--metrics")
        @click.option("--workers", type=int)
        def main(**opts):
            import zipfile
            with zipfile.ZipFile(opts["data"]) as zf:  # the real one reads the resolution from the data
                assert zf.namelist() == ["0.png"]
            c = dnnlib.EasyDict(
                G_kwargs=dnnlib.EasyDict(class_name="pg_modules.networks_fastgan.Generator", ngf=4),
                D_kwargs=dnnlib.EasyDict(class_name="pg_modules.discriminator.ProjectedDiscriminator"),
                loss_kwargs=dnnlib.EasyDict(class_name="training.loss.ProjectedGANLoss"),
                G_opt_kwargs=dnnlib.EasyDict(class_name="torch.optim.Adam", lr=0.01, betas=[0, 0.99], eps=1e-8),
                D_opt_kwargs=dnnlib.EasyDict(class_name="torch.optim.Adam", lr=0.01, betas=[0, 0.99], eps=1e-8))
            launch_training(c=c, desc=opts["cfg"], outdir=opts["outdir"], dry_run=False)
            c.run_dir  # the real main reads what launch_training set
    """,
    "dnnlib/__init__.py": """
        from . import util
        EasyDict = util.EasyDict
    """,
    "dnnlib/util.py": """
        import importlib

        class EasyDict(dict):
            def __getattr__(self, name):
                return self[name]
            def __setattr__(self, name, value):
                self[name] = value

        def construct_class_by_name(*args, class_name, **kwargs):
            module, name = class_name.rsplit(".", 1)
            return getattr(importlib.import_module(module), name)(*args, **kwargs)
    """,
    "pg_modules/__init__.py": "",
    "pg_modules/networks_fastgan.py": """
        import torch

        class Generator(torch.nn.Module):
            def __init__(self, ngf, c_dim, img_resolution, img_channels):
                super().__init__()
                self.z_dim, self.res = 3, img_resolution
                self.fc = torch.nn.Linear(3, img_channels * img_resolution ** 2)
                self.register_buffer("calls", torch.zeros([]))

            def forward(self, z, c):
                self.calls += 1
                return self.fc(z).reshape(len(z), -1, self.res, self.res)
    """,
    "pg_modules/discriminator.py": """
        import torch

        class ProjectedDiscriminator(torch.nn.Module):
            def __init__(self, c_dim, img_resolution, img_channels):
                super().__init__()
                self.feature_network = torch.nn.Conv2d(img_channels, 2, 1)
                self.head = torch.nn.Conv2d(2, 1, 1)

            def forward(self, x, c):
                return self.head(self.feature_network(x))
    """,
    "training/loss.py": """
        import torch.nn.functional as F

        PHASES = []

        class ProjectedGANLoss:
            def __init__(self, device, G, G_ema, D):
                self.G, self.D = G, D

            def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
                PHASES.append(phase)
                if phase == "Gboth":
                    (-self.D(self.G(gen_z, gen_c), gen_c)).mean().backward()
                else:
                    fake = self.G(gen_z, gen_c).detach()
                    (F.relu(1 + self.D(fake, gen_c)).mean() + F.relu(1 - self.D(real_img, real_c)).mean()).backward()
    """,
}


@pytest.fixture
def checkout(tmp_path):
    for rel, text in STAND_IN.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return str(tmp_path)


def test_official_row_imports_theirs_and_gives_ours_back(checkout):
    import timm

    import training  # ours: same top-level name as theirs
    ours = {name: sys.modules[name] for name in ("train", "training", "torch_utils")}
    create_model, path = timm.create_model, list(sys.path)
    args = types.SimpleNamespace(cfg="fastgan", res=4, batch=2, ngf=None)

    iteration = bench_iteration.make_official(checkout, args, torch.device("cpu"))

    assert {name: sys.modules[name] for name in ours} == ours and sys.modules["training"] is training
    assert "pg_modules" not in sys.modules and "dnnlib" not in sys.modules
    assert timm.create_model is create_model and sys.path == path
    # The objects built inside run outside: their functions hold the stand-in's module globals.
    phases = {name: module for name, module, _ in _closure(iteration, "phases")}
    G, D = phases["Gboth"], phases["Dmain"]
    assert type(G).__module__ == "pg_modules.networks_fastgan" and type(D).__module__ == "pg_modules.discriminator"
    G_ema = _closure(iteration, "G_ema")
    before = {k: v.clone() for k, v in dict(G=G.fc.weight, D=D.head.weight, F=D.feature_network.weight,
                                            E=G_ema.fc.weight).items()}
    iteration()
    their_loss = sys.modules.get("training.loss")
    assert their_loss is None or their_loss.__file__.startswith(REPO)  # theirs never re-enter sys.modules
    assert _closure(iteration, "loss").accumulate_gradients.__globals__["PHASES"] == ["Gboth", "Dmain"]
    assert not torch.equal(G.fc.weight, before["G"]) and not torch.equal(D.head.weight, before["D"])
    assert torch.equal(D.feature_network.weight, before["F"])  # their loop freezes the feature network in Dmain
    # G EMA, as their loop does it: ema = lerp(G, ema, 0.999), and G's buffers copied.
    torch.testing.assert_close(G_ema.fc.weight, G.fc.weight.lerp(before["E"], 0.999))
    assert G_ema.calls == G.calls == 2 and all(not p.requires_grad for p in G.parameters())


def _closure(fn, name):
    return fn.__closure__[fn.__code__.co_freevars.index(name)].cell_contents


def test_official_row_refuses_a_folder_that_is_not_a_checkout(tmp_path):
    args = types.SimpleNamespace(cfg="fastgan", res=4, batch=2, ngf=None)
    with pytest.raises(SystemExit, match="--official: .* is not a projected_gan checkout"):
        bench_iteration.make_official(str(tmp_path), args, torch.device("cpu"))


def test_op_profile_splits_convolutions_from_the_rest():
    x, w = torch.randn(2, 8, 32, 32, requires_grad=True), torch.randn(8, 8, 3, 3, requires_grad=True)
    a = torch.randn(256, 256)

    def conv_only():
        torch.nn.functional.conv2d(x, w, padding=1).sum().backward()

    def matmul_only():
        for _ in range(4):
            a @ a

    conv = bench_iteration.op_profile(conv_only, "conv_only")
    mm = bench_iteration.op_profile(matmul_only, "matmul_only")
    assert 0 < conv["conv_s"] <= conv["aten_s"] and conv["conv_s"] > 0.5 * conv["aten_s"]
    assert mm["conv_s"] == 0 and mm["aten_s"] > 0
    assert any("conv" in row["op"] for row in conv["top"]) and conv["variant"] == "conv_only"


def test_official_row_names_a_missing_dependency_of_their_code(checkout):
    with open(os.path.join(checkout, "train.py"), "a") as f:
        f.write("\nimport dill_not_installed_here\n")
    args = types.SimpleNamespace(cfg="fastgan", res=4, batch=2, ngf=None)
    with pytest.raises(SystemExit, match="--official: importing its train.py failed: .*dill_not_installed_here"):
        bench_iteration.make_official(checkout, args, torch.device("cpu"))
    assert "pg_modules" not in sys.modules and "dnnlib" not in sys.modules  # ours are back after the failure


@pytest.mark.parametrize("layout,expected", [(None, "official"), ("compact", "compact"), ("official", "official")])
def test_layout_option_reaches_both_benchmarks_discriminators(layout, expected):
    """--layout picks the projected D's CSM design in both benchmarks (default: train.py's), so the recorded
    figures say which design they measured; bench_discriminator's fast_compact variant is always compact."""
    import argparse

    import bench_discriminator

    args = argparse.Namespace(cfg="fastgan_lite", batch=2, ngf=8, feat_res=32, layout=layout)
    assert bench_iteration.resolved_config(args).D_kwargs["layout"] == expected
    args = argparse.Namespace(feat_res=32, layout=layout or "official")
    for variant in ("fast", "plain", "fast_compact"):
        D = bench_discriminator.build_D(variant, args, torch.device("cpu"))
        assert D.layout == ("compact" if variant == "fast_compact" else expected)
