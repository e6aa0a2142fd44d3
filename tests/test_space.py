import math
import re
from pathlib import Path

import numpy as np
import pytest
from hyperopt import hp
from hyperopt.pyll import scope
from hyperopt.pyll.stochastic import sample

from scanpy_autotune._search._space import (
    build_space,
    default_space,
    default_space_spec,
    integration_space,
)
from scanpy_autotune._vae._config import HYPERPARAMETERS, default_hyperparameters

H = HYPERPARAMETERS
DEFAULT_NAMES = ["dropout_rate", "lr", "n_hidden", "n_latent", "n_layers", "reconstruction_loss"]


def _draws(space, n=300, seed=0):
    """Values drawn from the hyperopt space by hyperopt itself (choices resolved)."""
    rng = np.random.default_rng(seed)
    return [sample(space.hyperopt_space, rng=rng) for _ in range(n)]


# -- the default space ------------------------------------------------------------


def test_default_space_values():
    space = build_space(None, H)
    assert space.names == DEFAULT_NAMES
    assert space.fixed == {}
    seen = {name: set() for name in DEFAULT_NAMES}
    for draw in _draws(space, n=400):
        params = space.decode(space.encode(draw))
        for name, value in params.items():
            seen[name].add(value)
    assert seen["n_latent"] == set(range(5, 16))
    assert seen["n_layers"] == set(range(1, 6))
    assert seen["n_hidden"] == {64, 128, 256}
    assert seen["dropout_rate"] == {0.1, 0.3, 0.5, 0.7, 0.9}
    assert seen["reconstruction_loss"] == {"zinb", "nb"}
    assert seen["lr"] == {1e-2, 5e-3, 1e-3, 5e-4, 1e-4}
    assert space.searched_kinds() == {
        "dropout_rate": "categorical",
        "lr": "categorical",
        "n_hidden": "categorical",
        "n_latent": "numeric",
        "n_layers": "numeric",
        "reconstruction_loss": "categorical",
    }


def _described_values(text, name, quote):
    """The values a prose description gives ``name``: ``a..b`` or ``{x, y}``."""
    found = re.search(rf"{quote}{name}{quote}\s+(\{{[^}}]*\}}|\d+\.\.\d+)", " ".join(text.split()))
    assert found, name
    value = found.group(1)
    if ".." in value:
        return ("int", *map(int, value.split("..")))
    return [v if v.isalpha() else float(v) for v in value.strip("{}").split(", ")]


def test_the_default_space_is_described_as_it_is_in_the_readme_and_the_docstring():
    from scanpy_autotune import tl

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name, spec in default_space_spec().items():
        for text, quote in ((readme, "`"), (tl.default_space.__doc__, "``")):
            assert _described_values(text, name, quote) == (list(spec) if isinstance(spec, list) else spec), name


def test_default_space_expressions_are_labelled_by_name():
    exprs = default_space()
    assert sorted(exprs) == DEFAULT_NAMES
    draw = sample(exprs, rng=np.random.default_rng(1))
    assert 5 <= draw["n_latent"] <= 15 and isinstance(draw["n_latent"], int)
    assert draw["reconstruction_loss"] in ("zinb", "nb")
    # the dict built from it equals the shorthand default
    assert build_space(exprs, H).to_text() == build_space(None, H).to_text()


def test_integration_space_adds_a_log_uniform_kl_weight_to_the_default_space():
    space = build_space(integration_space(), H)
    assert space.names == sorted([*DEFAULT_NAMES, "max_kl_weight"])
    assert space.searched_kinds()["max_kl_weight"] == "log"  # plotted and modelled on a log axis
    weights = np.array([space.decode(space.encode(d))["max_kl_weight"] for d in _draws(space, n=400)])
    assert weights.min() >= 1.0 and weights.max() <= 100.0
    # log-uniform: about half the draws below 10, the geometric middle of [1, 100]
    assert 0.4 < np.mean(weights < 10.0) < 0.6
    # the rest is the default space, dimension by dimension
    default = build_space(None, H)
    for name in DEFAULT_NAMES:
        assert space.dimensions[name].to_text() == default.dimensions[name].to_text()
    # the default configuration (weight 1) lies inside it
    defaults = default_hyperparameters()
    assert space.encode({name: defaults[name] for name in space.names}) is not None


