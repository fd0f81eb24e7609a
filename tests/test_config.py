"""Config validation (one-line errors naming the field), the JSON round trip, load_config and presets."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from iclab.config import (
    ConfigError,
    EvalConfig,
    ExperimentConfig,
    TrainConfig,
    change_family,
    config_from_dict,
    config_to_dict,
    load_config,
    model_config,
    task_config,
)
from iclab.experiments.presets import PRESETS, preset
from iclab.models import MODELS
from iclab.tasks import TASKS

SECTIONS = {
    "task": lambda name="linear", **kw: task_config(name, **kw),
    "model": lambda name="lsa", **kw: model_config(name, **kw),
    "train": TrainConfig,
    "eval": EvalConfig,
}


def _assert_one_line(exc: ConfigError, field: str, allowed: str) -> None:
    msg = str(exc)
    assert "\n" not in msg and "\r" not in msg, msg
    assert msg.startswith(f"{field}: "), msg
    assert allowed in msg, msg


# (section or None for a top-level ExperimentConfig field, overrides, dotted field, text stating what is allowed)
BAD = [
    # TaskConfig
    ("task", {"name": "quadratc"}, "task.name", "choose one of: linear, sparse_linear"),
    ("task", {"d": 0}, "task.d", "integer >= 1"),
    ("task", {"d": -3}, "task.d", "integer >= 1"),
    ("task", {"d": 2.5}, "task.d", "integer >= 1"),
    ("task", {"d": True}, "task.d", "integer >= 1"),
    ("task", {"d": "3"}, "task.d", "integer >= 1"),
    ("task", {"n_points": 0}, "task.n_points", "integer >= 1"),
    ("task", {"n_points": -1}, "task.n_points", "integer >= 1"),
    ("task", {"n_queries": 0}, "task.n_queries", "integer >= 1"),
    ("task", {"x_dist": "cauchy"}, "task.x_dist", "choose one of: uniform, gaussian"),
    ("task", {"x_scale": 0}, "task.x_scale", "finite number > 0"),
    ("task", {"x_scale": -0.5}, "task.x_scale", "finite number > 0"),
    ("task", {"x_scale": math.inf}, "task.x_scale", "finite number > 0"),
    ("task", {"x_scale": math.nan}, "task.x_scale", "finite number > 0"),
    ("task", {"w_scale": 0.0}, "task.w_scale", "finite number > 0"),
    ("task", {"noise_var": -1}, "task.noise_var", "finite number >= 0"),
    ("task", {"noise_var": math.nan}, "task.noise_var", "finite number >= 0"),
    ("task", {"d": 3, "x_dist": "gaussian", "x_cov_diag": (1.0, 1.0)}, "task.x_cov_diag", "d = 3 positive numbers"),
    ("task", {"d": 2, "x_dist": "gaussian", "x_cov_diag": (1.0, 0.0)}, "task.x_cov_diag", "finite number > 0"),
    ("task", {"d": 2, "x_dist": "gaussian", "x_cov_diag": (1.0, -2.0)}, "task.x_cov_diag", "finite number > 0"),
    ("task", {"d": 2, "x_dist": "gaussian", "x_cov_diag": (1.0, "a")}, "task.x_cov_diag", "finite number > 0"),
    ("task", {"d": 2, "x_dist": "gaussian", "x_cov_diag": 5}, "task.x_cov_diag", "list of d = 2"),
    ("task", {"d": 2, "x_dist": "uniform", "x_cov_diag": (1.0, 1.0)}, "task.x_cov_diag", "unset unless"),
    ("task", {"d": 2, "w_cov_diag": (1.0,)}, "task.w_cov_diag", "d = 2 positive numbers"),
    ("task", {"d": 2, "w_cov_diag": (1.0, 0.0)}, "task.w_cov_diag", "finite number > 0"),
    # ModelConfig
    ("model", {"name": "gpt2"}, "model.name", "choose one of: lsa, softmax, gpt"),
    ("model", {"layers": 0}, "model.layers", "integer >= 1"),
    ("model", {"layers": 1.0}, "model.layers", "integer >= 1"),
    ("model", {"heads": 0}, "model.heads", "integer >= 1"),
    ("model", {"init_scale": 0}, "model.init_scale", "finite number > 0"),
    ("model", {"init_scale": -1e-3}, "model.init_scale", "finite number > 0"),
    ("model", {"tied": "no"}, "model.tied", "true or false"),
    ("model", {"layernorm": 1}, "model.layernorm", "true or false"),
    # TrainConfig
    ("train", {"steps": -1}, "train.steps", "integer >= 0"),
    ("train", {"batch_size": 0}, "train.batch_size", "integer >= 1"),
    ("train", {"lr": 0}, "train.lr", "finite number > 0"),
    ("train", {"lr": -1e-3}, "train.lr", "finite number > 0"),
    ("train", {"lr": math.nan}, "train.lr", "finite number > 0"),
    ("train", {"beta1": -0.1}, "train.beta1", "number in [0, 1)"),
    ("train", {"beta1": False}, "train.beta1", "number in [0, 1)"),
    ("train", {"beta2": 1.0}, "train.beta2", "number in [0, 1)"),
    ("train", {"beta2": math.nan}, "train.beta2", "number in [0, 1)"),
    ("train", {"beta2": "0.9"}, "train.beta2", "number in [0, 1)"),
    ("train", {"weight_decay": -1}, "train.weight_decay", "finite number >= 0"),
    ("train", {"grad_clip": -1}, "train.grad_clip", "finite number >= 0"),
    ("train", {"schedule": "linearly"}, "train.schedule", "choose one of: constant, cosine, warmup_cosine"),
    ("train", {"warmup_steps": -1}, "train.warmup_steps", "integer >= 0"),
    ("train", {"eval_every": 0}, "train.eval_every", "integer >= 1"),
    ("train", {"eval_every": 100, "checkpoint_every": 250}, "train.checkpoint_every", "a multiple of train.eval_every"),
    ("train", {"checkpoint_every": 0}, "train.checkpoint_every", "integer >= 1"),
    ("train", {"seed": -1}, "train.seed", "integer >= 0"),
    ("train", {"device": "tpu"}, "train.device", "choose one of: cpu, cuda, auto"),
    ("train", {"dtype": "float16"}, "train.dtype", "choose one of: float32, float64"),
    ("train", {"progress": "yes"}, "train.progress", "true or false"),
    # EvalConfig
    ("eval", {"n_prompts": 0}, "eval.n_prompts", "integer >= 1"),
    ("eval", {"seed": -1}, "eval.seed", "integer >= 0"),
    ("eval", {"alphas": ()}, "eval.alphas", "non-empty list of positive numbers"),
    ("eval", {"alphas": (1.0, 0.0)}, "eval.alphas", "finite number > 0"),
    ("eval", {"alphas": (-1.0,)}, "eval.alphas", "finite number > 0"),
    ("eval", {"alphas": (math.inf,)}, "eval.alphas", "finite number > 0"),
    ("eval", {"alphas": 2.0}, "eval.alphas", "list"),
    # ExperimentConfig
    (None, {"name": ""}, "name", "non-empty name"),
    (None, {"name": "a/b"}, "name", "without '/'"),
    (None, {"name": ".."}, "name", "non-empty name"),
    (None, {"name": 5}, "name", "non-empty name"),
]


def _case_id(case) -> str:
    return f"{case[2]}={next(iter(case[1].values()))!r}" if len(case[1]) == 1 else f"{case[2]}:{case[1]!r}"


@pytest.mark.parametrize("case", BAD, ids=[_case_id(c) for c in BAD])
def test_invalid_value_one_line_error(case):
    section, overrides, field, allowed = case
    with pytest.raises(ConfigError) as info:
        if section is None:
            ExperimentConfig(**overrides)
        else:
            SECTIONS[section](**overrides)
    _assert_one_line(info.value, field, allowed)


@pytest.mark.parametrize("case", BAD, ids=[_case_id(c) for c in BAD])
def test_invalid_value_from_json_one_line_error(case):
    """The same values arriving through JSON (lists, not tuples) name the same field."""
    section, overrides, field, _allowed = case
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
    data = plain if section is None else {section: plain}
    with pytest.raises(ConfigError) as info:
        config_from_dict(json.loads(json.dumps(data)))  # Python's json writes and reads NaN/Infinity
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{field}: "), msg


def test_training_stream_never_equals_the_held_out_stream():
    with pytest.raises(ConfigError, match=r"^train\.seed: .*eval\.seed − 1 = 12344"):
        ExperimentConfig(train=TrainConfig(seed=12344))
    with pytest.raises(ConfigError, match=r"^train\.seed: "):
        ExperimentConfig(train=TrainConfig(seed=6), eval=EvalConfig(seed=7))
    ExperimentConfig(train=TrainConfig(seed=7), eval=EvalConfig(seed=7))  # model init and held-out set: no overlap


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_replace_validates():
    cfg = ExperimentConfig()
    assert cfg.replace(train={"steps": 7}).train.steps == 7
    with pytest.raises(ConfigError, match=r"^train\.steps: "):
        cfg.replace(train={"steps": -1})


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ExperimentConfig().task.d = 3  # type: ignore[misc]


# ------------------------------------------------------------------------------------------ JSON round trip


def _tuple_config() -> ExperimentConfig:
    return ExperimentConfig(
        task=task_config(
            "linear",
            d=3,
            n_points=7,
            x_dist="gaussian",
            x_scale=1.0,
            x_cov_diag=(1.0, 2.0, 0.5),
            w_cov_diag=(0.5, 1.0, 3.0),
        ),
        model=model_config("lsa", layers=2, tied=True, heads=2, layernorm=True),
        train=TrainConfig(steps=10, schedule="warmup_cosine", warmup_steps=2, dtype="float64", progress=False),
        eval=EvalConfig(n_prompts=50, alphas=(0.5, 2.0)),
        name="tuples",
    )


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_round_trip_presets(name):
    cfg = preset(name)
    data = config_to_dict(cfg)
    assert json.loads(json.dumps(data)) == data  # plain JSON
    assert config_from_dict(data) == cfg
    assert config_from_dict(json.loads(json.dumps(data))) == cfg


def test_round_trip_with_tuples():
    cfg = _tuple_config()
    data = json.loads(json.dumps(config_to_dict(cfg)))
    assert data["task"]["x_cov_diag"] == [1.0, 2.0, 0.5]
    back = config_from_dict(data)
    assert back == cfg
    assert isinstance(back.task.x_cov_diag, tuple) and isinstance(back.eval.alphas, tuple)


def test_round_trip_default():
    assert config_from_dict(config_to_dict(ExperimentConfig())) == ExperimentConfig()


def test_missing_fields_take_defaults_and_ints_become_floats():
    cfg = config_from_dict({"task": {"d": 3, "x_scale": 1}, "train": {"lr": 1}})
    assert cfg == ExperimentConfig(task=task_config("linear", d=3, x_scale=1.0), train=TrainConfig(lr=1.0))
    assert type(cfg.task.x_scale) is float and type(cfg.train.lr) is float
    assert config_from_dict({}) == ExperimentConfig()


def test_load_config_file(tmp_path):
    cfg = _tuple_config()
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config_to_dict(cfg), indent=2))
    assert load_config(path) == cfg
    assert load_config(str(path)) == cfg


def test_load_config_run_style(tmp_path):
    cfg = preset("gaussian")
    path = tmp_path / "config.json"
    record = {"config": config_to_dict(cfg), "seed": 0, "iclab_version": "0.1.0", "git_sha": None}
    path.write_text(json.dumps(record))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    ("data", "field", "allowed"),
    [
        ({"foo": 1}, "foo", "unknown field; allowed: task, model, train, eval, name"),
        ({"task": {"foo": 1}}, "task.foo", "unknown field of task 'linear'; allowed: name, d, n_points"),
        ({"model": {"depth": 2}}, "model.depth", "unknown field of model 'lsa'; allowed: name, layers, heads"),
        ({"task": {"sparsity": 5}}, "task.sparsity", "unknown field of task 'linear'; allowed: name, d"),
        ({"task": {"name": "relu_net", "depth": 2}}, "task.depth", "unknown field of task 'relu_net'"),
        ({"model": {"name": "gpt", "tied": True}}, "model.tied", "unknown field of model 'gpt'"),
        ({"task": {"name": 3}}, "task.name", "one of: linear, sparse_linear"),
        ({"train": {"epochs": 2}}, "train.epochs", "unknown field; allowed: steps, batch_size"),
        ({"eval": {"alpha": [1]}}, "eval.alpha", "unknown field; allowed: n_prompts, seed, alphas"),
    ],
)
def test_unknown_field(data, field, allowed):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    _assert_one_line(info.value, field, allowed)


@pytest.mark.parametrize(
    ("data", "field", "allowed"),
    [
        ({"task": {"d": {"value": 3}}}, "task.d", "a single value, not an object"),
        ({"train": {"lr": {"x": 1}}}, "train.lr", "a single value, not an object"),
        ({"task": {"x_dist": {"kind": "gaussian"}}}, "task.x_dist", "a single value, not an object"),
        ({"eval": {"alphas": {"a": 1}}}, "eval.alphas", "a list of numbers"),
        ({"eval": {"alphas": 1.0}}, "eval.alphas", "a list of numbers"),
        ({"task": {"d": [3]}}, "task.d", "integer >= 1"),
        ({"task": {"d": None}}, "task.d", "integer >= 1"),
        ({"task": 5}, "task", "an object"),
        ({"model": [1, 2]}, "model", "an object"),
    ],
)
def test_wrong_type_nested(data, field, allowed):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    _assert_one_line(info.value, field, allowed)


def test_top_level_not_an_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    _assert_one_line(info.value, "config", "an object")


def test_load_config_invalid_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"task": {"d": 3,}}')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    _assert_one_line(info.value, "config", "not valid JSON")
    assert "bad.json" in str(info.value)


def test_load_config_not_utf8(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    _assert_one_line(info.value, "config", "binary.json")


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.json")
    _assert_one_line(info.value, "config", "does not exist")
    assert "missing.json" in str(info.value)


def test_load_config_directory(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    _assert_one_line(info.value, "config", "cannot read")


def test_load_config_invalid_value(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"train": {"beta2": 1.0}}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    _assert_one_line(info.value, "train.beta2", "[0, 1)")


# ---------------------------------------------------------------------------------------------------- families


def test_every_family_has_its_name_and_round_trips():
    for registry, build in ((TASKS, task_config), (MODELS, model_config)):
        for name in registry.names():
            cfg = build(name)
            assert cfg.name == name and type(cfg) is registry.config_class(name)
    cfg = ExperimentConfig(task=task_config("relu_net", hidden=7), model=model_config("gpt", width=32, heads=4))
    data = config_to_dict(cfg)
    assert data["task"] == {"name": "relu_net", **{k: v for k, v in data["task"].items() if k != "name"}}
    assert "sparsity" not in data["task"] and "tied" not in data["model"]
    assert config_from_dict(data) == cfg


def test_a_family_config_rejects_another_familys_field():
    with pytest.raises(ConfigError, match=r"^task\.sparsity: not a field of task 'linear'; allowed: d, "):
        task_config("linear", sparsity=3)
    with pytest.raises(TypeError):  # the classes themselves take only their own fields
        TASKS.config_class("linear")(sparsity=3)


def test_change_family_keeps_shared_fields():
    lsa = model_config("lsa", layers=3, heads=2, layernorm=True, tied=True)
    softmax = change_family(lsa, "softmax")
    assert (softmax.name, softmax.layers, softmax.heads, softmax.layernorm) == ("softmax", 3, 2, True)
    assert change_family(lsa, "lsa") is lsa
    relu = change_family(task_config("linear", d=4, noise_var=0.5, w_prior="sign"), "relu_net")
    assert (relu.d, relu.noise_var, relu.hidden) == (4, 0.5, 100)
    cfg = ExperimentConfig().replace(model={"name": "gpt", "width": 64}, task={"name": "quadratic", "d": 3})
    assert (cfg.model.name, cfg.model.width, cfg.task.name, cfg.task.d) == ("gpt", 64, "quadratic", 3)


def test_change_family_takes_the_new_defaults_for_fields_left_at_the_old_ones():
    # the linear task's defaults (d = 10, 10 points) are not a choice: Reddy's classification task keeps its own
    icl = change_family(task_config("linear"), "icl_classification")
    defaults = task_config("icl_classification")
    assert (icl.d, icl.n_points) == (defaults.d, defaults.n_points) == (63, 8)
    chosen = change_family(task_config("linear", d=16, n_points=4), "icl_classification")
    assert (chosen.d, chosen.n_points) == (16, 4)


def test_runs_written_before_families_owned_their_configs_still_load():
    """A config.json of the one flat TaskConfig / ModelConfig (every family's field stored) loads as the family's
    config when the other families' fields hold their old defaults; a changed one is refused, not dropped."""
    legacy = {
        "task": {
            "name": "sparse_linear", "d": 6, "n_points": 10, "n_queries": 1, "x_dist": "uniform", "x_scale": 0.5,
            "x_cov_diag": None, "x_condition": 1.0, "w_scale": 1.0, "w_cov_diag": None, "w_prior": "gaussian",
            "w_rank": 1, "noise_var": 0.0, "sparsity": 2, "hidden": 100, "depth": 4, "frequencies": 3,
            "amplitude": [0.1, 5.0], "phase": [0.0, math.pi], "spectral_radius": 0.9, "n_classes": 3,
            "flip_prob": 0.0, "pool_size": 0, "pool_seed": 0, "components": [], "mix_by": "prompt",
        },
        "model": {
            "name": "gpt", "layers": 2, "tied": False, "heads": 2, "layernorm": False, "init_scale": 0.002,
            "width": 32, "mlp": False, "mlp_ratio": 4, "positions": False, "max_points": 256,
            "feature_hidden": 64, "feature_dim": 16, "lla_ridge": 0.01, "state_dim": 16, "variance_head": False,
        },
    }  # fmt: skip
    cfg = config_from_dict(legacy)
    assert cfg.task == task_config("sparse_linear", d=6, sparsity=2)
    assert cfg.model == model_config("gpt", layers=2, heads=2, width=32)
    legacy["model"]["tied"] = True
    with pytest.raises(ConfigError, match=r"^model\.tied: unknown field of model 'gpt'"):
        config_from_dict(legacy)


# ---------------------------------------------------------------------------------------------------- presets


def test_unknown_preset_lists_names():
    with pytest.raises(ConfigError) as info:
        preset("nope")
    _assert_one_line(info.value, "preset", "choose one of: ")
    assert "'nope'" in str(info.value)
    for name in PRESETS:
        assert name in str(info.value)


def test_presets_valid():
    assert "von-oswald" in PRESETS and "gaussian" in PRESETS
    for name, cfg in PRESETS.items():
        assert preset(name) is cfg
        assert isinstance(cfg, ExperimentConfig)


def test_vector_target_tasks_are_refused_by_lsa_in_one_line():
    vector = {t for t in TASKS.names() if TASKS.config_class(t)().target_dim is not None}
    assert vector == {"softmax_regression", "linear_dynamics"}
    assert {m for m in MODELS.names() if MODELS.config_class(m).vector_targets} == {"gpt"}
    with pytest.raises(ConfigError, match=r"^task.name: 'softmax_regression' has vector targets") as info:
        ExperimentConfig(task=task_config(name="softmax_regression"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_trains_a_few_steps(name):
    from iclab.training import train

    cfg = preset(name)
    quick = cfg.replace(
        train={"steps": 2, "batch_size": 8, "eval_every": 1, "checkpoint_every": 2, "progress": False,
               "device": "cpu"},
        eval={"n_prompts": 16},
    )  # fmt: skip
    result = train(quick)
    assert result.steps == 2 and math.isfinite(result.final_eval_half_mse)
