"""Hyperparameter files that extend another (the demo's yaml states only what differs from the recipe's)."""

from __future__ import annotations

import re

import pytest

from fvae_asr.recipes.timit.train import run
from fvae_asr.speech.training.hparams import aliased, hparams_source, load_hparams
from fvae_asr.speech.training.run_folder import RunSettingsError, resolved_settings
from fvae_asr.speech.training.runner import run_command

from conftest import HPARAMS

DEMO = HPARAMS.with_name("demo.yaml")

BASE = """\
seed: 1
adapter: lora
output_folder: !ref results/<adapter>/<seed>
loader:
    batch_size: 8
    num_workers: 2
"""


def _files(tmp_path, child: str) -> tuple:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text(child)
    return tmp_path / "base.yaml", tmp_path / "sub" / "child.yaml"


def test_an_extending_file_overrides_its_base_and_the_command_line_overrides_both(tmp_path):
    _, child = _files(
        tmp_path,
        "extends: ../base.yaml\nseed: 5\noutput_folder: !ref demo/<adapter>/<seed>\nloader:\n    num_workers: 0\n",
    )
    hparams = load_hparams(child)
    assert hparams["output_folder"] == "demo/lora/5"  # its !ref resolves against the base's keys
    assert hparams["loader"] == {"batch_size": 8, "num_workers": 0}  # nested keys merge, not replace
    assert load_hparams(child, "seed: 7\nloader:\n    batch_size: 2\n")["output_folder"] == "demo/lora/7"
    assert load_hparams(child, {"loader": {"batch_size": 2}})["loader"] == {"batch_size": 2, "num_workers": 0}


def test_a_plain_file_is_its_own_source(tmp_path):
    base, _ = _files(tmp_path, "")
    assert hparams_source(base, "seed: 3") == (base, {"seed": 3})


@pytest.mark.parametrize(
    ("child", "message"),
    [
        ("extends: ../missing.yaml\nseed: 5\n", r"child.yaml: extends: .*missing.yaml does not exist"),
        ("extends: ../base.yaml\nsed: 5\n", r"base.yaml has no sed"),
    ],
)
def test_a_bad_extending_file_is_named(tmp_path, child, message):
    _, path = _files(tmp_path, child)
    with pytest.raises(ValueError, match=message):
        hparams_source(path)


def test_the_recipe_refuses_a_bad_extending_file_before_writing_anything(tmp_path):
    _, child = _files(tmp_path, "extends: ../base.yaml\nsed: 5\n")
    with pytest.raises(RunSettingsError, match="has no sed"):
        run(child, {}, {"output_folder": str(tmp_path / "out")})
    assert not (tmp_path / "out").exists()


def test_the_demo_yaml_differs_from_the_recipe_only_where_it_says(tmp_path):
    def settings(hparams_file):  # resolved, flat, nothing built
        return resolved_settings(*hparams_source(hparams_file, {"data_folder": str(tmp_path)}), {})

    recipe, demo = settings(HPARAMS), settings(DEMO)
    objects = {key.split(".")[0] for key in recipe if key.count(".") == 1 and key.endswith(".<tag>")}  # built
    differ = {key.split(".")[0] for key in set(recipe) | set(demo) if recipe.get(key) != demo.get(key)} - objects
    assert differ == {
        "seed",
        "output_folder",
        "save_folder",
        "export_folder",
        "train_log",
        "tensorboard_folder",
        "test_results_file",
        "test_alignments_file",
        "encoder_source",
        "init_head_from_checkpoint",
        "mask_time_prob",
        "head_dropout",
        "target_modules",
        "adapter_configs",
        "number_of_epochs",
        "lr",
        "train_sorting",
        "ckpt_interval_minutes",
        "train_dataloader_opts",
        "valid_dataloader_opts",
    }
    assert demo["train_dataloader_opts.batch_size"] == recipe["batch_size"]
    assert (demo["train_dataloader_opts.shuffle"], demo["train_dataloader_opts.num_workers"]) == (True, 0)
    assert demo["adapter_configs.fvae_lora.target_modules"] == demo["target_modules"]


OBJECT_BASE = """\
folder: results
thing: !new:collections.OrderedDict
    a: 1
"""


@pytest.mark.parametrize("where", ["extending file", "command line"])
def test_changing_an_objects_class_with_keyword_arguments_is_refused_naming_the_list_form(tmp_path, where):
    """A mapping override merges into the base's object (its class stays), so another class is refused."""
    (tmp_path / "base.yaml").write_text(OBJECT_BASE)
    swap = "thing: !new:collections.Counter\n    b: 2\n"
    if where == "extending file":
        (tmp_path / "child.yaml").write_text(f"extends: base.yaml\n{swap}")
        args = (tmp_path / "child.yaml",)
    else:
        args = (tmp_path / "base.yaml", swap)
    with pytest.raises(
        ValueError,
        match=r"base.yaml: thing is !new:collections.OrderedDict there.* cannot make it a "
        r"!new:collections.Counter.*thing: !new:collections.Counter \[\.\.\.\]",
    ) as err:
        hparams_source(*args)
    assert "\n" not in str(err.value)