def test_default_configuration_encodes_and_decodes_to_python_types():
    space = build_space(None, H)
    default = {name: spec.default for name, spec in H.items()}
    vals = space.encode(default)
    assert vals == {
        "dropout_rate": 0,
        "lr": 2,
        "n_hidden": 1,
        "n_latent": 10.0,
        "n_layers": 1.0,
        "reconstruction_loss": 0,
    }
    params = space.decode(vals)
    assert params == {k: default[k] for k in DEFAULT_NAMES}
    assert type(params["n_latent"]) is int and type(params["n_hidden"]) is int
    assert type(params["lr"]) is float and type(params["reconstruction_loss"]) is str
    # hyperopt's misc["vals"] form and numpy scalars decode the same way
    misc_vals = {
        k: [np.float64(v) if isinstance(v, float) else np.int64(v)] for k, v in vals.items()
    }
    assert space.decode(misc_vals) == params
    assert all(type(v) in (int, float, str) for v in space.decode(misc_vals).values())


# -- shorthand -------------------------------------------------------------------------


def test_shorthand_round_trip_and_fixed_values():
    space = build_space(
        {
            "n_hidden": ("choice", [32, 64]),
            "n_latent": ("int", 2, 4),
            "lr": ("log", 1e-4, 1e-2),
            "dropout_rate": ("uniform", 0.0, 0.5),
            "reconstruction_loss": ["nb", "zinb"],
            "use_observed_lib_size": [True, False],
            "n_layers": 2,
            "dispersion": "gene-batch",
            "early_stopping": False,
        },
        H,
    )
    assert space.fixed == {"dispersion": "gene-batch", "early_stopping": False, "n_layers": 2}
    assert space.searched_kinds() == {
        "dropout_rate": "numeric",
        "lr": "log",
        "n_hidden": "categorical",
        "n_latent": "numeric",
        "reconstruction_loss": "categorical",
        "use_observed_lib_size": "categorical",
    }
    latents = set()
    for draw in _draws(space, n=200):
        params = space.decode(space.encode(draw))
        assert params["n_layers"] == 2 and params["dispersion"] == "gene-batch"
        assert params["early_stopping"] is False
        assert params["n_hidden"] in (32, 64)
        assert 1e-4 <= params["lr"] <= 1e-2 and type(params["lr"]) is float
        assert 0.0 <= params["dropout_rate"] <= 0.5
        assert type(params["use_observed_lib_size"]) is bool
        assert space.encode(params) is not None
        assert space.decode(space.encode(params)) == params
        latents.add(params["n_latent"])
    assert latents == {2, 3, 4}


def test_encode_rejects_values_outside_the_space():
    space = build_space(
        {
            "n_hidden": [64, 128],
            "lr": ("log", 1e-4, 1e-2),
            "n_latent": ("int", 5, 15),
            "n_layers": 1,
        },
        H,
    )
    good = {"n_hidden": 64, "lr": 1e-3, "n_latent": 10, "n_layers": 1}
    assert space.encode(good) == {"lr": 1e-3, "n_hidden": 0, "n_latent": 10.0}
    assert space.encode({**good, "batch_size": 7}) is not None  # names outside the space ignored
    assert space.encode({**good, "n_hidden": 256}) is None  # not a choice
    assert space.encode({**good, "lr": 0.1}) is None  # outside the range
    assert space.encode({**good, "n_latent": 16}) is None
    assert space.encode({**good, "n_latent": 7.5}) is None  # not an integer
    assert space.encode({**good, "n_layers": 2}) is None  # fixed value differs
    assert space.encode({k: v for k, v in good.items() if k != "lr"}) is None  # missing


def test_log_range_on_integer_parameter_stays_integer():
    space = build_space({"n_hidden": ("log", 16, 512)}, H)
    assert space.searched_kinds() == {"n_hidden": "log"}
    values = {space.decode(space.encode(d))["n_hidden"] for d in _draws(space, n=300)}
    assert all(type(v) is int and 16 <= v <= 512 for v in values)
    assert min(values) < 24 and max(values) > 400


