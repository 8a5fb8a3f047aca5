"""The model commands through ``flowscope.cli.main``: train, sample, log-prob, invert."""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import subprocess
import sys
import types
from collections import Counter
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import torch

import flowscope.evaluate  # imported here, not first inside a test that patches runs.run_data
import flowscope.explore
import flowscope.plots
import flowscope.reflow
import flowscope.runs
from flowscope.cli import main
from flowscope.data import RING_COLORS, load_points
from flowscope.matching import DEFAULT_CONDITIONAL_TIME_ALPHA, DEFAULT_TIME_ALPHA
from flowscope.recipe import recipe
from flowscope.runs import load_run, train_run
from flowscope.train import TrainConfig

torch.set_num_threads(1)

TINY = ["--n-points", "300", "--epochs", "1", "--batch-size", "64", "--holdout-points", "300"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny one-epoch runs of nf (through the CLI) and cfm (through the library)."""
    root = tmp_path_factory.mktemp("cli")
    assert main(["train", "nf", "--out", str(root / "nf"), *TINY]) == 0
    config = TrainConfig(epochs=1, batch_size=64)
    train_run("cfm", root / "cfm", n_points=300, holdout_points=50, config=config)
    return {"nf": root / "nf", "cfm": root / "cfm"}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_csv(path_or_text: Path | str) -> tuple[list[str], np.ndarray]:
    text = path_or_text.read_text() if isinstance(path_or_text, Path) else path_or_text
    header, *rows = text.strip().splitlines()
    return header.split(","), np.array([[float(v) for v in r.split(",")] for r in rows])


def one_error_line(code: int, err: str) -> str:
    assert code != 0
    assert err.startswith("flowscope: error: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


# -- help and train ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "sample", "log-prob", "invert"])
def test_every_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"flowscope {command} " in out.split("example:")[1]


def test_top_level_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("train", "sample", "log-prob", "invert"):
        assert command in out


def test_the_top_level_help_is_the_full_parsers_and_imports_no_torch():
    from flowscope.cli import COMMANDS, build_parser

    def commands(parser):
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return list(sub.choices), parser.format_help()

    full, shallow = commands(build_parser()), commands(build_parser(full=False))
    assert full[0] == list(COMMANDS) == shallow[0]  # every command declared, in order
    assert full[1] == shallow[1]
    code = (
        "import sys\nfrom flowscope.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print(sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv", [[], ["train"], ["sample"], ["eval"], ["report"]])
def test_help_says_seed_only_for_random_seeds(argv, capsys):
    """The course exercise is "the study" to a user; "seed" is a random seed only."""
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    out = capsys.readouterr().out
    assert "seed's" not in out
    for line in out.splitlines():
        if "seed" in line.lower():  # only the --seed options, their values and help
            assert "--seed" in line or "seed of" in line or "SEED" in line, line
    if argv == ["train"]:
        assert "the study's recipe" in out and "250,000" in out  # the defaults, named


def test_train_says_where_and_how_long(runs, capsys, tmp_path):
    out_dir = tmp_path / "new" / "fm"  # its parent does not exist yet: made, as mkdir -p
    code, out, _ = run(capsys, "train", "fm", "--out", out_dir, *TINY, "--seed", "4")
    assert code == 0
    assert f"run saved to {out_dir}" in out
    assert " s of it in the epochs); validation loss " in out
    assert "(Eq. 16 with t ~" in out  # flow matching's loss is not a likelihood
    config = json.loads((out_dir / "config.json").read_text())
    # The epochs' seconds it quotes are those config.json records.
    assert f"({config['train_seconds']:.1f} s of it in the epochs)" in out
    assert config["train"] == {
        "epochs": 1,
        "batch_size": 64,
        "lr": 1e-3,
        "seed": 4,
        "val_size": 10_000,
        "grad_clip": None,
        "min_epochs": 20,
        "min_steps": 2000,
        "weight_decay": None,
        "noise": None,
        "small_decay": 2.0,
        "small_noise": 0.15,
        "keep_best": False,
    }
    assert config["data"]["n_points"] == 300
    assert config["train_seconds"] > 0


def test_train_gives_the_flows_validation_loss_in_its_units(capsys, tmp_path):
    code, out, _ = run(capsys, "train", "nf", "--out", tmp_path / "nf", *TINY)
    assert code == 0
    assert re.search(r"validation loss [0-9.]+ nats/point \(NLL in the model's standardized", out)


def test_train_defaults_are_the_study_recipe(runs, monkeypatch, capsys, tmp_path):
    seen = {}

    def fake_train_run(name, out, **kwargs):
        seen.update(kwargs, name=name)
        raise KeyboardInterrupt

    monkeypatch.setattr(flowscope.runs, "train_run", fake_train_run)
    code, _, err = run(capsys, "train", "nf", "--out", tmp_path / "x")
    assert code == 130 and "nothing was saved" in err
    assert seen["config"] == recipe("nf")
    assert (seen["config"].batch_size, seen["config"].lr, seen["config"].epochs) == (
        128,
        1e-3,
        None,
    )
    assert seen["config"].schedule(250_000) == TrainConfig().schedule(250_000)  # the study's
    assert (seen["data"], seen["n_points"], seen["name"]) == ("olympic", 250_000, "nf")


def test_a_type_with_its_own_recipe_trains_with_it(monkeypatch, capsys, tmp_path):
    seen = {}

    def fake_train_run(name, out, **kwargs):
        seen.update(kwargs, name=name)
        raise KeyboardInterrupt

    monkeypatch.setattr(flowscope.runs, "train_run", fake_train_run)
    assert run(capsys, "train", "nsf", "--out", tmp_path / "x")[0] == 130
    recipe = flowscope.models.MODELS.get("nsf").recipe
    assert seen["config"] == TrainConfig(**recipe) and seen["conditional"] is None
    assert run(capsys, "train", "nsf", "--out", tmp_path / "x", "--epochs", "3")[0] == 130
    assert seen["config"] == TrainConfig(**{**recipe, "epochs": 3})
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert f"nsf trains with its own (epochs {recipe['min_epochs']}," in capsys.readouterr().out


def stopping_after_first_epoch(train_run):
    """``train_run`` that stops like a Ctrl-C after the first epoch it finishes."""

    @functools.wraps(train_run)
    def interrupted(*args, on_epoch_end, **kwargs):
        def stop(model, state):
            on_epoch_end(model, state)
            raise KeyboardInterrupt

        return train_run(*args, on_epoch_end=stop, **kwargs)

    return interrupted


def test_interrupted_training_says_how_to_resume(runs, monkeypatch, capsys, tmp_path):
    out = tmp_path / "nf"
    real = flowscope.runs.train_run
    monkeypatch.setattr(flowscope.runs, "train_run", stopping_after_first_epoch(real))
    code, _, err = run(capsys, "train", "nf", "--out", out, *TINY[:2], "--epochs", "2")
    assert code == 130
    assert f"flowscope train nf --out {out} --resume" in err
    monkeypatch.setattr(flowscope.runs, "train_run", real)
    code, stdout, _ = run(capsys, "train", "nf", "--out", out, "--resume")
    assert code == 0 and "resumed at epoch 2" in stdout
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2


def interrupt_then_resume(monkeypatch, capsys, out, model, *options):
    """Train ``model`` with ``options`` into ``out``, stopped after epoch 1 of 2, then resume
    it without them; returns the model config recorded before the resume and its stdout."""
    real = flowscope.runs.train_run
    monkeypatch.setattr(flowscope.runs, "train_run", stopping_after_first_epoch(real))
    argv = ["train", model, "--out", out, *TINY[:2], "--epochs", "2", *options]
    assert run(capsys, *argv)[0] == 130
    recorded = json.loads((out / "config.json").read_text())["model"]
    monkeypatch.setattr(flowscope.runs, "train_run", real)
    code, stdout, _ = run(capsys, "train", model, "--out", out, "--resume")
    assert code == 0 and "resumed at epoch 2" in stdout
    return recorded, stdout


def test_train_time_alpha_is_recorded_and_kept_on_resume(monkeypatch, capsys, tmp_path):
    out = tmp_path / "fm"
    # Not given again on resume: the run's own value, not the default, continues.
    recorded, stdout = interrupt_then_resume(monkeypatch, capsys, out, "fm", "--time-alpha", "1")
    assert recorded["times"] == {"name": "uniform"}
    # The validation loss depends on the time distribution, and the summary says so.
    assert "(Eq. 16 with t ~ U[0, 1]; compare models with `flowscope eval`)" in stdout
    # Given with another value: refused, naming it.
    err = one_error_line(
        *run(capsys, "train", "fm", "--out", out, "--resume", "--time-alpha", "5")[::2]
    )
    assert "times uniform (now beta(alpha=5.0))" in err
    # Resuming as another model names the model, not a constructor argument.
    err = one_error_line(*run(capsys, "train", "nf", "--out", out, "--resume")[::2])
    assert f"{out} holds a run of model fm, not nf: resume it as fm" in err


def test_train_standardize_is_recorded_and_kept_on_resume(monkeypatch, capsys, tmp_path):
    out = tmp_path / "cfm"
    recorded, _ = interrupt_then_resume(monkeypatch, capsys, out, "cfm", "--standardize", "global")
    assert recorded["standardize"] == "global"
    model, _ = flowscope.runs.load_run(out)
    assert not model.standardization.per_class
    err = one_error_line(
        *run(capsys, "train", "cfm", "--out", out, "--resume", "--standardize", "class")[::2]
    )
    assert "standardize" in err and "global" in err
    # Resumed as the unconditional model: the folder's model is named, not an argument.
    err = one_error_line(*run(capsys, "train", "fm", "--out", out, "--resume")[::2])
    assert f"{out} holds a run of model cfm, not fm" in err


def test_train_gaussian_skip_is_recorded_and_kept_on_resume(monkeypatch, capsys, tmp_path):
    out = tmp_path / "fm"
    # Not given again on resume: the run's own value, not the default, continues.
    recorded, _ = interrupt_then_resume(monkeypatch, capsys, out, "fm", "--no-gaussian-skip")
    assert recorded["gaussian_skip"] is False
    assert not flowscope.runs.load_run(out)[0].gaussian_skip
    err = one_error_line(
        *run(capsys, "train", "fm", "--out", out, "--resume", "--gaussian-skip")[::2]
    )
    assert "gaussian_skip False (now True)" in err


def test_train_resumes_a_folder_written_before_time_alpha(runs, monkeypatch, capsys, tmp_path):
    out = tmp_path / "fm"
    real = flowscope.runs.train_run
    monkeypatch.setattr(flowscope.runs, "train_run", stopping_after_first_epoch(real))
    assert run(capsys, "train", "fm", "--out", out, *TINY[:2], "--epochs", "2")[0] == 130
    monkeypatch.setattr(flowscope.runs, "train_run", real)
    config = json.loads((out / "config.json").read_text())
    assert config["model"].pop("times") == {"name": "beta", "alpha": DEFAULT_TIME_ALPHA}
    (out / "config.json").write_text(json.dumps(config))
    # Such a folder was trained with uniform times; it continues with them.
    code, stdout, _ = run(capsys, "train", "fm", "--out", out, "--resume")
    assert code == 0 and "resumed at epoch 2" in stdout
    assert json.loads((out / "config.json").read_text())["model"]["times"] == {"name": "uniform"}


@pytest.mark.parametrize("poison_after", [0, 1])
def test_diverged_training_says_what_the_cli_kept(monkeypatch, capsys, tmp_path, poison_after):
    out = tmp_path / "nf"
    real_fit = flowscope.runs.fit

    def fit_that_diverges(model, *args, on_epoch_end, **kwargs):
        def poison(m, state):
            on_epoch_end(m, state)
            with torch.no_grad():
                next(m.parameters()).fill_(float("nan"))

        if poison_after == 0:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return real_fit(model, *args, on_epoch_end=poison, **kwargs)

    monkeypatch.setattr(flowscope.runs, "fit", fit_that_diverges)
    # With poison_after == 0 the standardization is fitted first, and the NaN weights
    # make the very first loss NaN; otherwise epoch 1 ends and epoch 2 fails at step 1.
    err = one_error_line(*run(capsys, "train", "nf", "--out", out, *TINY[:2], "--epochs", "2")[::2])
    step = "epoch 1, step 1 of 3" if poison_after == 0 else "epoch 2, step 1 of 3"
    assert f"nf: the training loss became nan at {step}" in err
    kept = "no epoch was saved" if poison_after == 0 else f"{out} keeps epoch 1"
    assert kept in err and "smaller --lr or another --seed" in err
    assert "on_epoch_end" not in err  # the library's wording is for library users
    assert (out / "checkpoint.safetensors").exists() == (poison_after == 1)
    if poison_after == 1:  # the epoch kept is one of a diverged run: resuming does not help
        monkeypatch.setattr(flowscope.runs, "fit", real_fit)
        code, _, err = run(capsys, "sample", out, "-n", "3", "-o", tmp_path / "s.csv")
        assert code == 0 and "partial run, stopped after epoch 1 of 2 when its training " in err
        assert f"nf: the training loss became nan at {step})" in err
        again = "train it again with the same options, --overwrite and a smaller --lr (e.g. "
        assert again + "0.0005) or another --seed" in err and "--resume" not in err


def test_a_run_that_diverges_at_once_leaves_the_run_it_overwrites(monkeypatch, capsys, tmp_path):
    out = tmp_path / "nf"
    assert run(capsys, "train", "nf", "--out", out, *TINY, "--couplings", "2")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_fit = flowscope.runs.fit

    def fit_that_diverges(model, *args, **kwargs):
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(flowscope.runs, "fit", fit_that_diverges)
    argv = ["train", "nf", "--out", out, *TINY, "--couplings", "4", "--overwrite"]
    err = one_error_line(*run(capsys, *argv)[::2])
    assert f"no epoch was saved; {out} still holds the run it held" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # byte for byte
    monkeypatch.setattr(flowscope.runs, "fit", real_fit)
    assert run(capsys, "sample", out, "-n", "3")[0] == 0


def test_tensorboard_missing_fails_early(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    err = one_error_line(
        *run(capsys, "train", "nf", "--out", tmp_path / "tb", "--tensorboard")[::2]
    )
    assert "pip install tensorboard" in err
    assert not (tmp_path / "tb").exists()


def test_tensorboard_gets_every_epoch_and_batch(monkeypatch, capsys, tmp_path):
    calls: list[tuple] = []

    class Writer:  # stands in for torch.utils.tensorboard.SummaryWriter
        def __init__(self, log_dir):
            calls.append(("open", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            calls.append(("close",))

    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = Writer
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    out = tmp_path / "tb"
    argv = ["train", "fm", "--out", out, "--n-points", "300", "--epochs", "2", "--tensorboard"]
    assert run(capsys, *argv)[0] == 0
    assert calls[0] == ("open", str(out / "tensorboard")) and calls[-1] == ("close",)
    header, saved = read_csv(out / "batches.csv")
    assert header == ["step", "loss"] and len(saved) == 2 * 3  # ceil(300 / 128) steps an epoch
    batch = [(v, step) for tag, v, step in calls[1:-1] if tag == "batch/loss"]
    assert batch == [(loss, int(step)) for step, loss in saved]
    assert [step for tag, _, step in calls[1:-1] if tag == "epoch/val_loss"] == [1, 2]


# -- sample -----------------------------------------------------------------------------


def test_sample_writes_reproducible_csv(runs, capsys, tmp_path):
    code, out, _ = run(capsys, "sample", runs["nf"], "-n", 50, "--seed", 1)
    assert code == 0
    header, x = read_csv(out)
    assert header == ["x", "y"] and x.shape == (50, 2) and np.isfinite(x).all()
    model, _ = load_run(runs["nf"])
    expected = model.sample(50, generator=torch.Generator().manual_seed(1)).double().numpy()
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-6)
    assert run(capsys, "sample", runs["nf"], "-n", 50, "--seed", 1)[1] == out
    assert run(capsys, "sample", runs["nf"], "-n", 50, "--seed", 2)[1] != out


def test_flow_ignores_dt_with_a_note(runs, capsys):
    plain = run(capsys, "sample", runs["nf"], "-n", 5)[1]
    code, out, err = run(capsys, "sample", runs["nf"], "-n", 5, "--dt", 0.1, "--solver", "rk4")
    assert code == 0 and out == plain
    assert "note: --dt and --solver ignored" in err


def test_guided_and_few_step_sampling(capsys, tmp_path):
    # --label-dropout alone is p = 0.1; --steps K is K Euler steps, dt = 1/K.
    out = tmp_path / "cfg"
    assert run(capsys, "train", "cfm", "--label-dropout", "--out", out, *TINY)[0] == 0
    model, info = load_run(out)
    assert info.model["label_dropout"] == 0.1 and model.null_label == 5
    # Label dropout keeps the conditional model's default time sampler; --time-alpha sets it.
    assert info.model["times"] == {"name": "beta", "alpha": DEFAULT_CONDITIONAL_TIME_ALPHA}
    given = tmp_path / "cfg-a3"
    argv = ["train", "cfm", "--label-dropout", "--time-alpha", 3, "--out", given, *TINY]
    assert run(capsys, *argv)[0] == 0
    assert load_run(given)[1].model["times"] == {"name": "beta", "alpha": 3.0}
    argv = ["sample", out, "-n", 20, "--label", "blue", "--steps", 4]
    code, text, _ = run(capsys, *argv, "--guidance", 2)
    assert code == 0
    header, x = read_csv(text)
    want = model.sample(
        20, labels=1, generator=torch.Generator().manual_seed(0), dt=0.25, guidance=2
    )
    np.testing.assert_allclose(x[:, :2], want.double().numpy(), rtol=1e-6, atol=1e-6)
    assert run(capsys, *argv, "--guidance", 1)[1] == run(capsys, *argv)[1]
    assert run(capsys, *argv, "--guidance", 0)[1] != run(capsys, *argv)[1]
    # log-prob takes --guidance to say why only w = 1 has a density.
    lp = ["log-prob", out, "--point", "1,0", "--label", "blue"]
    assert run(capsys, *lp, "--guidance", 1)[1] == run(capsys, *lp)[1]
    code, _, err = run(capsys, *lp, "--guidance", 2)
    assert code == 2 and "no log-density with guidance w = 2" in one_error_line(code, err)


def test_a_flow_ignores_steps_with_a_note(runs, capsys):
    plain = run(capsys, "sample", runs["nf"], "-n", 5)[1]
    code, out, err = run(capsys, "sample", runs["nf"], "-n", 5, "--steps", 3)
    assert code == 0 and out == plain and "note: --steps ignored" in err


@pytest.mark.parametrize(
    ("run_name", "extra", "match"),
    [
        ("nf", ["--guidance", "2"], "unconditional; guidance steers a cfm model"),
        ("cfm", ["--guidance", "2"], "trained without (label_dropout=0)"),
        ("cfm", ["--guidance", "-1"], "finite number >= 0"),
        ("cfm", ["--guidance=-0.5"], "finite number >= 0"),
        ("cfm", ["--guidance", "nan"], "finite number >= 0"),
        ("cfm", ["--guidance", "inf"], "finite number >= 0"),
        ("cfm", ["--steps", "0"], "argument --steps: must be a positive integer, got '0'"),
        ("cfm", ["--steps", "-3"], "argument --steps: must be a positive integer"),
        ("cfm", ["--steps", "2.5"], "argument --steps: must be a positive integer"),
        ("cfm", ["--steps", "2", "--dt", "0.1"], "not allowed with"),
    ],
)
def test_bad_guidance_and_steps_are_one_line_errors(runs, capsys, run_name, extra, match):
    code, out, err = run(capsys, "sample", runs[run_name], "-n", 5, *extra)
    assert match in one_error_line(code, err) and out == ""


def test_label_dropout_is_a_cfm_option_with_a_probability(capsys, tmp_path):
    for argv, match in [
        (["fm", "--label-dropout", "0.1"], "--label-dropout applies to cfm, not to fm"),
        (["cfm", "--label-dropout", "1"], "must be a number in [0, 1)"),
        (["cfm", "--label-dropout", "0.1", "--standardize", "class"], "standardize='global'"),
    ]:
        code, _, err = run(capsys, "train", *argv, "--out", tmp_path / "x", *TINY)
        assert match in one_error_line(code, err)
    assert not (tmp_path / "x").exists()


def test_conditional_sample_is_balanced_without_label(runs, capsys, tmp_path):
    path = tmp_path / "s.csv"
    assert run(capsys, "sample", runs["cfm"], "-n", 12, "--dt", 0.05, "-o", path)[0] == 0
    header, x = read_csv(path)
    assert header == ["x", "y", "label"]
    assert np.bincount(x[:, 2].astype(int)).tolist() == [3, 3, 2, 2, 2]
    points, labels = load_points(path)  # the file reads back as labelled points
    assert points.shape == (12, 2) and labels.tolist() == x[:, 2].astype(int).tolist()


@pytest.mark.parametrize("label, expected", [("blue", 1), ("RED", 3), ("4", 4)])
def test_sample_one_class_by_name_or_id(runs, capsys, label, expected):
    code, out, _ = run(capsys, "sample", runs["cfm"], "-n", 6, "--dt", 0.1, "--label", label)
    assert code == 0
    header, x = read_csv(out)
    assert header[-1] == "label" and (x[:, 2] == expected).all()
    model, _ = load_run(runs["cfm"])
    gen = torch.Generator().manual_seed(0)
    expected_x = model.sample(6, dt=0.1, labels=expected, generator=gen).double().numpy()
    np.testing.assert_allclose(x[:, :2], expected_x, rtol=1e-6, atol=1e-6)


def test_sample_plot_uses_ring_colours(runs, capsys, tmp_path):
    png, svg = tmp_path / "s.png", tmp_path / "s.svg"
    assert run(capsys, "sample", runs["cfm"], "-n", 50, "--dt", 0.1, "--plot", png)[0] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = run(capsys, "sample", runs["cfm"], "-n", 50, "--dt", 0.1, "--plot", svg)
    assert code == 0 and out == ""  # with --plot and no -o, no CSV on stdout
    # Every point is a vector shape (nothing rasterized) filled with its ring's colour:
    # 50 balanced samples, 10 per ring. SVG's initial fill is black, so a point without a
    # fill is black.
    ns = {"svg": "http://www.w3.org/2000/svg"}
    root = ElementTree.parse(svg).getroot()
    assert root.find(".//svg:image", ns) is None
    fills = []
    for group in root.iterfind(".//svg:g[@id]", ns):
        if group.get("id").startswith("PathCollection"):
            for point in group.iterfind(".//svg:use", ns):
                style = dict(kv.split(": ") for kv in point.get("style", "").split("; ") if kv)
                fills.append(style.get("fill", "#000000").lower())
    assert Counter(fills) == {colour.lower(): 10 for colour in RING_COLORS}


def test_sample_plot_title_names_the_class_and_the_sampler(runs, capsys, tmp_path, monkeypatch):
    import flowscope.plots

    titles = []
    scatter = flowscope.plots.class_scatter

    def recording(panels, **kwargs):
        titles.extend(" ".join(title.split()) for _, _, title in panels)  # lines joined
        return scatter(panels, **kwargs)

    monkeypatch.setattr(flowscope.plots, "class_scatter", recording)
    png = tmp_path / "s.png"
    for extra in (
        ["--label", "BLUE", "--steps", "4"],
        ["--dt", "0.25", "--solver", "rk4"],
        ["--solver", "midpoint"],
    ):
        assert run(capsys, "sample", runs["cfm"], "-n", 20, *extra, "--plot", png)[0] == 0
    assert run(capsys, "sample", runs["nf"], "-n", 20, "--steps", "4", "--plot", png)[0] == 0
    assert titles == [
        f"20 samples of blue from {runs['cfm']} (4 euler steps)",
        f"20 samples from {runs['cfm']} (rk4 steps of 0.25)",
        f"20 samples from {runs['cfm']} (midpoint)",
        f"20 samples from {runs['nf']}",  # a flow maps in one pass
    ]


# -- log-prob ---------------------------------------------------------------------------


def test_log_prob_in_data_units_and_standardized(runs, capsys, tmp_path):
    pts = np.array([[0.0, 1.0], [-1.0, 0.5], [2.0, -1.0]])
    f = tmp_path / "p.csv"
    f.write_text("x,y\n" + "".join(f"{a},{b}\n" for a, b in pts))
    out = tmp_path / "lp.csv"
    assert run(capsys, "log-prob", runs["nf"], "--points", f, "-o", out)[0] == 0
    header, table = read_csv(out)
    assert header == ["x", "y", "log_prob", "log_prob_standardized"]
    model, _ = load_run(runs["nf"])
    x = torch.tensor(pts, dtype=torch.float32)
    np.testing.assert_allclose(table[:, 2], model.log_prob(x).numpy(), rtol=1e-5)
    shift = table[:, 2] - table[:, 3]
    np.testing.assert_allclose(shift, -model.standardization.scale.log().sum().item(), rtol=1e-5)
    code, printed, _ = run(capsys, "log-prob", runs["nf"], "--point", "0,1", "--point=-1,0.5")
    assert code == 0 and printed.split()[:4] == header
    assert float(printed.splitlines()[1].split()[2]) == pytest.approx(table[0, 2], rel=1e-5)


def test_log_prob_of_a_conditional_model_takes_labels_from_the_file(runs, capsys, tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("0,1,1\n2,0,0\n")
    code, out, _ = run(capsys, "log-prob", runs["cfm"], "--points", f)
    assert code == 0
    rows = [line.split() for line in out.strip().splitlines()[1:]]
    model, _ = load_run(runs["cfm"])
    expected = model.log_prob(torch.tensor([[0.0, 1.0], [2.0, 0.0]]), torch.tensor([1, 0]))
    np.testing.assert_allclose([float(r[3]) for r in rows], expected.numpy(), rtol=1e-5)
    code, by_name, _ = run(capsys, "log-prob", runs["cfm"], "--point", "0,1", "--label", "blue")
    assert code == 0 and by_name.splitlines()[1] == out.splitlines()[1]
    f.write_text("0,1,BLUE\n2,0,black\n")  # class names, in any case, read as the ids
    code, named, _ = run(capsys, "log-prob", runs["cfm"], "--points", f)
    assert code == 0 and named == out
    f.write_text("0,1,blue\n2,0,purple\n")
    code, _, err = run(capsys, "log-prob", runs["cfm"], "--points", f)
    assert "row 2: 'purple' is not a class of the model" in one_error_line(code, err)


def test_a_file_of_class_names_trains_a_model_that_knows_them(capsys, tmp_path):
    rng = np.random.default_rng(0)
    names = rng.choice(["virginica", "setosa"], 40)
    rows = [
        f"{a:.3f},{b:.3f},{n}" for (a, b), n in zip(rng.normal(size=(40, 2)), names, strict=True)
    ]
    data = tmp_path / "iris.csv"
    data.write_text("length,width,species\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    argv = ["train", "nf", "--conditional", "--data", data, "--epochs", "1", "--out", out]
    assert run(capsys, *argv)[0] == 0
    model, info = load_run(out)
    assert model.class_names == ("setosa", "virginica") == tuple(info.data["class_names"])
    code, printed, _ = run(capsys, "sample", out, "-n", 4, "--label", "SETOSA")
    # Its outputs name the classes as the file did, so that they read back as it did.
    assert code == 0 and [r.split(",")[2] for r in printed.splitlines()[1:]] == ["setosa"] * 4
    samples = tmp_path / "s.csv"
    assert run(capsys, "sample", out, "-n", 4, "-o", samples)[0] == 0
    rows = [r.split(",") for r in samples.read_text().splitlines()[1:]]
    assert [r[2] for r in rows] == ["setosa", "virginica"] * 2  # balanced classes
    code, table, _ = run(capsys, "log-prob", out, "--points", samples)
    assert code == 0 and [r.split()[2] for r in table.splitlines()[1:]] == [r[2] for r in rows]
    code, table, _ = run(capsys, "invert", out, "--point", "0,0", "--label", "1")
    assert code == 0 and table.splitlines()[1].split()[2] == "virginica"


# -- invert -----------------------------------------------------------------------------


def test_invert_flow_and_its_trajectory(runs, capsys, tmp_path):
    traj, out = tmp_path / "t.csv", tmp_path / "z.csv"
    argv = ["invert", runs["nf"], "--point", "0,1", "--point", "2,0.5", "-o", out]
    assert run(capsys, *argv, "--trajectory", traj)[0] == 0
    header, z = read_csv(out)
    assert header == ["x", "y", "z1", "z2"]
    model, _ = load_run(runs["nf"])
    x = torch.tensor([[0.0, 1.0], [2.0, 0.5]])
    np.testing.assert_allclose(z[:, 2:], model.inverse(x)[0].detach().numpy(), rtol=1e-5)
    header, path = read_csv(traj)
    assert header == ["step", "point", "x", "y"]
    steps = model.couplings + 1
    assert path.shape == (steps * 2, 4)
    np.testing.assert_array_equal(path[:, 0], np.repeat(np.arange(steps), 2))
    np.testing.assert_array_equal(path[:, 1], np.tile(np.arange(2), steps))
    np.testing.assert_allclose(path[:2, 2:], x.numpy())  # step 0 is the input
    last = model.standardization.inverse(torch.tensor(z[:, 2:], dtype=torch.float32))
    np.testing.assert_allclose(path[-2:, 2:], last.numpy(), rtol=1e-4, atol=1e-5)


def test_invert_says_when_float32_latents_cannot_carry_a_point_back(runs, capsys, tmp_path):
    # A flow that squeezes one coordinate by e^-20 twice, with a shift between: z = (y + 1)
    # e^-20, then (z + 1) e^-20, so float32's z keeps none of y's digits, float64's most.
    from flowscope.flows import NormalizingFlow

    model = NormalizingFlow(couplings=3, log_scale_bound=None)
    with torch.no_grad():
        for k, pairs in enumerate(p for p in model.weights() if p is not None):
            weight, bias = pairs[-1]  # the last layer of the log-scale and shift networks
            weight.zero_()
            bias.zero_()
            if k in (0, 2):  # the two couplings of the same coordinate
                bias[0], bias[1] = 20.0, -1.0
    _, info = flowscope.runs.load_run(runs["nf"])
    flowscope.runs.save_run(tmp_path / "squeezed", model, replace(info, model=model.config()), None)
    x = torch.tensor([[0.5, 0.3]])
    assert float((model.decode(model.encode(x)) - x).abs().max()) > 0.1  # the premise
    code, out, err = run(capsys, "invert", tmp_path / "squeezed", "--point", "0.5,0.3")
    assert code == 0 and "nan" not in out
    assert "1 of 1 points, (0.5, 0.3), do not come back from their float32 latents" in err
    assert "--float64 computes in double precision" in err
    code, out64, err = run(
        capsys, "invert", tmp_path / "squeezed", "--point", "0.5,0.3", "--float64"
    )
    assert code == 0 and err == ""
    z64 = [float(v) for v in out64.split()[-2:]]
    assert z64[1] == pytest.approx(float(model.double().encode(x.double())[0, 1]), rel=1e-12)
    code, _, err = run(capsys, "invert", runs["nf"], "--point", "0,1")  # near the data: no note
    assert code == 0 and err == ""


def test_values_beyond_float32_say_that_float64_reads_them(runs, capsys, tmp_path):
    big = tmp_path / "big.csv"
    big.write_text("x,y\n1e39,0\n")
    for argv in (["--point", "1e39,0"], ["--points", big]):
        err = one_error_line(*run(capsys, "log-prob", runs["nf"], *argv)[::2])
        assert "beyond float32's range" in err and "--float64 reads it" in err
        code, out, err = run(capsys, "log-prob", runs["nf"], *argv, "--float64")
        assert code == 0 and "1e+39" in out
    # Far enough for float32's log-density to overflow, not float64's: the note says so.
    code, out, err = run(capsys, "log-prob", runs["nf"], "--point", "1e30,0")
    assert code == 0 and "1 of 1 log-densities are -inf" in err and "--float64 computes" in err
    code, out, err = run(capsys, "log-prob", runs["nf"], "--point", "1e30,0", "--float64")
    assert code == 0 and err == "" and "-inf" not in out


def test_invert_flow_matching_runs_backwards_with_dt(runs, capsys, tmp_path):
    traj = tmp_path / "t.csv"
    argv = ["invert", runs["cfm"], "--point", "0,1", "--label", "blue", "--dt", 0.1]
    code, out, _ = run(capsys, *argv, "--trajectory", traj)
    assert code == 0
    model, _ = load_run(runs["cfm"])
    z = model.encode(torch.tensor([[0.0, 1.0]]), labels=1, dt=0.1)
    row = out.splitlines()[1].split()
    np.testing.assert_allclose([float(row[3]), float(row[4])], z[0].numpy(), rtol=1e-5)
    header, path = read_csv(traj)
    assert path.shape == (11, 4) and path[:, 0].tolist() == list(range(11))


# -- bad input: one line on stderr, non-zero exit, nothing overwritten --------------------


SENTINEL = b"previous output, must survive\n"


@pytest.fixture
def broken(runs, tmp_path) -> dict[str, Path]:
    """Run folders damaged in the ways a user meets them."""

    def copy(name: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        for f in runs["nf"].iterdir():
            (d / f.name).write_bytes(f.read_bytes())
        return d

    out = {"missing": tmp_path / "no-such-run", "empty": tmp_path / "empty"}
    out["empty"].mkdir()
    out["no weights"] = copy("no-weights")
    (out["no weights"] / "model.safetensors").unlink()
    out["truncated"] = copy("truncated")
    w = out["truncated"] / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    out["random bytes"] = copy("random")
    w = out["random bytes"] / "model.safetensors"
    w.write_bytes(np.random.default_rng(0).bytes(w.stat().st_size))
    out["flipped bytes"] = copy("flipped")  # inside the tensors, not the header
    w = out["flipped bytes"] / "model.safetensors"
    raw = bytearray(w.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    raw[start + 16 : start + 1016] = bytes(255 - b for b in raw[start + 16 : start + 1016])
    w.write_bytes(bytes(raw))
    out["other format"] = copy("format")
    c = out["other format"] / "config.json"
    c.write_text(json.dumps({**json.loads(c.read_text()), "format": 99}))
    out["bad json"] = copy("bad-json")
    (out["bad json"] / "config.json").write_text("{not json")
    return out


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such run folder"),
        ("empty", "holds no model"),
        ("no weights", "holds no weights"),
        ("truncated", "corrupted or truncated"),
        ("random bytes", "corrupted or truncated"),
        ("flipped bytes", "do not match the checksum"),
        ("other format", "run format 99"),
        ("bad json", "not valid JSON"),
    ],
)
@pytest.mark.parametrize("command", ["sample", "log-prob", "invert"])
def test_bad_run_folder(broken, capsys, tmp_path, case, message, command):
    target = tmp_path / "out.csv"
    target.write_bytes(SENTINEL)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    argv = [command, broken[case], "-o", target]
    argv += ["-n", "5"] if command == "sample" else ["--point", "0,0"]
    err = one_error_line(*run(capsys, *argv)[::2])
    assert message in err
    assert target.read_bytes() == SENTINEL
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


POINT_FILES = {
    "nan": ("x,y\n0,1\nnan,2\n", "column 1 is nan"),
    "inf": ("0,1\n1,inf\n", "column 2 is inf"),
    "text": ("x,y\n0,1\none,two\n", "is not numeric"),
    "one column": ("1\n2\n", "got 1"),
    "four columns": ("1,2,0,4\n", "got 4"),
    "empty": ("x,y\n", "holds no points"),
    "three columns, unconditional": ("0,1,2\n1,0,3\n", "model in"),
    "negative label": ("0,1,-1\n", "label -1 is not a non-negative integer"),
}


@pytest.mark.parametrize("case", list(POINT_FILES))
@pytest.mark.parametrize("command", ["log-prob", "invert"])
def test_bad_points_file(runs, capsys, tmp_path, case, command):
    text, message = POINT_FILES[case]
    f = tmp_path / "points.csv"
    f.write_text(text)
    target = tmp_path / "out.csv"
    target.write_bytes(SENTINEL)
    err = one_error_line(*run(capsys, command, runs["nf"], "--points", f, "-o", target)[::2])
    assert message in err
    if case.startswith("three"):
        assert "unconditional" in err and "third column" in err
    assert target.read_bytes() == SENTINEL


@pytest.mark.parametrize(
    "argv, message",
    [
        # classes
        (["sample", "{cfm}", "--label", "purple"], "unknown class; the model in"),
        (["sample", "{cfm}", "--label", "5"], "0 black, 1 blue, 2 green, 3 red, 4 yellow"),
        (["sample", "{cfm}", "--label", "-1"], "unknown class"),
        (["sample", "{nf}", "--label", "blue"], "is unconditional"),
        (["log-prob", "{nf}", "--point", "0,0", "--label", "0"], "is unconditional"),
        (["log-prob", "{cfm}", "--point", "0,0"], "is conditional: give --label"),
        (["invert", "{cfm}", "--points", "{labels7}"], "label 7 is not a class"),
        (["log-prob", "{cfm}", "--points", "{labels7}", "--label", "1"], "use one of the two"),
        # steps and counts
        (["sample", "{cfm}", "--dt", "0"], "argument --dt: the step must be in (0, 1]"),
        (["sample", "{cfm}", "--dt", "1.5"], "got '1.5'"),
        (["sample", "{cfm}", "--dt", "nan"], "'nan' is not a number"),
        (["sample", "{cfm}", "--dt", "abc"], "argument --dt: 'abc' is not a number; give a step"),
        (["invert", "{cfm}", "--point", "0,0", "--label", "0", "--dt", "-0.1"], "(0, 1]"),
        (["sample", "{nf}", "-n", "0"], "argument -n: must be a positive integer, got '0'"),
        (["sample", "{nf}", "-n", "-3"], "positive integer"),
        (["sample", "{nf}", "-n", "ten"], "positive integer"),
        (["sample", "{cfm}", "--solver", "leapfrog"], "invalid choice: 'leapfrog'"),
        (["train", "nf", "--epochs", "0"], "argument --epochs: must be a positive integer"),
        (["train", "nf", "--batch-size", "0"], "argument --batch-size"),
        (["train", "nf", "--lr", "0"], "argument --lr: must be a positive finite number"),
        (["train", "nf", "--n-points", "-5"], "argument --n-points"),
        (["train", "nf", "--n-points", "1"], "argument --n-points: must be an integer >= 2"),
        (["train", "nf", "--seed", "-1"], "argument --seed: must be a non-negative integer"),
        (
            ["train", "nf", "--time-alpha", "2", "--out", "{tmp}/r"],
            "applies to fm, cfm and meanflow",
        ),
        (["train", "fm", "--time-alpha", "0"], "argument --time-alpha: must be a positive"),
        (["train", "cfm", "--time-alpha", "inf"], "argument --time-alpha"),
        (["train", "fm", "--standardize", "class", "--out", "{tmp}/r"], "applies to nf, cfm and"),
        (
            ["train", "nf", "--no-gaussian-skip", "--out", "{tmp}/r"],
            "applies to fm, cfm and meanflow, not to nf",
        ),
        (["train", "nf", "--standardize", "global", "--out", "{tmp}/r"], "add --conditional"),
        (["train", "fm", "--conditional", "--out", "{tmp}/r"], "fm cannot be conditional"),
        (["train", "cfm", "--no-conditional", "--out", "{tmp}/r"], "cfm is always conditional"),
        (["train", "nf", "--bins", "8", "--out", "{tmp}/r"], "--bins applies to nsf, not to nf"),
        (["train", "fm", "--jump-share", "0.5", "--out", "{tmp}/r"], "applies to meanflow, not"),
        (["train", "meanflow", "--jump-share", "2"], "--jump-share: must be a number in [0, 1]"),
        (["train", "meanflow", "--coupling", "pairs"], "argument --coupling: invalid choice"),
        (["train", "nsf", "--bins", "0"], "argument --bins: must be a whole number >= 1"),
        (["train", "nsf", "--tail-bound", "-1"], "argument --tail-bound: must be a positive"),
        (
            ["train", "nsf", "--conditional", "--data", "moons", "--out", "{tmp}/r"],
            "'moons' has no class labels",
        ),
        (["train", "cfm", "--standardize", "ring"], "argument --standardize: invalid choice"),
        (
            ["train", "fm", "--coupling", "hungarian"],
            "invalid choice: 'hungarian' (choose from 'independent', 'ot', 'class-ot')",
        ),
        (["train", "fm", "--source", "nine-gaussians"], "choose one of: normal, 8gaussians,"),
        (["train", "nf", "--device", "cuda:7"], "argument --device: device 'cuda:7' is not"),
        (["sample", "{nf}", "--device", "tpu"], "argument --device: unknown device 'tpu'"),
        (["eval", "{nf}", "--device", "cuda"], "is not available"),
        (["sample", "{nf}", "--seed", "-1"], "argument --seed: must be a non-negative integer"),
        (["sample", "{nf}", "--seed", "1.5"], "argument --seed: must be a non-negative integer"),
        (["train", "nf", "--data", "banana", "--out", "{tmp}/r"], "unknown data 'banana'"),
        (["train", "nf", "--overwrite", "--resume"], "not allowed with argument"),
        # points on the command line
        (["log-prob", "{nf}", "--point", "1,2,3"], "expected X,Y"),
        (["log-prob", "{nf}", "--point", "nan,1"], "must be finite"),
        (["log-prob", "{nf}", "--point", "a,b"], "is not two numbers"),
        (["log-prob", "{nf}"], "one of the arguments --points --point is required"),
        (["log-prob", "{nf}", "--point", "0,0", "--points", "{labels7}"], "not allowed with"),
        (["log-prob", "{nf}", "--points", "{tmp}/none.csv"], "none.csv: no such file"),
        # outputs in folders that do not exist, or unusable
        (["sample", "{nf}", "-o", "/nonexistent/dir/out.csv"], "folder /nonexistent/dir does"),
        (["sample", "{nf}", "--plot", "/nonexistent/dir/s.png"], "does not exist"),
        (["sample", "{nf}", "--plot", "{tmp}/s.xyz"], "unknown image type '.xyz'"),
        (["sample", "{nf}", "-o", "{tmp}"], "is a folder"),
        (["log-prob", "{nf}", "--point", "0,0", "-o", "/nonexistent/dir/o.csv"], "does not"),
        (["invert", "{nf}", "--point", "0,0", "--trajectory", "/nonexistent/d/t.csv"], "does not"),
        (
            ["train", "fm", "--coupling", "ot", "--batch-size", "1", "--data", "moons"]
            + ["--n-points", "300", "--out", "{tmp}/r"],
            "batch size 1 leaves nothing to pair",
        ),
        (
            ["train", "fm", "--coupling", "class-ot", "--data", "moons", "--out", "{tmp}/r"],
            "fm: the class-ot coupling pairs within classes",
        ),
        # an output that is one of a run folder's own files
        (["sample", "{nf}", "-o", "{nf}/config.json"], "is a file of the run folder"),
        (["sample", "{nf}", "-o", "{nf}/eval.json"], "is a file of the run folder"),
        (["sample", "{nf}", "--plot", "{nf}/model.safetensors"], "is a file of the run"),
        (["invert", "{nf}", "--point", "0,0", "--trajectory", "{nf}/metrics.csv"], "run folder"),
        (["log-prob", "{nf}", "--point", "0,0", "-o", "{cfm}/batches.csv"], "of the run folder"),
        (["eval", "{nf}", "--json", "{cfm}/config.json"], "is a file of the run folder"),
        # two outputs, one file
        (["sample", "{nf}", "-o", "{tmp}/s.png", "--plot", "{tmp}/s.png"], "both name"),
        (["invert", "{nf}", "--point", "0,0", "-o", "{tmp}/a", "--trajectory", "{tmp}/a"], "both"),
        (["eval", "{nf}", "--json", "{tmp}"], ": is a folder; give a file name"),
        (["eval", "{nf}", "--json", "{tmp}/e.png", "--plot", "{tmp}/e.png"], "both name"),
        (["eval", "{nf}", "--json", "/nonexistent/dir/e.json"], "/nonexistent/dir does not"),
        (["train", "nf", "--out", "/proc/flowscope/run"], "cannot create /proc/flowscope"),
    ],
)
def test_bad_option(runs, capsys, tmp_path, monkeypatch, argv, message):
    labels7 = tmp_path / "labels7.csv"
    labels7.write_text("0,1,7\n")
    names = {"nf": runs["nf"], "cfm": runs["cfm"], "labels7": labels7, "tmp": tmp_path}
    before = {p: p.read_bytes() for r in runs.values() for p in r.iterdir()}

    def no_long_work(*args, **kwargs):
        raise AssertionError("the error must come before any long work")

    # Bad options are caught before sampling, solving or drawing the training data.
    for cls in (flowscope.NormalizingFlow, flowscope.FlowMatching):
        monkeypatch.setattr(cls, "sample", no_long_work)
        monkeypatch.setattr(cls, "log_prob", no_long_work)
    if "--data" not in argv:  # an unknown data name is found when the data is asked for
        monkeypatch.setattr(flowscope.runs, "run_data", no_long_work)
    err = one_error_line(*run(capsys, *(a.format(**names) for a in argv))[::2])
    assert message in err
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels7.csv"]


@pytest.mark.parametrize(
    "argv, what",
    [
        (["sample", "{run}", "-o", "{data}"], "the data file the run"),
        (["log-prob", "{run}", "--points", "{points}", "-o", "{points}"], "the --points file"),
        (["log-prob", "{run}", "--points", "{points}", "-o", "{tmp}/./p.csv"], "--points file"),
        (["invert", "{run}", "--points", "{points}", "--trajectory", "{points}"], "--points"),
        (["invert", "{run}", "--point", "0,0", "-o", "{data}"], "the data file the run"),
        (["eval", "{run}", "--json", "{tmp}/./data.csv"], "the data file the run"),
        (["explore", "{run}", "-o", "{data}"], "the data file the run"),
        (["explore", "{run}", "-o", "{run}/config.json"], "is a file of the run folder"),
        # the model's --source file, checked by its SHA-256 whenever the run is loaded
        (["sample", "{run}", "-o", "{source}"], "the source file the model in"),
        (["eval", "{run}", "--json", "{source}"], "the source file the model in"),
    ],
)
def test_an_output_never_replaces_a_file_the_command_reads(capsys, tmp_path, argv, what):
    """The file a run was trained on (the run could no longer be evaluated or resumed
    from it) and a --points file are inputs: an output naming one, by any path, is
    refused before any work, and the file is left as it was."""
    data = tmp_path / "data.csv"
    data.write_text("a,b\n" + "".join(f"{i % 7},{i % 5 + i / 50}\n" for i in range(60)))
    points = tmp_path / "p.csv"
    points.write_text("a,b\n0,1\n")
    source = tmp_path / "source.csv"
    source.write_text("a,b\n" + "".join(f"{i % 3},{i % 4}\n" for i in range(40)))
    out = tmp_path / "run"
    argv_train = ["train", "fm", "--data", str(data), "--out", str(out), "--epochs", "1"]
    assert main([*argv_train, "--source", str(source)]) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in [data, points, source, *out.iterdir()]}
    names = {"run": out, "data": data, "points": points, "source": source, "tmp": tmp_path}
    err = one_error_line(*run(capsys, *(a.format(**names) for a in argv))[::2])
    assert what in err and "give another file name" in err
    assert {p: p.read_bytes() for p in before} == before


def test_a_file_named_as_a_runs_registry_data_may_be_written(runs, capsys, tmp_path, monkeypatch):
    """A run trained on `olympic` reads no file of that name: one in the folder is free."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "olympic").write_text("mine")
    assert run(capsys, "sample", runs["nf"], "-n", "3", "-o", "olympic")[0] == 0
    assert (tmp_path / "olympic").read_text().count("\n") == 4  # header and 3 samples


def test_a_points_file_naming_the_runs_columns_swapped_is_refused_and_others_noted(
    capsys, tmp_path
):
    data = tmp_path / "data.csv"
    data.write_text("eruptions,waiting\n" + "".join(f"{i % 7},{50 + i}\n" for i in range(60)))
    out = tmp_path / "run"
    assert main(["train", "nf", "--data", str(data), "--out", str(out), "--epochs", "1"]) == 0
    swapped, same = tmp_path / "swapped.csv", tmp_path / "same.csv"
    swapped.write_text("waiting,eruptions\n60,2\n")
    same.write_text("Eruptions, waiting\n2,60\n")  # the names as trained, as people write
    capsys.readouterr()
    for command in ("log-prob", "invert"):
        err = one_error_line(*run(capsys, command, out, "--points", swapped)[::2])
        assert "names the columns waiting, eruptions" in err and "swap the two columns" in err
        code, _, err = run(capsys, command, out, "--points", same)
        assert code == 0 and "header names" not in err
    other = tmp_path / "other.csv"
    other.write_text("a,b\n2,60\n")  # other names: read by position, and said so
    code, _, err = run(capsys, "log-prob", out, "--points", other)
    assert code == 0 and "read by position, as a = eruptions and b = waiting" in err


def test_ot_with_a_batch_of_one_is_refused_before_the_run_folder_is_made(capsys, tmp_path):
    argv = ["train", "fm", "--coupling", "ot", "--out", tmp_path / "r", *TINY[:4]]
    err = one_error_line(*run(capsys, *argv, "--batch-size", "1")[::2])
    assert "batch size 1 leaves nothing to pair; use a batch size >= 2" in err
    assert not (tmp_path / "r").exists()


def test_log_prob_of_a_run_from_a_sample_only_source_says_why(capsys, tmp_path):
    argv = ["train", "fm", "--source", "moons", "--out", tmp_path / "r", *TINY]
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()
    err = one_error_line(*run(capsys, "log-prob", tmp_path / "r", "--point", "0,0")[::2])
    assert "moons" in err and "only by its samples" in err


def test_train_says_when_the_fused_kernel_does_not_run(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSCOPE_NO_KERNEL", "1")
    code, _, err = run(capsys, "train", "nf", "--out", tmp_path / "nf", *TINY)
    assert code == 0
    assert "note: trained with PyTorch operations, not the fused kernel" in err
    assert "FLOWSCOPE_NO_KERNEL is set" in err


def test_a_negative_coordinate_without_the_equals_form_says_how(runs, capsys):
    err = one_error_line(*run(capsys, "log-prob", runs["nf"], "--point", "-1,0")[::2])
    assert "expected one argument" in err and "needs the '=' form, e.g. --point=-1,0" in err


def test_a_closed_pipe_ends_quietly_as_unix_tools_do(runs, capsys, monkeypatch):
    class ClosedPipe:  # stdout whose reader has gone, as after `| head -1`
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = main(["sample", str(runs["nf"]), "-n", "10"])
    err = capsys.readouterr().err
    assert code == 141 and "Broken pipe" not in err and "error" not in err


def test_a_pandas_index_column_is_noted_on_one_line(capsys, tmp_path):
    rows = "\n".join(f"{i},{math.cos(i)},{math.sin(i)}" for i in range(40))
    (tmp_path / "f.csv").write_text(",x,y\n" + rows + "\n")
    code, _, err = run(
        capsys, "train", "nf", "--data", tmp_path / "f.csv", "--out", tmp_path / "r", *TINY
    )
    assert code == 0
    assert (
        "flowscope: note: " in err
        and "is a row index, as pandas' to_csv and R's write.csv write it" in err
    )
    assert err.count("is a row index") == 1  # once, though the file is read twice


# -- spline flows and class-conditional flows --------------------------------------------


def test_a_conditional_spline_flow_through_every_command(monkeypatch, capsys, tmp_path):
    out = tmp_path / "nsf"
    sizes = ["--bins", "4", "--tail-bound", "2.5", "--couplings", "2", "--hidden", "8"]
    recorded, _ = interrupt_then_resume(
        monkeypatch, capsys, out, "nsf", "--conditional", *sizes, "--linear-layers", "2"
    )
    assert recorded == {
        "features": 2,
        "couplings": 2,
        "bins": 4,
        "tail_bound": 2.5,
        "hidden": 8,
        "linear_layers": 2,
        "num_classes": 5,
        "embedding_dim": 8,
        "standardize": "class",
    }
    info = json.loads((out / "config.json").read_text())
    assert info["data"]["conditional"] is True and info["data"]["class_names"][1] == "blue"
    # Resumed without --conditional: the run's choice continues; the other one is refused.
    err = one_error_line(
        *run(capsys, "train", "nsf", "--out", out, "--resume", "--no-conditional")[::2]
    )
    assert "conditional True (now False)" in err
    code, text, _ = run(capsys, "sample", out, "-n", "20", "--label", "blue")
    assert code == 0
    _, rows = read_csv(text)
    assert rows.shape == (20, 3) and (rows[:, 2] == 1).all()
    code, table, _ = run(
        capsys, "log-prob", out, "--point", "0,0", "--point", "4,5", "--label", "red"
    )
    assert code == 0 and "log_prob" in table and "nan" not in table.lower()
    path = tmp_path / "path.csv"
    code, _, _ = run(capsys, "invert", out, "--point=-1,0.5", "--label", "0", "--trajectory", path)
    assert code == 0
    header, steps = read_csv(path)
    assert header == ["step", "point", "x", "y"] and len(steps) == 3  # input and 2 couplings
    code, report, _ = run(capsys, "eval", out, "-n", "200", "--floor-pairs", "1")
    assert code == 0 and "class accuracy" in report and "given the class" in report


def test_nf_trains_conditional_and_unconditional(capsys, tmp_path):
    for flag, classes in (("--conditional", 5), ("--no-conditional", None)):
        out = tmp_path / flag.strip("-")
        code, _, err = run(capsys, "train", "nf", "--out", out, *TINY, flag, "--couplings", "2")
        assert code == 0
        model, info = load_run(out)
        assert model.num_classes == classes and info.data["conditional"] is (classes is not None)
        assert model.config()["couplings"] == 2
        if classes:  # the fused kernel computes unconditional flows only, and says so
            assert "class-conditional" in err
        code, _, err = run(
            capsys, "sample", out, "-n", "5", *(["--label", "yellow"] * bool(classes))
        )
        assert code == 0


# -- outputs that are not numbers ---------------------------------------------------------


def test_a_point_too_far_for_float32_is_an_error_not_nan(runs, capsys, tmp_path):
    # 3e38 is a float32 number, but the flow's inverse overflows on it.
    target = tmp_path / "z.csv"
    err = one_error_line(*run(capsys, "invert", runs["nf"], "--point", "3e38,0", "-o", target)[::2])
    assert "point (3e+38, 0): the latent overflows" in err and "nearer the data" in err
    assert not target.exists()
    code, out, err = run(capsys, "invert", runs["nf"], "--point", "1,0")
    assert code == 0 and "nan" not in out


def test_a_model_with_non_finite_weights_writes_no_samples(runs, capsys, tmp_path):
    model, info = flowscope.runs.load_run(runs["nf"])
    with torch.no_grad():
        next(p for p in model.parameters()).fill_(math.nan)
    flowscope.runs.save_run(tmp_path / "nan", model, info, None)  # a valid checksum
    target = tmp_path / "s.csv"
    err = one_error_line(*run(capsys, "sample", tmp_path / "nan", "-n", "5", "-o", target)[::2])
    assert "5 of 5 samples are not finite" in err
    assert not target.exists()
    err = one_error_line(*run(capsys, "invert", tmp_path / "nan", "--point", "0,0")[::2])
    assert "latents are not finite" in err


def test_eval_writes_its_json_before_printing(runs, capsys, monkeypatch, tmp_path):
    class ClosedPipe:  # stdout whose reader has gone, as after `| head`
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    out = tmp_path / "e.json"
    assert main(["eval", str(runs["nf"]), "-n", "200", "--json", str(out)]) == 141
    assert json.loads(out.read_text())["model"] == "nf"


def test_a_corrupted_checkpoint_is_not_resumed(runs, capsys, tmp_path):
    out = tmp_path / "r"
    assert run(capsys, "train", "nf", "--out", out, *TINY)[0] == 0
    ck = out / flowscope.runs.CHECKPOINT
    raw = bytearray(ck.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    raw[start + 8] ^= 0x40
    ck.write_bytes(bytes(raw))
    err = one_error_line(*run(capsys, "train", "nf", "--out", out, "--resume")[::2])
    assert "corrupted checkpoint" in err and "checksum" in err


def test_resuming_a_finished_run_says_so_and_saves_nothing(runs, capsys, tmp_path):
    out = tmp_path / "r"
    assert run(capsys, "train", "nf", "--out", out, *TINY)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, text, _ = run(capsys, "train", "nf", "--out", out, "--resume")
    assert code == 0
    assert text.startswith(f"nothing to resume: {out} has finished its 1 epoch (")
    assert "trained" not in text and "run saved" not in text
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_log_prob_with_hutchinson_probes_is_near_the_exact_one(runs, capsys):
    argv = ["log-prob", runs["cfm"], "--point", "0,0.5", "--label", "1"]
    code, exact, _ = run(capsys, *argv)
    assert code == 0
    code, est, _ = run(capsys, *argv, "--divergence", "hutchinson", "--probes", "64")
    assert code == 0

    def value(table):
        return float(table.splitlines()[1].split()[3])

    assert value(est) != value(exact) and abs(value(est) - value(exact)) < 0.5
    err = one_error_line(*run(capsys, *argv, "--probes", "4")[::2])
    assert "--probes needs --divergence hutchinson" in err
    code, _, err = run(capsys, "log-prob", runs["nf"], "--point", "0,0", "--divergence", "exact")
    assert code == 0 and "--divergence ignored" in err


def test_a_files_column_names_head_the_samples_and_label_the_axes(capsys, tmp_path, monkeypatch):
    g = np.random.default_rng(0)
    rows = "\n".join(f"{2 + g.normal():.4f},{70 + 10 * g.normal():.3f}" for _ in range(60))
    (tmp_path / "geyser.csv").write_text("eruptions,waiting\n" + rows + "\n")
    out = tmp_path / "r"
    argv = ["train", "nf", "--data", tmp_path / "geyser.csv", "--out", out, *TINY]
    assert run(capsys, *argv)[0] == 0
    drawn = {}
    real = flowscope.plots.class_scatter

    def spy(*args, **kwargs):
        drawn["fig"] = real(*args, **kwargs)
        return drawn["fig"]

    monkeypatch.setattr(flowscope.plots, "class_scatter", spy)
    code, _, _ = run(
        capsys, "sample", out, "-n", "20", "-o", tmp_path / "s.csv", "--plot", tmp_path / "s.png"
    )
    assert code == 0
    assert read_csv(tmp_path / "s.csv")[0] == ["eruptions", "waiting"]
    ax = drawn["fig"].axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("eruptions", "waiting")
    code, text, _ = run(capsys, "log-prob", out, "--point", "2,70")
    assert code == 0 and text.split()[:2] == ["eruptions", "waiting"]


def test_n_points_with_a_data_file_is_noted_and_not_recorded(capsys, tmp_path):
    rows = "\n".join(f"{math.cos(i)},{math.sin(i)}" for i in range(40))
    (tmp_path / "f.csv").write_text(rows + "\n")
    out = tmp_path / "r"
    argv = ["train", "nf", "--data", tmp_path / "f.csv", "--out", out, *TINY]
    code, _, err = run(capsys, *argv)
    assert code == 0 and "note: --n-points ignored: the file" in err
    data = json.loads((out / "config.json").read_text())["data"]
    assert data["n_points"] is None and data["holdout_points"] is None
    assert run(capsys, "train", "nf", "--out", out, "--resume")[0] == 0


def test_commands_run_on_one_thread_unless_told(runs, capsys, monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert run(capsys, "log-prob", runs["nf"], "--point", "0,0")[0] == 0
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("FLOWSCOPE_THREADS", "2")
        assert run(capsys, "log-prob", runs["nf"], "--point", "0,0")[0] == 0
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("FLOWSCOPE_THREADS", "many")
        err = one_error_line(*run(capsys, "log-prob", runs["nf"], "--point", "0,0")[::2])
        assert "FLOWSCOPE_THREADS must be a positive integer, got 'many'" in err
    finally:
        torch.set_num_threads(before)


def test_an_option_a_command_does_not_take_points_to_that_commands_help(capsys, tmp_path):
    for argv, see in (
        (["train", "nf", "--bogus"], "see `flowscope train --help`"),
        (
            ["log-prob", str(tmp_path), "--point", "0,1", "--steps", "4"],
            "`flowscope log-prob --help`",
        ),
        (["--bogus"], "see `flowscope --help`"),
    ):
        code, _, err = run(capsys, *argv)
        assert "unrecognized arguments" in one_error_line(code, err) and see in err
    # A run folder that does not exist is said before anything is imported.
    err = one_error_line(*run(capsys, "eval", str(tmp_path / "none"))[::2])
    assert f"argument RUN_DIR: {tmp_path / 'none'}: no such run folder (train one with" in err


def test_csv_outputs_give_each_number_in_the_fewest_digits_its_dtype_reads_back(
    runs, capsys, tmp_path
):
    """An input echoed from float32 reads 3.6, not 3.5999999; float64 keeps all digits."""
    out = tmp_path / "lp.csv"
    for extra, dtype in (([], np.float32), (["--float64"], np.float64)):
        argv = ["log-prob", runs["nf"], "--point", "3.6,0.1", "-o", out, *extra]
        assert run(capsys, *argv)[0] == 0
        rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
        assert rows[0][:2] == ["3.6", "0.1"]
        model, _ = load_run(runs["nf"])
        if dtype == np.float64:
            model = model.double()
        x = torch.tensor([[3.6, 0.1]], dtype=model.dtype)
        written = dtype(rows[0][2])
        assert written == model.log_prob(x).numpy().astype(dtype)[0]  # reads back exactly


def test_sample_draws_the_classes_in_their_shares_of_the_training_points(capsys, tmp_path):
    # 90% of the rows in class 0: the samples of p(x) have as many, not half.
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.1).astype(int)
    x = rng.normal(size=(200, 2)) + 8.0 * labels[:, None]
    data = tmp_path / "unbalanced.csv"
    data.write_text(
        "".join(f"{a!r},{b!r},{c}\n" for (a, b), c in zip(x.tolist(), labels, strict=True))
    )
    out = tmp_path / "run"
    argv = ["train", "nf", "--conditional", "--data", data, "--epochs", "1", "--out", out]
    assert run(capsys, *argv)[0] == 0
    counts = load_run(out)[1].data["class_counts"]
    assert sum(counts) == 180 and counts[1] < 40  # the training part's 90%
    code, printed, _ = run(capsys, "sample", out, "-n", 50)
    drawn = [int(r.split(",")[2]) for r in printed.splitlines()[1:]]
    assert code == 0 and drawn.count(1) == round(50 * counts[1] / 180)