def test_an_extending_file_replaces_an_object_given_with_its_arguments_as_a_list(tmp_path):
    (tmp_path / "base.yaml").write_text(OBJECT_BASE)
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nthing: !new:collections.Counter [!ref <folder>]\n")
    assert dict(load_hparams(tmp_path / "child.yaml")["thing"]) == {c: "results".count(c) for c in "results"}
    (tmp_path / "same.yaml").write_text("extends: base.yaml\nthing: !new:collections.OrderedDict\n    b: 2\n")
    assert load_hparams(tmp_path / "same.yaml")["thing"] == {"a": 1, "b": 2}  # same class: arguments merge


@pytest.mark.parametrize(
    ("run_opts", "message"),
    [
        ({"max_grad_norm": 0.0}, "max_grad_norm must be a number > 0"),
        ({"remove_vector_weight_decay": True}, "remove_vector_weight_decay"),
    ],
)
def test_settings_that_break_the_optimizer_rule_are_refused_before_anything_is_built(tmp_path, run_opts, message):
    with pytest.raises(RunSettingsError, match=message):
        resolved_settings(*hparams_source(HPARAMS, {"data_folder": str(tmp_path)}), run_opts)


def test_a_run_records_the_optimizer_rule_it_trains_under(tmp_path):
    from fvae_asr.adapters.optimizer import OPTIMIZER_RULE

    settings = resolved_settings(*hparams_source(HPARAMS, {"data_folder": str(tmp_path)}), {})
    assert settings["optimizer_rule"] == OPTIMIZER_RULE  # a 0.2 run folder (no such setting) does not resume


def test_the_old_name_adapter_still_sets_the_method_on_the_command_line_or_in_an_older_yaml(tmp_path):
    data = {"data_folder": str(tmp_path)}
    settings = resolved_settings(*hparams_source(HPARAMS, {**data, "adapter": "lora"}), {})
    assert settings["method"] == "lora" and "adapter" not in settings
    assert settings["output_folder"] == "results/timit/lora/1986"

    older = tmp_path / "older.yaml"  # a copy of the recipe's yaml made before the rename
    older.write_text(HPARAMS.read_text().replace("\nmethod:", "\nadapter:").replace("<method>", "<adapter>"))
    for name in ("method", "adapter"):
        settings = resolved_settings(*hparams_source(older, {**data, name: "full"}), {})
        assert settings["method"] == "full" and "adapter" not in settings  # recorded under the new name
        assert settings["output_folder"] == "results/timit/full/1986"
    base, _ = _files(tmp_path, "")  # BASE names the method by its old name
    hparams = load_hparams(base, {"method": "full"})
    assert aliased(hparams, "method") == "full" and hparams["output_folder"] == "results/full/1"


def test_the_method_given_under_both_names_with_different_values_is_refused(tmp_path):
    data = {"data_folder": str(tmp_path)}
    assert hparams_source(HPARAMS, {**data, "adapter": "lora", "method": "lora"})[1]["method"] == "lora"
    message = r"train\.yaml: adapter is the old name of method, .*adapter: 'lora', method: 'full'"
    with pytest.raises(ValueError, match=message):
        hparams_source(HPARAMS, {**data, "adapter": "lora", "method": "full"})


@pytest.mark.parametrize(
    ("files", "given", "message"),
    [
        ({}, "absent.yaml", r"absent\.yaml: no such yaml file"),
        ({"folder/x": ""}, "folder", r"folder: a folder, not a yaml file"),
        ({"bad.yaml": "seed: [1\n"}, "bad.yaml", r"bad\.yaml: not valid YAML at line 2"),
        (
            {"bad.yaml": "a: 1\n  b: 2\n", "child.yaml": "extends: bad.yaml\n"},
            "child.yaml",
            r"bad\.yaml: not valid YAML",
        ),
        ({"scalar.yaml": "extends\n"}, "scalar.yaml", r"scalar\.yaml: expected a mapping of settings"),
        ({"self.yaml": "extends: self.yaml\n"}, "self.yaml", r"self\.yaml: extends: the chain of files comes back"),
        ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "a.yaml", r"b\.yaml: extends: .*a\.yaml"),
    ],
    ids=["missing", "folder", "invalid", "invalid-base", "scalar", "self-cycle", "cycle"],
)
def test_a_bad_hparams_file_is_a_one_line_usage_error(tmp_path, capsys, files, given, message):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as stopped:
        run_command([str(tmp_path / given)], lambda *args: pytest.fail("the run started"), tmp_path / "default.yaml")
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(err) == 1 and re.search(message, err[0]), err
