"""Weights registry, model cards, checksums and loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from deepemhancer_engine.config import ModelName
from deepemhancer_engine.errors import WeightsError
from deepemhancer_engine.model import UNet3D, count_parameters
from deepemhancer_engine.testing import PLACEHOLDER_NOTE, make_random_weights, make_tiny_weights
from deepemhancer_engine.weights import (
    REGISTRY,
    ModelCard,
    describe,
    load_model,
    resolve_weights,
    save_weights,
    sha256_file,
    weights_dir,
)


def test_registry_covers_every_model():
    assert set(REGISTRY) == set(ModelName)


def test_round_trip_identical_outputs(tiny_weights):
    torch.manual_seed(0)
    original = UNet3D(filters=(2, 4, 8)).eval()
    pt = save_weights(original, {"name": "rt", "tile": 32, "voxel_size": 1.0, "normalization": "noise"},
                      tiny_weights.parent / "rt.pt")
    loaded, card = load_model(ModelName.TIGHT, pt)
    assert not loaded.training and next(loaded.parameters()).device.type == "cpu"
    assert card.arch == "unet3d" and card.kwargs["filters"] == [2, 4, 8]
    assert card.sha256 == sha256_file(pt) and card.parameters == count_parameters(original)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), original(x), rtol=0, atol=0)
    assert not list(pt.parent.glob("*.tmp"))  # atomic writes leave no temp files


def test_tiny_weights_fixture(tiny_weights):
    assert tiny_weights.name == "tiny.pt" and tiny_weights.with_suffix(".json").is_file()
    net, card = load_model("tightTarget", tiny_weights)
    assert card.tile == 32 and card.normalization == "noise" and card.is_placeholder


def test_hash_mismatch(tiny_weights):
    data = bytearray(tiny_weights.read_bytes())
    data[-20] ^= 0xFF
    tiny_weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"checksum mismatch for .*tiny\.pt"):
        load_model(ModelName.TIGHT, tiny_weights)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match=r"weights file .*nothere\.pt not found"):
        load_model(ModelName.TIGHT, tmp_path / "nothere.pt")


def test_missing_card(tiny_weights):
    tiny_weights.with_suffix(".json").unlink()
    with pytest.raises(WeightsError, match=r"model card .*tiny\.json not found"):
        resolve_weights(ModelName.TIGHT, tiny_weights)


def test_bad_json(tiny_weights):
    tiny_weights.with_suffix(".json").write_text("{not json")
    with pytest.raises(WeightsError, match=r"tiny\.json is not valid JSON"):
        load_model(ModelName.TIGHT, tiny_weights)


def test_card_missing_field(tiny_weights):
    card = tiny_weights.with_suffix(".json")
    data = json.loads(card.read_text())
    del data["arch"]
    card.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="missing field.*arch"):
        load_model(ModelName.TIGHT, tiny_weights)


def test_wrong_architecture_state_dict(tiny_weights):
    # card claims filters 4/8/16 but the file holds a 2/4/8 network (checksum itself is fine)
    card = tiny_weights.with_suffix(".json")
    data = json.loads(card.read_text())
    data["kwargs"]["filters"] = [4, 8, 16]
    card.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match=r"tiny\.pt do not fit architecture unet3d.*size mismatch") as err:
        load_model(ModelName.TIGHT, tiny_weights)
    assert "\n" not in str(err.value)


def test_not_a_state_dict(tmp_path):
    pt = tmp_path / "bad.pt"
    torch.save([1, 2, 3], pt)
    make = json.loads(make_tiny_weights(tmp_path).with_suffix(".json").read_text())
    make["sha256"] = sha256_file(pt)
    pt.with_suffix(".json").write_text(json.dumps(make))
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        load_model(ModelName.TIGHT, pt)


def test_env_var_override(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPEMHANCER_WEIGHTS_DIR", str(tmp_path))
    assert weights_dir() == tmp_path
    make_tiny_weights(tmp_path, name=REGISTRY[ModelName.WIDE])
    net, card = load_model(ModelName.WIDE)
    assert card.name == "wideTarget"
    with pytest.raises(WeightsError, match=r"no weights for model highRes in .*available there: wideTarget.*--weights"):
        load_model("highRes")
    monkeypatch.delenv("DEEPEMHANCER_WEIGHTS_DIR")
    assert weights_dir().name == "weights" and weights_dir().parent.name == "deepemhancer_engine"


def test_directory_as_path(tiny_weights):
    shutil.copy(tiny_weights, tiny_weights.parent / "highRes.pt")
    shutil.copy(tiny_weights.with_suffix(".json"), tiny_weights.parent / "highRes.json")
    _, card = load_model(ModelName.HIGHRES, tiny_weights.parent)
    assert card.name == "tiny"


def test_random_placeholder_and_describe(tmp_path, caplog):
    pt = make_random_weights(tmp_path, "maskNormalized", (2, 4, 8))
    assert pt.name == "maskNormalized.pt"
    card = ModelCard.from_json(pt.with_suffix(".json"))
    assert card.notes == PLACEHOLDER_NOTE and card.normalization == "mask" and card.tile == 64
    with caplog.at_level("WARNING"):
        load_model(ModelName.MASKED, tmp_path)
    assert "RANDOM WEIGHTS" in caplog.text
    text = describe(card)
    for part in ("maskNormalized", "unet3d", "2/4/8", f"{card.parameters:,}", "64 voxels", "1 A/voxel",
                 "mask", card.sha256[:16], "RANDOM WEIGHTS"):
        assert part in text
    with pytest.raises(ValueError, match="RANDOM WEIGHTS"):
        make_random_weights(tmp_path, "tightTarget", (2, 4, 8), note="trained")
    import dataclasses

    trained = dataclasses.replace(card, training={"steps": 3, "validation_l1": 0.0537293, "dataset": {"pairs": 2}})
    lines = describe(trained).splitlines()
    training = lines.index(next(line for line in lines if line.startswith("training:")))
    assert lines[training].endswith("steps: 3, validation_l1: 0.05373")  # floats to 4 significant digits
    assert lines[training + 1] == "  dataset: pairs: 2"  # nested entries on their own line


def test_former_default_stays_loadable_beside_the_new_one():
    """Results made with earlier weights stay reproducible: each archived version loads (SHA-256 checked) from
    its folder, and the current card names it in its history."""
    from deepemhancer_engine.weights import load_model

    shipped = Path(__file__).resolve().parents[1] / "weights"
    _, current = load_model("tightTarget", shipped / "tightTarget.pt")
    _, former = load_model("tightTarget", shipped / "0.1.0-sim1" / "tightTarget.pt")
    assert former.version == "0.1.0-sim1" and current.version != former.version
    assert [h["sha256"] for h in current.training["history"]] == [former.sha256]
    assert (shipped / "0.1.0-sim1" / "tightTarget.null.npz").exists()