# -- hyperopt expressions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expr", "allowed", "kind"),
    [
        ("n_hidden", hp.choice("other_label", [64, 128, 256]), {64, 128, 256}, "categorical"),
        ("dropout_rate", hp.uniform("dropout_rate", 0.05, 0.5), (0.05, 0.5), "numeric"),
        ("lr", hp.loguniform("lr", math.log(1e-4), math.log(1e-2)), (1e-4, 1e-2), "log"),
        ("n_latent", scope.int(hp.quniform("n_latent", 4, 20, 2)), set(range(4, 21, 2)), "numeric"),
        ("n_latent", hp.quniform("n_latent", 4, 20, 2), set(range(4, 21, 2)), "numeric"),
        ("batch_size", hp.qloguniform("bs", math.log(32), math.log(512), 32), None, "log"),
        ("n_layers", hp.randint("n_layers", 1, 4), {1, 2, 3}, "numeric"),
        ("lr_patience", hp.randint("lr_patience", 1, 6), {1, 2, 3, 4, 5}, "numeric"),
        ("n_layers", scope.int(hp.uniform("n_layers", 1, 4)), {1, 2, 3}, "numeric"),
        ("weight_decay", hp.quniform("wd", 0.0, 0.01, 0.001), None, "numeric"),
    ],
)
def test_hyperopt_expressions_round_trip(name, expr, allowed, kind):
    spec = H[name]
    space = build_space({name: expr, "reconstruction_loss": "nb"}, H)
    assert space.names == [name]
    assert space.searched_kinds() == {name: kind}
    values = set()
    for draw in _draws(space, n=200):
        vals = space.encode(draw)
        assert vals is not None, draw
        params = space.decode(vals)
        assert params["reconstruction_loss"] == "nb"
        value = params[name]
        assert type(value) is (int if spec.kind == "int" else float)
        assert space.decode(space.encode(params)) == params
        values.add(value)
    if isinstance(allowed, set):
        assert values == allowed
    elif isinstance(allowed, tuple):
        assert allowed[0] <= min(values) and max(values) <= allowed[1]
    if name == "batch_size":
        assert all(v % 32 == 0 and 32 <= v <= 512 for v in values)
    if name == "weight_decay":
        assert all(abs(v * 1000 - round(v * 1000)) < 1e-9 for v in values)


def test_hyperopt_randint_single_argument():
    space = build_space({"n_epochs_kl_warmup": hp.randint("w", 5)}, H)
    values = {space.decode(space.encode(d))["n_epochs_kl_warmup"] for d in _draws(space)}
    assert values == {0, 1, 2, 3, 4}


def test_mixed_dict_of_expressions_shorthand_and_fixed():
    space = build_space(
        {"n_hidden": hp.choice("n_hidden", [64, 128]), "n_latent": ("int", 5, 6), "n_layers": 3}, H
    )
    assert space.names == ["n_hidden", "n_latent"]
    assert space.fixed == {"n_layers": 3}
    assert space.decode({"n_hidden": 1, "n_latent": 6.0}) == {
        "n_hidden": 128,
        "n_latent": 6,
        "n_layers": 3,
    }


def test_to_text_is_deterministic_and_distinguishes_spaces():
    a = build_space({"lr": ("log", 1e-4, 1e-2), "n_hidden": [64, 128], "n_layers": 2}, H)
    b = build_space({"n_layers": 2, "n_hidden": [64, 128], "lr": ("log", 1e-4, 1e-2)}, H)
    c = build_space({"lr": ("log", 1e-4, 1e-2), "n_hidden": [64, 256], "n_layers": 2}, H)
    assert a.to_text() == b.to_text()
    assert a == b and a != c
    assert a.to_text().splitlines() == [
        "lr: loguniform(-9.21034037198, -4.60517018599) in [0.0001, 0.01]",
        "n_hidden: choice([64, 128])",
        "n_layers = 2 (fixed)",
    ]


# -- errors ----------------------------------------------------------------------------


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="n_hiden") as err:
        build_space({"n_hiden": [64, 128]}, H)
    for name in H:
        assert name in str(err.value)


