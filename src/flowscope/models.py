"""Every model type of flowscope, declared once.

A :class:`ModelType` names a model class with what the rest of flowscope needs to know of
it: its title, whether it takes class labels (always, never, or as training chooses), the
command-line options that set its constructor's arguments, the options of its sampler,
where its training recipe departs from the study's, and how to read run folders written
before one of its arguments existed. The command line (``flowscope train MODEL``), run
folders, evaluation, benchmarks and the report iterate over :data:`MODELS`; no other code
compares a model's name.

The registry is plain Python: a type names its class by ``"module:Class"``, imported when
first used (:attr:`ModelType.model`), and the defaults its options' help quotes are
constants of :mod:`flowscope.defaults` that the class's signature uses too, so that the
command line's ``--help`` and argument errors read every type without importing PyTorch.

Adding a type is one module with its :class:`~flowscope.base.FlowModel` subclass and one
``MODELS.register(...)`` here; the interface test (``tests/test_interface.py``) then runs
every shared check on it, and the report's last page ("Beyond the study") trains and
measures it beside the others, with each :class:`Variant` it declares.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .data import check_int
from .defaults import (
    ACTIVATIONS,
    DEFAULT_EMBEDDING_DIM,
    MEANFLOW_DEFAULTS,
    NF_DEFAULTS,
    NSF_DEFAULTS,
    STANDARDIZE,
)
from .matching.couplings import COUPLINGS, drawn_couplings
from .matching.paths import PATHS
from .matching.times import (
    TIME_SAMPLERS,
)
from .registry import Registry

if TYPE_CHECKING:
    from .base import FlowModel

__all__ = ["MODELS", "ModelType", "Option", "Variant", "model_type", "positive_number"]


def _number(text: str, fits: Callable[[float], bool], requirement: str) -> float:
    """The number ``text`` spells, if ``fits`` accepts it (NaN never fits).

    Raises:
        ValueError: ``must be {requirement}, got {text!r}``.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or not fits(value):
        raise ValueError(f"must be {requirement}, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """A finite number > 0 from text.

    Raises:
        ValueError: naming the text.
    """
    return _number(text, lambda v: math.isfinite(v) and v > 0, "a positive finite number")


def _fraction(text: str) -> float:
    return _number(text, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _share(text: str) -> float:
    return _number(text, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def _non_negative(text: str) -> float:
    return _number(text, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


@dataclass(frozen=True)
class Option:
    """A command-line option of ``flowscope train`` that sets a constructor argument.

    Attributes:
        flag: the option, e.g. ``"--time-alpha"``.
        help: what it does, for ``--help``.
        to_args: the parsed value -> constructor arguments it sets, e.g.
            ``lambda a: {"times": {"name": "beta", "alpha": a}}``.
        parse: text -> value, raising ``ValueError`` with the reason; ``None`` for a
            boolean switch (``--flag/--no-flag``).
        choices: the allowed values, if a fixed set.
        metavar: the value's name in ``--help``.
        const: the value of the flag given without one (``--label-dropout`` alone is
            0.1), or ``None``: the flag needs a value.
        defaults: the default of each type that takes the option, by type name, where
            they differ (``{"nf": 15, "nsf": 4}``), or ``None``; ``help`` then says
            ``{default}`` where :meth:`help_for` puts them.
    """

    flag: str
    help: str
    to_args: Callable[[Any], dict[str, Any]]
    parse: Callable[[str], Any] | None = str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    const: Any = None
    defaults: Mapping[str, Any] | None = None

    def help_for(self, model_type: str | None = None) -> str:
        """The help of the option for one type (``"default 15"``) or, ``None``, for every
        type that takes it (``"default 15 for nf, 4 for nsf"``)."""
        if self.defaults is None:
            return self.help
        if model_type is not None and model_type in self.defaults:
            said = f"default {self.defaults[model_type]}"
        elif any(";" in str(v) or "," in str(v) for v in self.defaults.values()):
            # values that are lists themselves: one "type: value" per type
            said = "defaults: " + "; ".join(f"{k}: {v}" for k, v in self.defaults.items())
        else:
            said = "default " + ", ".join(f"{v} for {k}" for k, v in self.defaults.items())
        return self.help.replace("{default}", said)

    @property
    def dest(self) -> str:
        """The option's name as argparse stores it, e.g. ``time_alpha``."""
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Variant:
    """A named setting of a registered type that comparisons train and show as a model of
    its own, beside the type's default (the report's "Beyond the study" page).

    Attributes:
        name: what the variant adds to the type's name, e.g. ``"conditional"``: the
            comparison's ``nsf-conditional``.
        title: what differs, in words before the type's name, e.g.
            ``"class-conditional"`` (``class-conditional NSF``).
        conditional: train on the data's class labels (see
            :meth:`ModelType.is_conditional`); ``None``: the type's default.
        model_args: constructor arguments where the variant departs from the type's
            defaults, e.g. ``{"coupling": {"name": "ot"}}``.
        recipe: :class:`~flowscope.train.TrainConfig` fields where its training departs
            from the type's recipe.
        sampler: sampler options where it departs from the type's
            (:attr:`ModelType.sampler`), e.g. a guidance scale ``{"guidance": 1.5}``.
        reflow: trained by reflow (:func:`~flowscope.reflow.reflow_run`) on the pairs of
            the type's default model rather than on data: its 2-rectified flow.
    """

    name: str
    title: str
    conditional: bool | None = None
    model_args: Mapping[str, Any] = field(default_factory=dict)
    recipe: Mapping[str, Any] = field(default_factory=dict)
    sampler: Mapping[str, Any] = field(default_factory=dict)
    reflow: bool = False


@dataclass(frozen=True)
class ModelType:
    """A model type: a class and what the rest of flowscope needs to know of it.

    Attributes:
        name: the name on the command line and in run folders, e.g. ``"nf"``.
        implementation: the :class:`~flowscope.base.FlowModel` subclass, or where it is,
            ``"module:Class"`` (relative to the ``flowscope`` package if it starts with
            a dot), imported when :attr:`model` is first asked for.
        title: what the type is, in words, e.g. ``"normalizing flow"``.
        conditional: whether the type takes class labels (``True``: always, as ``cfm``;
            ``False``: never, or by default when ``conditional_option`` is set).
        conditional_option: whether training may choose to condition on the labels:
            ``train_run(conditional=True)``, ``flowscope train nf --conditional`` (the
            class's ``num_classes`` is then set from the data).
        fixed: constructor arguments the type fixes (besides ``num_classes``).
        options: the command-line options that set its constructor's arguments.
        sample_options: the keyword options its sampling, encoding and trajectories
            take (``dt`` and ``solver`` for flow matching, and ``guidance`` for
            conditional flow matching); the command line passes those it was given.
            A type that takes ``dt`` also takes K fixed steps (:meth:`sampling`).
        upgrade: recorded constructor arguments of an older run folder -> today's
            (defaults for arguments that did not exist when it was written).
        likelihood_options: the keyword options its ``log_prob`` and ``inverse`` take
            (the solver, steps and divergence of flow matching).
        small: constructor arguments of a small model of the type, for tests and
            quick checks.
        recipe: the :class:`~flowscope.train.TrainConfig` fields where the type's
            training recipe departs from the study's (TrainConfig's defaults), e.g.
            ``{"batch_size": 512}``; ``flowscope train`` and
            :func:`~flowscope.runs.train_run` use it when not told otherwise.
        variants: settings of the type that comparisons train and show beside its
            default (:class:`Variant`), e.g. its class-conditional form.
        sampler: the sampler options the type is meant to be used with, which
            comparisons use in place of the study's (a mean flow's one step:
            ``{"dt": 1.0}``); empty: the study's.
    """

    name: str
    implementation: type[FlowModel] | str
    title: str
    conditional: bool = False
    fixed: Mapping[str, Any] = field(default_factory=dict)
    options: tuple[Option, ...] = ()
    sample_options: tuple[str, ...] = ()
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    likelihood_options: tuple[str, ...] = ()
    small: Mapping[str, Any] = field(default_factory=dict)
    conditional_option: bool = False
    recipe: Mapping[str, Any] = field(default_factory=dict)
    variants: tuple[Variant, ...] = ()
    sampler: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> type[FlowModel]:
        """The :class:`~flowscope.base.FlowModel` subclass (imported on first use)."""
        if not isinstance(self.implementation, str):
            return self.implementation
        module, _, name = self.implementation.partition(":")
        return getattr(importlib.import_module(module, __package__), name)

    def is_conditional(self, conditional: bool | None = None) -> bool:
        """Whether a model of this type trained with ``conditional`` takes labels
        (``None``: the type's default).

        Raises:
            ValueError: for a choice the type does not offer, naming the types that do.
        """
        if conditional is None or bool(conditional) == self.conditional:
            return self.conditional
        if self.conditional_option:
            return bool(conditional)
        if self.conditional:
            raise ValueError(f"{self.name} is always conditional: it needs class labels")
        others = [e.name for e in MODELS if e.conditional or e.conditional_option]
        raise ValueError(
            f"{self.name} cannot be conditional; the conditional types are {', '.join(others)}"
        )

    def build(self, **args: Any) -> FlowModel:
        """A fresh model of this type: ``fixed`` arguments, then ``args``.

        Raises:
            ValueError: for arguments the class does not take or refuses.
        """
        try:
            return self.model(**{**self.fixed, **args})
        except TypeError as err:
            raise ValueError(f"{self.name}: {err}") from None

    def recorded_args(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments recorded by any flowscope version, as today's."""
        args = dict(args)
        return self.upgrade(args) if self.upgrade is not None else args

    def takes(self, option: str) -> bool:
        """Whether this type's sampler takes ``option`` (``steps``: where it takes ``steps``
        or ``dt``)."""
        return option in self.sample_options or (option == "steps" and "dt" in self.sample_options)

    def sampling(self, **given: Any) -> dict[str, Any]:
        """The options among ``given`` (those not ``None``) that this type's sampler
        takes; ``steps=K``, K fixed steps over t in [0, 1], becomes ``dt=1/K`` for a
        sampler that takes ``dt`` and not ``steps``.

        Raises:
            ValueError: for ``steps`` not a whole number >= 1, or given with ``dt``.
        """
        given = {k: v for k, v in given.items() if v is not None and self.takes(k)}
        if "steps" in given and "steps" not in self.sample_options:
            steps = check_int(given.pop("steps"), "steps")
            if "dt" in given:
                raise ValueError("give the number of steps or the step dt, not both")
            given["dt"] = 1.0 / steps
        return given


#: Every model type, by name.
MODELS: Registry[ModelType] = Registry("model")


def model_type(model: FlowModel | type[FlowModel], *, conditional: bool | None = None) -> ModelType:
    """The registered type of a model (or class): the first whose class is the model's,
    else the nearest base of it, and, for a model, whose ``conditional`` matches.

    Raises:
        ValueError: if no registered type fits.
    """
    cls = model if isinstance(model, type) else type(model)
    if conditional is None and not isinstance(model, type):
        conditional = model.num_classes is not None
    for base in cls.__mro__:  # a MeanFlow is a FlowMatching: its own type comes first
        for entry in MODELS:
            fits = conditional in (None, entry.conditional) or entry.conditional_option
            if entry.model is base and fits:
                return entry
    raise ValueError(f"{cls.__name__} is not a registered model type")


# -- flow matching: options and the arguments of older run folders ------------------------


def _with_skip(exact: bool) -> str:
    """The couplings whose pairs the Gaussian skip is (or is not) exact for."""
    return " and ".join(
        n for n in drawn_couplings() if COUPLINGS.get(n).gaussian_skip_exact == exact
    )


def _times_text(config: dict[str, Any]) -> str:
    return TIME_SAMPLERS.build(config).describe()


def _source(text: str) -> dict[str, Any]:
    from .matching.sources import source_from_text  # reads the file: only when given

    return source_from_text(text)


def _times_by_coupling(conditional: bool) -> str:
    """``by coupling, independent Beta(5, 1), ot U[0, 1]``: each drawn coupling's time
    sampler for an unconditional or a conditional model, for --help."""
    names = [n for n in drawn_couplings() if conditional or not COUPLINGS.get(n).needs_labels]
    return "by coupling, " + ", ".join(
        f"{n} {_times_text(COUPLINGS.get(n).default_times(conditional))}" for n in names
    )


_FM_OPTIONS = (
    Option(
        "--time-alpha",
        "draw the path time t of each training example (0: noise, 1: data) from Beta(A, 1), "
        "density A t^(A-1), A > 0; 1 is U[0, 1], as in the study's recipe; A > 1 trains "
        "mostly near the data ({default})",
        lambda a: {"times": {"name": "uniform"} if a == 1 else {"name": "beta", "alpha": a}},
        parse=positive_number,
        metavar="A",
        defaults={
            "fm": _times_by_coupling(False),
            "cfm": _times_by_coupling(True),
            "meanflow": "U[0, 1] for both of its times",
        },
    ),
    Option(
        "--gaussian-skip",
        "the velocity is the network plus the exact field of Gaussian data with the points' "
        "mean and variance, so the network learns only the rest (default: the coupling's, on "
        f"for {_with_skip(True)}, off for {_with_skip(False)}, whose pairs that field does "
        "not describe; --no-gaussian-skip: the network alone, as in the study's recipe)",
        lambda on: {"gaussian_skip": on},
        parse=None,
    ),
    Option(
        "--path",
        "the probability path from noise to data (default linear, the study's straight "
        "line; cosine: variance preserving)",
        lambda name: {"path": {"name": name}},
        choices=PATHS.names(),
    ),
    Option(
        "--sigma-min",
        "the noise left at t = 1 on the linear path, in [0, 1) (default 0, the study's)",
        lambda s: {"path": {"name": "linear", "sigma_min": s}},
        parse=_fraction,
        metavar="S",
    ),
    Option(
        "--coupling",
        "which source point each data point of a batch is paired with (default "
        "independent, the study's; ot: exact minibatch optimal transport; class-ot: OT "
        "within each class, cfm only)",
        lambda name: {"coupling": {"name": name}},
        choices=drawn_couplings(),
    ),
    Option(
        "--source",
        "the distribution at t = 0: normal (default, N(0, I) in standardized units), a toy "
        "set name such as 8gaussians (in data units), or a .csv/.npy/.npz file of points",
        lambda config: {"source": config},
        parse=_source,
        metavar="NAME|FILE",
    ),
)


_ACTIVATION_OPTION = Option(
    "--activation",
    "the function between the velocity network's layers: leaky_relu (default, the study's; "
    "the fused kernels compute it) or silu (smooth, trained and sampled by PyTorch "
    "operations: the gradient of log_prob in x is then the score, for steering or "
    "attribution; a LeakyReLU field's divergence jumps at the network's kinks, which "
    "that gradient misses: benchmarks/README.md, 'Gradients of log p')",
    lambda name: {"activation": name},
    choices=ACTIVATIONS,
)
_LABEL_DROPOUT_OPTION = Option(
    "--label-dropout",
    "train for classifier-free guidance: replace each training example's class by a "
    "learned null class with probability P in [0, 1) (the flag alone: 0.1), so that "
    "`sample --guidance W` can steer with v_null + W (v_class - v_null); implies "
    "--standardize global (default 0: no null class, no guidance; benchmarks/README.md, "
    "'Classifier-free guidance', measures the scales W, training lengths and --time-alpha: "
    "times nearer the data, e.g. 12, sharpen guided samples but cost the unguided density)",
    lambda p: {"label_dropout": p},
    parse=_fraction,
    metavar="P",
    const=0.1,
)
_STANDARDIZE_OPTION = Option(
    "--standardize",
    "standardize each class's points by their own mean and standard deviation ('class', "
    "the default: the noise of class k starts around its mean) or all points together "
    "('global', as in the study's recipe; 'class' needs at least 2 training points of "
    "every class); nf and nsf take it with --conditional",
    lambda how: {"standardize": how},
    choices=STANDARDIZE,
)


_MEANFLOW_OPTIONS = (
    Option(
        "--jump-share",
        "the share of training points whose two times differ (r != t), which train the "
        "average velocity; the rest train the instantaneous one, as flow matching (default "
        f"{MEANFLOW_DEFAULTS['jump_share']:g}; the paper's 0.25 "
        "measured worse on the moons)",
        lambda s: {"jump_share": s},
        parse=_share,
        metavar="S",
    ),
    Option(
        "--adaptive-power",
        "p of the loss's adaptive weight 1 / (error^2 + 1e-3)^p (default "
        f"{MEANFLOW_DEFAULTS['adaptive_power']:g}; the paper's 1 "
        "measured worse on the moons; 0: the plain squared error)",
        lambda p: {"adaptive_power": p},
        parse=_non_negative,
        metavar="P",
    ),
)


def _upgrade_fm(args: dict[str, Any]) -> dict[str, Any]:
    """Run folders written before an argument existed trained with the study's choice:
    uniform t (``time_alpha`` 1 before ``times``), global standardization, no skip, the
    linear path, the independent coupling, no label dropout and LeakyReLU layers."""
    if "times" not in args:
        alpha = float(args.pop("time_alpha", 1.0))
        args["times"] = {"name": "uniform"} if alpha == 1 else {"name": "beta", "alpha": alpha}
    args.setdefault("standardize", "global")
    args.setdefault("gaussian_skip", False)
    args.setdefault("path", {"name": "linear", "sigma_min": 0.0})
    args.setdefault("coupling", {"name": "independent"})
    args.setdefault("label_dropout", 0.0)
    args.setdefault("activation", "leaky_relu")
    return args


# -- coupling flows: their sizes, conditioning and the arguments of older run folders -------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"must be a whole number >= 1, got {text!r}")
    return value


_FLOWS = {"nf": NF_DEFAULTS, "nsf": NSF_DEFAULTS}
_COUPLING_OPTIONS = tuple(
    Option(
        f"--{argument.replace('_', '-')}",
        f"{what} ({{default}})",
        lambda v, argument=argument: {argument: v},
        parse=_positive_int,
        metavar="N",
        defaults={name: defaults[argument] for name, defaults in _FLOWS.items()},
    )
    for argument, what in (
        ("couplings", "coupling layers"),
        ("hidden", "width of each coupling's network"),
        ("linear_layers", "Linear layers of each coupling's network"),
    )
)
_SPLINE_OPTIONS = (
    Option(
        "--bins",
        f"bins K of each rational-quadratic spline (default {NSF_DEFAULTS['bins']})",
        lambda k: {"bins": k},
        parse=_positive_int,
        metavar="K",
    ),
    Option(
        "--tail-bound",
        "each spline acts on [-B, B] of the standardized coordinate and is the identity "
        f"outside (default {NSF_DEFAULTS['tail_bound']})",
        lambda b: {"tail_bound": b},
        parse=positive_number,
        metavar="B",
    ),
)


#: The spline flow's training recipe (benchmarks/results/nsf.md).
_SPLINE_RECIPE = {"min_epochs": 20, "batch_size": 512, "lr": 5e-3}
#: Coupling flows conditioned on the ring, as ``flowscope train nf --conditional`` trains
#: them. The affine flow has no fused kernel when conditional, so it trains with the
#: spline flow's recipe, as benchmarks/bench_nsf.py does.
_CONDITIONAL = Variant("conditional", "class-conditional", conditional=True)
_CONDITIONAL_NF = replace(_CONDITIONAL, recipe=_SPLINE_RECIPE)


def _upgrade_flow(args: dict[str, Any]) -> dict[str, Any]:
    """Run folders written before conditional coupling flows were unconditional, with
    the default embedding size and global standardization."""
    args.setdefault("num_classes", None)
    args.setdefault("embedding_dim", DEFAULT_EMBEDDING_DIM)
    args.setdefault("standardize", "global" if args["num_classes"] is None else "class")
    return args


MODELS.register(
    "nf",
    ModelType(
        "nf",
        ".flows:NormalizingFlow",
        "normalizing flow",
        conditional_option=True,
        options=(*_COUPLING_OPTIONS, _STANDARDIZE_OPTION),
        upgrade=_upgrade_flow,
        small={"couplings": 4},
        # Regularized less than the other types' small-data defaults: the affine flow
        # scored better so on Old Faithful (benchmarks/README.md, small data sets).
        recipe={"small_decay": 0.5, "small_noise": 0.1},
        variants=(_CONDITIONAL_NF,),
    ),
)
MODELS.register(
    "fm",
    ModelType(
        "fm",
        ".matching.model:FlowMatching",
        "flow matching",
        options=(*_FM_OPTIONS, _ACTIVATION_OPTION),
        sample_options=("dt", "solver"),
        likelihood_options=("solver", "steps", "divergence", "probes", "generator"),
        upgrade=_upgrade_fm,
        small={"hidden": 16, "layers": 3},
        variants=(
            Variant("ot", "OT-coupled", model_args={"coupling": {"name": "ot"}}),
            Variant("rectified", "2-rectified", reflow=True),
        ),
    ),
)
#: The guidance scale comparisons sample a guided cfm with: with label dropout 0.1 and the
#: default times, the w of the best class accuracy at full coverage on most seeds
#: (benchmarks/results/guidance_p0.1_a7.md; also the best w of results/guidance.md).
_GUIDED_W = 1.5
MODELS.register(
    "cfm",
    ModelType(
        "cfm",
        ".matching.model:FlowMatching",
        "conditional flow matching",
        conditional=True,
        options=(*_FM_OPTIONS, _STANDARDIZE_OPTION, _LABEL_DROPOUT_OPTION, _ACTIVATION_OPTION),
        sample_options=("dt", "solver", "guidance"),
        likelihood_options=("solver", "steps", "divergence", "probes", "generator"),
        upgrade=_upgrade_fm,
        small={"hidden": 16, "layers": 3},
        variants=(
            Variant(
                "guided",
                "guided",
                model_args={"label_dropout": 0.1},
                sampler={"guidance": _GUIDED_W},
            ),
        ),
    ),
)
MODELS.register(
    "meanflow",
    ModelType(
        "meanflow",
        ".matching.meanflow:MeanFlow",
        "mean flow",
        options=(*_FM_OPTIONS, *_MEANFLOW_OPTIONS),
        sample_options=("dt", "solver"),
        likelihood_options=("solver", "steps", "divergence", "generator"),
        small={"hidden": 16, "layers": 3},
        # A step costs several fm steps (the JVP, and no fused kernel): fewer, larger ones.
        recipe={"min_epochs": 8, "batch_size": 512, "lr": 2e-3},
        sampler={"dt": 1.0},  # one step of the average velocity, as `sample` draws
    ),
)
MODELS.register(
    "nsf",
    ModelType(
        "nsf",
        ".flows:SplineFlow",
        "neural spline flow",
        conditional_option=True,
        options=(*_COUPLING_OPTIONS, *_SPLINE_OPTIONS, _STANDARDIZE_OPTION),
        upgrade=_upgrade_flow,
        small={"couplings": 3, "bins": 5, "hidden": 16},
        recipe=_SPLINE_RECIPE,
        variants=(_CONDITIONAL,),
    ),
)
MODELS.register(
    "gaussian",
    # Five parameters need no noise, which would only widen the fitted Gaussian.
    ModelType("gaussian", ".gaussian:Gaussian", "Gaussian", recipe={"small_noise": 0.0}),
)
