"""The command line's help and argument errors come back without importing PyTorch.

Building a command's parser reads plain-Python declarations only (the model registry, its
options and the defaults they quote); the commands import PyTorch when they run. Each check
runs in a fresh interpreter, where nothing else has imported PyTorch first.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

from flowscope import defaults
from flowscope.cli import COMMANDS, main
from flowscope.models import MODELS

HEAVY = ("torch", "numpy", "scipy", "matplotlib")

#: Command lines that print a help or a usage error, and the exit status of each.
ARGV = [
    *[([command, "--help"], 0) for command in COMMANDS if command != "bench"],
    *[(["train", entry.name, "--help"], 0) for entry in MODELS],
    (["train", "nf", "--bogus"], 2),
    (["train", "nope"], 2),
    (["train", "cfm", "--time-alpha", "-1"], 2),
    (["train", "fm", "--coupling", "nope"], 2),
    (["train", "nf", "--epochs", "0"], 2),
    (["sample"], 2),
    (["sample", "runs/x", "--solver", "nope"], 2),
    (["log-prob", "runs/x"], 2),
    (["invert", "runs/x", "--point", "1"], 2),
    (["reflow", "runs/x"], 2),
    (["eval", "runs/x", "--nfe", "0"], 2),
    (["explore", "runs/x", "-n", "1"], 2),
    (["report", "--preset", "nope"], 2),
    (["nope"], 2),
]

_PROBE = """
import json, sys
from flowscope.cli import main
heavy = {heavy!r}
found = {{}}
for argv, status in json.loads(sys.argv[1]):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == status, (argv, code)
    found[" ".join(argv)] = [m for m in heavy if m in sys.modules]
print(json.dumps(found))
"""


def _probe(argvs: list[tuple[list[str], int]]) -> dict[str, list[str]]:
    """For each command line run in turn in one fresh interpreter, the heavy modules
    imported by then."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), json.dumps(argvs)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_and_argument_errors_import_no_torch():
    found = _probe(ARGV)
    assert found == {" ".join(argv): [] for argv, _ in ARGV}


