"""The model registry refuses, loudly and precisely, any model it cannot trust."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.config import parse_config
from agent.errors import ConfigError, ModelError
from agent.triage.engine import TriageEngine
from agent.triage.models import default_models_dir, load_model, load_models
from tests.support.triage_helpers import SHIPPED, copy_model


def edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / "manifest.yaml"
    doc = yaml.safe_load(path.read_text())
    doc.update(changes)
    path.write_text(yaml.safe_dump(doc))


def problems(folder: Path) -> str:
    with pytest.raises(ModelError) as info:
        load_models(folder)
    return "\n".join(info.value.problems)


def test_fixture_model_loads(tmp_path: Path) -> None:
    folder = copy_model("mr_mean", tmp_path)
    model = load_model(folder)
    assert model.name == "mr_mean" and model.applies_to({"Modality": "MR"})
    assert not model.applies_to({"Modality": "CT"})


def test_malformed_manifest_names_the_key(tmp_path: Path) -> None:
    folder = copy_model("mr_mean", tmp_path)
    edit_manifest(folder, thresholds={"brightness": {"stat": 0.2, "urgent": 0.9}}, colour="red")
    text = problems(tmp_path / "models")
    assert set(text.splitlines()) == {
        "mr_mean: manifest.yaml thresholds.brightness: stat must be at or above urgent",
        "mr_mean: manifest.yaml colour: unknown key",
    }


def test_not_yaml(tmp_path: Path) -> None:
    folder = copy_model("mr_mean", tmp_path)
    (folder / "manifest.yaml").write_text("name: [unclosed\n")
    assert "not valid YAML" in problems(tmp_path / "models")


def test_sha256_mismatch(tmp_path: Path) -> None:
    folder = copy_model("mr_mean", tmp_path)
    with (folder / "model.onnx").open("ab") as f:
        f.write(b"\0")
    assert "model.onnx: sha256 mismatch: manifest says adbf8ee8" in problems(tmp_path / "models")


def test_missing_model_file(tmp_path: Path) -> None:
    folder = copy_model("mr_mean", tmp_path)
    (folder / "model.onnx").unlink()
    (folder / "MODEL_CARD.md").unlink()
    text = problems(tmp_path / "models")
    assert "mr_mean: model.onnx: missing" in text and "MODEL_CARD.md: missing" in text


def test_input_spec_not_matching_graph(tmp_path: Path) -> None:
    folder = copy_model("mr_mean", tmp_path)
    edit_manifest(folder, input={"name": "image", "shape": [1, 96, 96], "normalisation": "zscore"})
    assert "input.shape: manifest says [batch, 1, 96, 96], graph input 'image' is ['batch', 1, 64, 64]" in problems(tmp_path / "models")


def test_wrong_input_name_and_label_count(tmp_path: Path) -> None:
    folder = copy_model("mr_mean", tmp_path)
    edit_manifest(folder, input={"name": "pixels", "shape": [1, 64, 64], "normalisation": "zscore"},
                  outputs={"name": "scores", "labels": ["a", "b"]},
                  thresholds={"a": {"stat": 0.9, "urgent": 0.5}})
    text = problems(tmp_path / "models")
    assert "graph has no input 'pixels'" in text and "2 label(s), graph output is ['batch', 1]" in text


def test_engine_start_refuses_a_bad_model(tmp_path: Path) -> None:
    folder = copy_model("mr_mean", tmp_path)
    (folder / "model.onnx").write_bytes(b"not onnx")
    cfg = parse_config(f"triage: {{models_dir: {tmp_path / 'models'}}}").triage
    with pytest.raises(ModelError, match="sha256 mismatch"):
        TriageEngine.start(cfg, tmp_path / "cache")


def test_check_config_hook_reports_by_yaml_path(tmp_path: Path) -> None:
    from agent.triage.models import check_triage

    folder = copy_model("mr_mean", tmp_path)
    (folder / "model.onnx").unlink()
    cfg = parse_config(f"triage: {{models_dir: {tmp_path / 'models'}}}")
    with pytest.raises(ConfigError) as info:
        check_triage(cfg, "site.yaml")
    assert info.value.problems[0].startswith("triage.models_dir: ")
    assert "mr_mean: model.onnx: missing" in info.value.problems[0]
    assert check_triage(parse_config("triage: {enabled: false}"), "x") == ["triage: disabled"]


def test_config_keys() -> None:
    cfg = parse_config("triage: {threads: 2, device: cpu}")
    assert cfg.triage.threads == 2 and cfg.triage.models_dir is None and cfg.triage.enabled
    with pytest.raises(ConfigError, match=r"triage\.device"):
        parse_config("triage: {device: tpu}")


def test_shipped_models_are_found_and_verified() -> None:
    assert default_models_dir() == SHIPPED
    names = {m.name for m in load_models(SHIPPED)}
    assert {"ich", "bodypart"} <= names


def test_a_reload_sets_model_modes_all_or_nothing() -> None:
    from agent.triage.engine import TriageEngine

    engine = TriageEngine.start(parse_config("").triage, None)
    assert {r.model.name: r.mode for r in engine.runners}.get("ich") == "active"
    shadow = parse_config("triage: {models: [{name: ich, mode: shadow}]}").triage
    assert engine.set_modes(shadow) == []
    assert {r.model.name: r.mode for r in engine.runners}["ich"] == "shadow"
    typo = parse_config("triage: {models: [{name: ich}, {name: nope, mode: shadow}]}").triage
    problems = engine.set_modes(typo)
    assert problems and "no model 'nope'" in problems[0], problems
    assert {r.model.name: r.mode for r in engine.runners}["ich"] == "shadow", "nothing applied"
