"""benchmarks/parity_official.py and benchmarks/official_harness.py without the official code: the image counts
both loops snapshot at, the arms' command lines, the summary table, and the README host lines put into a host's
train.py at the documented anchors (a stand-in train.py with the hosts' anchor lines)."""

import os
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import official_harness  # noqa: E402
import parity_official  # noqa: E402


def test_tick_points_follow_both_loops():
    """tick 0 after the first step, then every ceil(1000/batch) batches, then the first count at or past kimg."""
    assert parity_official.tick_points(16, 4) == [16, 1024, 2032, 3040, 4000]
    assert parity_official.tick_points(12, 2) == [12, 1020, 2004]  # 2000 rounded up to whole batches
    assert parity_official.eval_points(16, 16, [2, 4, 8, 16]) == [2032, 4048, 8080, 16000]
    assert parity_official.eval_points(16, 8, [2, 4, 8, 16]) == [2032, 4048, 8000]


def _settings(cfg):
    return dict(cfg=cfg, data="/d.zip", official="/off", batch=16, kimg=16, mirror=True, ngf=32, cbase=8192,
                cmax=256)


@pytest.mark.parametrize("cfg", ["fastgan_lite", "stylegan2"])
def test_arms_share_everything_but_what_they_compare(cfg):
    args = {arm: parity_official.arm_args(arm, _settings(cfg), 1, "/out") for arm in parity_official.ARMS}
    shared = ["--outdir=/out", f"--cfg={cfg}", "--data=/d.zip", "--batch=16", "--kimg=16", "--tick=1", "--snap=1",
              "--mirror=1", "--seed=1"]
    for arm, line in args.items():
        assert all(opt in line for opt in shared), arm
    assert "official_harness.py" in args["official"][1] and "--no-image-snapshots" in args["official"]
    assert ("--ngf=32" in args["official"]) == (cfg != "stylegan2")
    for arm in ("ours_equal", "ours_default"):
        assert args[arm][1].endswith("train.py") and "--g-arch=official" in args[arm] and "--ema-rampup=0.05" in \
            args[arm]
    lr = 0.002 if cfg == "stylegan2" else 0.0002
    assert "--reuse-fakes=0" in args["ours_equal"] and "--blur-sigma=0" in args["ours_equal"]
    assert f"--dlr={lr * 16 / 17:.9g}" in args["ours_equal"]
    assert not any(a.startswith(("--reuse-fakes", "--blur-sigma", "--dlr")) for a in args["ours_default"])
    # The D design is pinned in both of our arms (a changed default must not mix designs across seeds), with
    # separable mini-Ds exactly where the official configs use them.
    for arm in ("ours_equal", "ours_default"):
        assert "--csm-layout=official" in args[arm]
        assert f"--separable={int(cfg == 'stylegan2')}" in args[arm]


def test_official_cli_gets_whole_kimg_and_is_stopped_at_the_last_point(tmp_path):
    """Their --kimg is an integer: the official arm trains to the next whole kimg, and the runner stops it once the
    snapshot of the last evaluated point is complete instead of paying for the images past it."""
    s = dict(_settings("fastgan_lite"), kimg=8.08)
    assert "--kimg=9" in parity_official.arm_args("official", s, 0, "/out")
    assert "--kimg=8.08" in parity_official.arm_args("ours_equal", s, 0, "/out")
    import subprocess

    snap = tmp_path / "00000-run" / "network-snapshot-000008.080.pkl"
    script = f"import os, time; os.makedirs({str(snap.parent)!r}); open({str(snap)!r}, 'wb').write(b'x' * 10); " \
             "time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", script])
    assert parity_official.wait_for_last_snapshot(proc, str(tmp_path), 8080, poll=0.5) is True
    assert proc.returncode is not None  # terminated, not waited out
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    assert parity_official.wait_for_last_snapshot(done, str(tmp_path / "none"), 8080, poll=0.1) is False


def test_summary_is_mean_and_range_over_seeds():
    study = dict(runs={
        "official/s0": dict(arm="official", seed=0, points={"2032": dict(nimg=2032, results={"fid2k_full": 100.0})}),
        "official/s1": dict(arm="official", seed=1, points={"2032": dict(nimg=2032, results={"fid2k_full": 110.0})}),
        "ours_equal/s0": dict(arm="ours_equal", seed=0, points={"2032": dict(nimg=2032,
                                                                             results={"fid2k_full": 90.0})}),
    })
    rows = parity_official.summary_rows(study)
    official = [r for r in rows if r["arm"] == "official"][0]
    assert (official["mean"], official["lo"], official["hi"], official["n"]) == (105.0, 100.0, 110.0, 2)
    table = parity_official.markdown_table(rows, ["official", "ours_equal"])
    assert "| 2.032 | fid2k_full | 105 [100, 110] | 90 (1 seed) |" in table


SG3_TRAIN = """def main(**kwargs):
    c.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss')
    # Resume.
    if opts.resume is not None:
        c.loss_kwargs.blur_init_sigma = 0 # Disable blur rampup.

    # Performance-related toggles.
    if opts.fp32:
        pass
"""

ADA_TRAIN = """def main(ctx, outdir, dry_run, **config_kwargs):
    try:
        run_desc, args = setup_training_loop_kwargs(**config_kwargs)
    except UserError as err:
        ctx.fail(err)

    # Pick output directory.
"""


@pytest.mark.parametrize("host,text", [("stylegan3", SG3_TRAIN), ("stylegan2-ada", ADA_TRAIN)])
def test_host_lines_go_in_at_the_documented_anchor_and_compile(tmp_path, host, text):
    path = tmp_path / "train.py"
    path.write_text(text)
    patched = official_harness.patch_host(str(path), official_harness.HOSTS[host])
    compile(patched, "train.py", "exec")
    lines = patched.splitlines()
    first = next(i for i, line in enumerate(lines) if "projector_plugin.ProjectedDiscriminator" in line)
    assert lines[first].startswith("    ") and not lines[first].startswith("     ")  # main's body, not inside a block
    if host == "stylegan3":
        assert first > next(i for i, line in enumerate(lines) if "blur_init_sigma = 0 # Disable" in line)
        assert first < next(i for i, line in enumerate(lines) if "# Performance-related toggles." in line)
    else:
        assert first == next(i for i, line in enumerate(lines) if "ctx.fail(err)" in line) + 1


def test_projected_gan_host_changes_only_the_two_class_names(tmp_path):
    path = tmp_path / "train.py"
    path.write_text("    c.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.ProjectedGANLoss')\n"
                    "    c.D_kwargs = dnnlib.EasyDict(\n"
                    "        class_name='pg_modules.discriminator.ProjectedDiscriminator',\n        diffaug=True)\n")
    patched = official_harness.patch_host(str(path), official_harness.HOSTS["projected_gan"])
    before, after = path.read_text().splitlines(), patched.splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 2
    assert "projector_plugin.ProjectedGANLoss" in changed[0][1] and "projector_plugin.ProjectedDiscriminator" in \
        changed[1][1]


def test_a_second_runner_on_the_same_study_is_refused(tmp_path):
    """Two runners on one study folder: the second would delete the first's training run as 'interrupted'."""
    import click

    first = parity_official.lock_study(str(tmp_path))
    with pytest.raises(click.ClickException, match=rf"another parity_official.py \(pid {os.getpid()}\) is running"):
        parity_official.lock_study(str(tmp_path))
    first.close()  # the process ended
    parity_official.lock_study(str(tmp_path)).close()