@pytest.mark.parametrize("command", [c for c in COMMANDS if COMMANDS[c][0] != "bench"])
def test_building_a_commands_parser_imports_no_torch(command):
    code = (
        "import sys\nfrom flowscope.cli import build_parser\n"
        f"build_parser(only={command!r}).format_help()\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_model_registry_and_the_recipe_import_no_torch():
    code = (
        "import sys\nfrom flowscope.models import MODELS\nfrom flowscope.recipe import recipe\n"
        "[(e.options, e.recipe, recipe(e.name)) for e in MODELS]\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_train_help_shows_every_option_of_every_type(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    help_ = "".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    for entry in MODELS:
        assert "".join(f"{entry.name}, {entry.title}".split()) in help_
        for option in entry.options:
            have = [e.name for e in MODELS if option in e.options]
            assert "".join(f"{', '.join(have)}: {option.help_for()}".split()) in help_, option.flag
        for field, value in entry.recipe.items():
            words = {
                "min_epochs": "epochs",
                "batch_size": "batchsize",
                "small_decay": "small-dataweightdecay",
                "small_noise": "small-datanoise",
            }.get(field, field)
            assert f"{words}{value:g}" in help_  # "batch size 512", unspaced


@pytest.mark.parametrize("entry", list(MODELS), ids=MODELS.names())
def test_train_model_help_shows_that_types_options_and_recipe_alone(entry, capsys):
    import re

    from flowscope.recipe import recipe

    with pytest.raises(SystemExit) as exit_:
        main(["train", entry.name, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    help_ = "".join(text.split())  # argparse wraps lines anywhere
    usage = text[: text.index("\n\n")]
    flags = set(re.findall(r"--[a-z0-9-]+", usage))
    assert "".join(f"type {entry.name} ({entry.title})".split()) in help_
    mine = set()
    for option in entry.options:
        assert "".join(option.help_for(entry.name).split()) in help_, option.flag
        if option.defaults is not None:  # its own default, not another type's
            own = f"(default {option.defaults[entry.name]})"
            assert own in " ".join(text.split()), option.flag
        mine |= {option.flag} | ({"--no-" + option.flag[2:]} if option.parse is None else set())
        if option.choices is not None:
            assert "{" + ",".join(option.choices) + "}" in help_
    assert mine <= flags
    others = {o.flag for e in MODELS for o in e.options} - mine
    assert not flags & others, "another type's option"
    assert ("--conditional" in flags) == entry.conditional_option
    config = recipe(entry.name)
    assert f"lr{config.lr:g}" in help_ and f"batchesof{config.batch_size}," in help_
    assert f"(default{config.min_epochs}," in help_  # --epochs


def test_the_quoted_defaults_are_the_classes_own():
    """The help quotes :mod:`flowscope.defaults`; the constructors' signatures use them."""

    def signature_defaults(cls):
        return {k: p.default for k, p in inspect.signature(cls).parameters.items()}

    for name, declared in [
        ("nf", defaults.NF_DEFAULTS),
        ("nsf", defaults.NSF_DEFAULTS),
        ("meanflow", defaults.MEANFLOW_DEFAULTS),
    ]:
        own = signature_defaults(MODELS.get(name).model)
        assert {k: own[k] for k in declared} == dict(declared)
        assert MODELS.get(name).model.__module__.startswith("flowscope.")
    fm = MODELS.get("fm").model
    assert fm.likelihood_method() == defaults.likelihood_text()
    assert {k: signature_defaults(fm._inverse)[k] for k in defaults.LIKELIHOOD} == dict(
        defaults.LIKELIHOOD
    )
    import flowscope.runs

    # None: a resumed run's own, else the study's, which train_run reads from defaults
    run = signature_defaults(flowscope.runs.train_run)
    assert (run["data"], run["n_points"], run["holdout_points"]) == (None, None, None)
    assert (
        flowscope.runs.STUDY_DATA,
        flowscope.runs.STUDY_POINTS,
        flowscope.runs.HOLDOUT_POINTS,
    ) == (defaults.STUDY_DATA, defaults.STUDY_POINTS, defaults.HOLDOUT_POINTS)


def test_public_import_paths_still_work():
    import flowscope.errors
    import flowscope.recipe
    from flowscope import TrainConfig
    from flowscope.base import STANDARDIZE
    from flowscope.evaluate import DEFAULT_N, DEFAULT_NFE, FLOOR_PAIRS
    from flowscope.flows import DEFAULT_EMBEDDING_DIM
    from flowscope.matching import FlowMatching, MeanFlow, ot_assignment
    from flowscope.matching.couplings import ot_assignment as from_couplings
    from flowscope.runs import RunError, recipe
    from flowscope.train import Schedule, TrainingDiverged

    assert TrainConfig is flowscope.recipe.TrainConfig and Schedule is flowscope.recipe.Schedule
    assert recipe is flowscope.recipe.recipe
    assert RunError is flowscope.errors.RunError
    assert TrainingDiverged is flowscope.errors.TrainingDiverged
    assert STANDARDIZE == defaults.STANDARDIZE
    assert DEFAULT_EMBEDDING_DIM == defaults.DEFAULT_EMBEDDING_DIM
    assert (DEFAULT_N, FLOOR_PAIRS, DEFAULT_NFE) == (
        defaults.EVAL_N,
        defaults.EVAL_FLOOR_PAIRS,
        defaults.EVAL_NFE,
    )
    assert issubclass(MeanFlow, FlowMatching) and from_couplings is ot_assignment
    assert [e.model for e in MODELS if e.name in ("fm", "cfm")] == [FlowMatching, FlowMatching]


_TRAIN_PROBE = """
import sys
import numpy as np
from flowscope.cli import main
from flowscope.kernels import build
import torch
folder = sys.argv[1]
x = np.random.default_rng(0).normal(size=(60, 2))
np.savetxt(folder + "/x.csv", x, delimiter=",", header="a,b", comments="")
import flowscope.runs
real = flowscope.runs.train_run
def first_epoch_only(*args, on_epoch_end, **kwargs):  # stops like a Ctrl-C after one epoch
    def stop(model, state):
        on_epoch_end(model, state)
        raise KeyboardInterrupt
    return real(*args, on_epoch_end=stop, **kwargs)
for model in ("nf", "fm"):
    out = folder + "/" + model
    flowscope.runs.train_run = first_epoch_only
    assert main(["train", model, "--data", folder + "/x.csv", "--out", out, "--epochs", "2"]) == 130
    flowscope.runs.train_run = real
    assert main(["train", model, "--out", out, "--resume"]) == 0
    assert main(["sample", out, "-n", "5", "-o", out + "/s.csv"]) == 0
methods = [torch.optim.Optimizer.__dict__[m] for m in ("add_param_group", "zero_grad")]
left = any(hasattr(getattr(m, "__wrapped__", m), "__dynamo_disable") for m in methods)
print(left, build.available(torch.float32), "torch._dynamo" in sys.modules)
"""


def test_training_resuming_and_sampling_never_import_the_compiler(tmp_path):
    """`torch._dynamo` costs 1.2-1.5 s to import and no command compiles anything: with
    the C kernels, the optimizer's methods and steps that would import it are avoided."""
    out = subprocess.run(
        [sys.executable, "-c", _TRAIN_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    # PyTorch's schedulers see the C Adam's steps as the optimizer's: no warning either
    assert "lr_scheduler" not in out.stderr and "Traceback" not in out.stderr
    left, kernels, imported = out.stdout.split()[-3:]
    assert left == "False"  # torch.compile later in the process skips those methods again
    if kernels != "True":
        pytest.skip("no C compiler here: the PyTorch optimizer's step imports the compiler")
    assert imported == "False", out.stderr


def test_python_dash_m_flowscope_is_the_command():
    out = subprocess.run(
        [sys.executable, "-m", "flowscope", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("flowscope ")
    bad = subprocess.run(
        [sys.executable, "-m", "flowscope", "nope"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid choice: 'nope'" in bad.stderr