@pytest.mark.parametrize("space", [{}, {"n_layers": 2}, {"n_layers": 2, "lr": 1e-3}])
def test_empty_space_is_an_error(space):
    with pytest.raises(ValueError, match="empty"):
        build_space(space, H)


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({"lr": ("log", 1e-2, 1e-4)}, "lr: low must be smaller"),
        ({"lr": ("log", 0.0, 1e-2)}, "lr: .*low > 0"),
        ({"dropout_rate": ("uniform", 0.5, 0.5)}, "dropout_rate: low must be smaller"),
        ({"n_latent": ("int", 5, 5)}, "n_latent: low must be smaller"),
        ({"n_latent": ("int", 5.5, 8)}, "n_latent: .*integer bounds"),
        ({"n_latent": ("int", 5.0, 8)}, "n_latent: .*integer bounds.*never taken"),
        ({"n_latent": ("int", 5, 8.0)}, "n_latent: .*integer bounds"),
        ({"n_hidden": []}, "n_hidden: the list of choices is empty"),
        ({"n_hidden": ("choice", [])}, "n_hidden: the list of choices is empty"),
        ({"n_hidden": [64, 64]}, "n_hidden: .*twice"),
        ({"n_hidden": ("between", 1, 2)}, "n_hidden=.*not understood"),
        ({"lr": ("log", 1e-4)}, "lr: write"),
        ({"lr": ("log", "a", 1.0)}, "lr: bounds must be finite numbers"),
        ({"n_layers": ("int", 0, 3)}, "n_layers: the range .* outside the valid range"),
        ({"dropout_rate": ("uniform", 0.0, 1.0)}, "dropout_rate: the range"),
        ({"n_hidden": ("uniform", 16.0, 64.0)}, "n_hidden is an integer"),
        ({"reconstruction_loss": ("uniform", 0, 1)}, "reconstruction_loss is categorical"),
        ({"reconstruction_loss": ["zinb", "gaussian"]}, "reconstruction_loss='gaussian'"),
        ({"n_layers": [1, 0]}, "n_layers=0 is out of range"),
        ({"n_layers": 0}, "n_layers=0 is out of range"),
        ({"n_hidden": [64], "dispersion": "per-cell"}, "dispersion='per-cell'"),
    ],
)
def test_bad_entries_name_the_parameter(space, match):
    with pytest.raises(ValueError, match=match):
        build_space(space, H)


@pytest.mark.parametrize(
    ("expr", "match"),
    [
        (hp.choice("n_hidden", [hp.choice("a", [1, 2]), 64]), "nested or conditional"),
        (hp.choice("n_hidden", [{"n": 64}, {"n": 128}]), "nested or conditional"),
        (hp.normal("n_hidden", 64, 8), "hp.normal is not supported"),
        (5 + hp.randint("n_hidden", 11), "add.* is not supported"),
        (hp.pchoice("n_hidden", [(0.5, 64), (0.5, 128)]), "pchoice"),
        (hp.uniform("n_hidden", 16, 64), "n_hidden is an integer"),
        (hp.quniform("n_hidden", 0, 64, 32), "outside the valid range"),
    ],
)
def test_unsupported_hyperopt_expressions(expr, match):
    with pytest.raises(ValueError, match=match):
        build_space({"n_hidden": expr}, H)


def test_fixed_values_are_validated_and_converted():
    space = build_space({"n_hidden": [64, 128], "n_layers": np.int64(2), "lr": np.float32(0.5)}, H)
    assert space.fixed == {"lr": 0.5, "n_layers": 2}
    assert type(space.fixed["n_layers"]) is int and type(space.fixed["lr"]) is float
    with pytest.raises(ValueError, match=r"n_layers=2.0 must be an integer; a float is not taken"):
        build_space({"n_hidden": [64, 128], "n_layers": 2.0}, H)


def test_the_default_configuration_takes_the_space_s_fixed_values_and_says_when_it_lies_outside(caplog):
    """Fixed values and one-value choices shape the default trial; a default outside a searched
    range or choice still runs (the reference of the gain), with a warning naming what lies outside."""
    import logging

    from scanpy_autotune._search._search import _default_in_space

    defaults = default_hyperparameters()
    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"):
        inside = _default_in_space(build_space({"n_latent": [5, 10], "n_layers": [4], "lr": 1e-2}, H), defaults)
        assert inside == {"n_latent": 10, "n_layers": 4, "lr": 1e-2}
        assert _default_in_space(build_space(None, H), defaults) == {
            name: defaults[name] for name in build_space(None, H).names
        }
        assert caplog.text == ""
        outside = _default_in_space(build_space({"n_latent": [2, 3], "lr": ("log", 1e-2, 1e-1)}, H), defaults)
    assert outside == {"n_latent": 10, "lr": 1e-3}
    assert "lies outside the search space (lr=0.001, n_latent=10); it runs as the reference" in caplog.text


def test_a_range_written_as_a_list_says_python_ranges_are_tuples():
    with pytest.raises(ValueError, match=r"lr=\['log', 0.0001, 0.01\] is a list, which is a choice; a range is a "
                                         r"tuple in Python: lr=\('log', 0.0001, 0.01\)"):
        build_space({"lr": ["log", 1e-4, 1e-2]}, H)
