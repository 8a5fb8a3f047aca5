"""The registry of model types: conditioning chosen by training, a type's own recipe, and the
arguments of run folders written before conditional coupling flows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from flowscope import FlowMatching, NormalizingFlow
from flowscope.flows import SplineFlow
from flowscope.models import MODELS, model_type
from flowscope.recipe import SMALL_DATA_DECAY, SMALL_DATA_NOISE
from flowscope.runs import read_info, recipe, recorded_model_args
from flowscope.train import TrainConfig

FIXTURES = Path(__file__).parent / "fixtures" / "runs_44350cf"


def test_a_type_that_may_condition_chooses_by_the_argument():
    nf, cfm, fm = MODELS.get("nf"), MODELS.get("cfm"), MODELS.get("fm")
    assert nf.conditional_option and not nf.conditional
    assert nf.is_conditional() is False and nf.is_conditional(True) is True
    assert cfm.is_conditional() is True and cfm.is_conditional(True) is True
    with pytest.raises(ValueError, match="cfm is always conditional"):
        cfm.is_conditional(False)
    with pytest.raises(ValueError, match="fm cannot be conditional; the conditional types are"):
        fm.is_conditional(True)


def test_model_type_finds_the_entry_of_either_variant():
    assert model_type(NormalizingFlow(couplings=1)).name == "nf"
    assert model_type(NormalizingFlow(couplings=1, num_classes=3)).name == "nf"
    assert model_type(SplineFlow(couplings=1, num_classes=3)).name == "nsf"
    assert model_type(FlowMatching(hidden=4, layers=2)).name == "fm"
    assert model_type(FlowMatching(hidden=4, layers=2, num_classes=3)).name == "cfm"


def test_a_types_recipe_is_the_study_where_it_does_not_depart():
    # nf departs only in how it regularizes small data: on the study's data, the study's.
    nf = recipe("nf")
    assert replace(nf, small_decay=SMALL_DATA_DECAY, small_noise=SMALL_DATA_NOISE) == TrainConfig()
    assert nf.schedule(250_000) == TrainConfig().schedule(250_000)
    own = MODELS.get("nsf").recipe
    assert own and recipe("nsf") == TrainConfig(**own)
    assert recipe("nsf", seed=3, epochs=2) == TrainConfig(**{**own, "seed": 3, "epochs": 2})


def test_the_coupling_options_name_each_types_default():
    options = {o.flag: o for o in MODELS.get("nsf").options}
    assert {"--couplings", "--hidden", "--linear-layers", "--bins", "--tail-bound"} <= set(options)
    every = options["--couplings"].help_for()
    assert f"{NormalizingFlow().couplings} for nf" in every
    assert f"{SplineFlow().couplings} for nsf" in every
    assert (
        options["--couplings"].help_for("nsf")
        == f"coupling layers (default {SplineFlow().couplings})"
    )
    hidden = NormalizingFlow().config()["hidden"]
    assert options["--hidden"].help_for("nf").endswith(f"(default {hidden})")
    assert options["--bins"].to_args(4) == {"bins": 4}
    with pytest.raises(ValueError, match="whole number"):
        options["--bins"].parse("0")


def test_defaults_that_are_lists_are_given_type_by_type():
    """--time-alpha's defaults are per coupling for fm and cfm: each type's list after its
    name, not 'X for fm, Y for cfm' run together."""
    (alpha,) = [o for o in MODELS.get("fm").options if o.flag == "--time-alpha"]
    every = alpha.help_for()
    assert "(defaults: fm: by coupling, independent Beta(5, 1), ot U[0, 1]; cfm: by coupling," in (
        every
    )
    assert every.endswith("; meanflow: U[0, 1] for both of its times)")
    assert alpha.help_for("fm").endswith(
        "(default by coupling, independent Beta(5, 1), ot U[0, 1])"
    )


def test_a_flow_folder_from_before_conditional_flows_reads_as_an_unconditional_one():
    info = read_info(FIXTURES / "nf")
    assert "num_classes" not in info.model
    args = recorded_model_args(info)
    assert args == NormalizingFlow(**args).config()
    assert (args["num_classes"], args["standardize"]) == (None, "global")
