"""The weights-resolution order every pretrained network shares (t2i.weights) and the CLIP loader (t2i.clip)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from t2i.errors import UsageError
from t2i.weights import WeightsNotFound, file_sha256, hub_checkpoints_dir, resolve_weights

NAMES = ["net-1234.pth", "net.pth"]


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty torch hub / t2i weights folders, no environment overrides."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("T2I_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("T2I_NET_WEIGHTS", raising=False)
    monkeypatch.delenv("T2I_OFFLINE", raising=False)
    return tmp_path


def _file(path, content=b"weights"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_order_explicit_then_env_then_caches(homes, monkeypatch):
    explicit = _file(homes / "explicit.pth")
    env = _file(homes / "env.pth")
    cached = _file(hub_checkpoints_dir() / "net.pth")
    assert hub_checkpoints_dir() == homes / "torch" / "hub" / "checkpoints"
    monkeypatch.setenv("T2I_NET_WEIGHTS", str(env))
    assert resolve_weights("Net", filenames=NAMES, explicit=explicit, env="T2I_NET_WEIGHTS") == explicit
    assert resolve_weights("Net", filenames=NAMES, env="T2I_NET_WEIGHTS") == env
    monkeypatch.delenv("T2I_NET_WEIGHTS")
    assert resolve_weights("Net", filenames=NAMES, env="T2I_NET_WEIGHTS") == cached
    # $T2I_WEIGHTS_DIR comes before torch hub, and the canonical name before the alias
    monkeypatch.setenv("T2I_WEIGHTS_DIR", str(homes / "mine"))
    mine = _file(homes / "mine" / "net-1234.pth")
    assert resolve_weights("Net", filenames=NAMES) == mine
    extra = _file(homes / "hf" / "net.pth")
    mine.unlink()
    cached.unlink()
    assert resolve_weights("Net", filenames=NAMES, search_dirs=[homes / "hf"]) == extra


def test_a_given_path_that_is_missing_is_an_error_not_a_fallback(homes, monkeypatch):
    _file(hub_checkpoints_dir() / "net.pth")
    with pytest.raises(WeightsNotFound, match="weights=.*nope.pth is not a file"):
        resolve_weights("Net", filenames=NAMES, explicit=homes / "nope.pth")
    monkeypatch.setenv("T2I_NET_WEIGHTS", str(homes / "gone.pth"))
    with pytest.raises(WeightsNotFound, match="T2I_NET_WEIGHTS=.*gone.pth is not a file"):
        resolve_weights("Net", filenames=NAMES, env="T2I_NET_WEIGHTS")


def test_offline_error_is_one_line_naming_the_file_and_where_to_put_it(homes, monkeypatch):
    monkeypatch.setenv("T2I_OFFLINE", "1")
    with pytest.raises(WeightsNotFound) as info:
        resolve_weights("Net", filenames=NAMES, env="T2I_NET_WEIGHTS", url="https://example.invalid/net-1234.pth")
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, UsageError)
    for part in ("net-1234.pth", str(hub_checkpoints_dir()), "T2I_NET_WEIGHTS", "weights=PATH", "T2I_OFFLINE"):
        assert part in message


def test_failed_download_is_a_usage_error(homes):
    with pytest.raises(WeightsNotFound, match="download from http://127.0.0.1:9/net-1234.pth failed"):
        resolve_weights("Net", filenames=NAMES, url="http://127.0.0.1:9/net-1234.pth")
    assert not (hub_checkpoints_dir() / "net-1234.pth").exists()  # no half-written file left behind


def test_file_sha256(tmp_path):
    path = _file(tmp_path / "w.bin", b"abc" * 1000)
    assert file_sha256(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    path.write_bytes(b"changed")  # a new size: the memo does not return the stale hash
    assert file_sha256(path) == hashlib.sha256(b"changed").hexdigest()


# -- CLIP ---------------------------------------------------------------------------------------------------
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random open-clip config and a weights file for it, as a user's own files would be."""
    import open_clip

    from t2i.clip import _model_name

    folder = tmp_path_factory.mktemp("clip")
    config = folder / "t2i-test-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    model = open_clip.create_model(_model_name(str(config)))
    torch.save(model.state_dict(), folder / "weights.pt")
    return config, folder / "weights.pt", model


def test_clip_loads_the_given_weights_and_is_frozen(tiny_clip, monkeypatch):
    from t2i.clip import load_clip

    config, weights, reference = tiny_clip
    monkeypatch.delenv("T2I_CLIP_WEIGHTS", raising=False)
    bundle = load_clip(str(config), weights=weights)
    for (name, a), b in zip(bundle.model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in bundle.model.parameters())
    text = bundle.encode_text(["a red circle", "a blue square"])
    image = bundle.encode_image(torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8))
    assert text.shape == image.shape == (2, 16)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert bundle.protocol()["clip_weights_sha256"] == file_sha256(weights)
    monkeypatch.setenv("T2I_CLIP_WEIGHTS", str(weights))  # the environment variable works the same way
    assert load_clip(str(config)).weights == str(weights)


def test_clip_errors_are_one_line(tiny_clip, tmp_path, monkeypatch):
    from t2i.clip import load_clip

    config, weights, _ = tiny_clip
    monkeypatch.delenv("T2I_CLIP_WEIGHTS", raising=False)
    monkeypatch.setenv("T2I_OFFLINE", "1")
    with pytest.raises(UsageError, match="unknown CLIP model 'ViT-B-3'.*ViT-B-32"):
        load_clip("ViT-B-3")
    with pytest.raises(WeightsNotFound, match="not available offline.*weights=PATH"):
        load_clip("ViT-B-32", pretrained="openai")
    with pytest.raises(WeightsNotFound, match="missing.pt is not a file"):
        load_clip(str(config), weights=tmp_path / "missing.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"something": torch.zeros(3)}, wrong)
    with pytest.raises(UsageError, match="do not fit model"):
        load_clip(str(config), weights=wrong)
