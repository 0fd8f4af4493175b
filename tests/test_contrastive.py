"""The ``contrastive`` term (CLIP InfoNCE between generated images and their captions): its value, that
training G with it raises CLIP text-image similarity, the engine passing caption strings, and missing
weights. CLIP is a tiny random open-clip config with a weights file this file writes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from t2i.errors import UsageError
from t2i.interfaces import DiscOutput, StepOutputs
from t2i.losses import HingeLoss
from t2i.terms.contrastive import ContrastiveConfig, ContrastiveTerm, info_nce
from t2i.testing import check_loss, check_training_step

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
CAPTIONS = ["a red circle", "a blue square", "a green triangle", "a small yellow star"]


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    import open_clip

    from t2i.clip import _model_name

    folder = tmp_path_factory.mktemp("clip")
    config = folder / "t2i-test-clip-contrastive.json"
    config.write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    model = open_clip.create_model(_model_name(str(config)))
    torch.save(model.state_dict(), folder / "weights.pt")
    return {"model": str(config), "weights": str(folder / "weights.pt")}


def test_info_nce_counts_every_image_of_a_caption_as_positive():
    text = nn.functional.normalize(torch.eye(3, 4), dim=1)
    captions = ["a", "b", "a"]
    aligned = text[[0, 1, 0]]  # images 0 and 2 show caption "a"
    assert info_nce(aligned, text[[0, 1, 0]], captions, 0.1).item() < 1e-3  # no false negatives
    wrong = text[[1, 0, 1]]
    assert info_nce(wrong, text[[0, 1, 0]], captions, 0.1) > 5
    one_way = info_nce(aligned, text[[0, 1, 0]], captions, 0.1, symmetric=False)
    assert one_way.item() < 1e-3


class CaptionG(nn.Module):
    """Caption index (one-hot) + noise -> a 16x16 image."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(len(CAPTIONS) + 4, 3 * 16 * 16), nn.Tanh())

    def forward(self, ids, z):
        return self.net(torch.cat([nn.functional.one_hot(ids, len(CAPTIONS)).float(), z], 1)).view(-1, 3, 16, 16)


def test_training_g_with_it_raises_clip_similarity_under_bf16(clip_files):
    term = ContrastiveTerm(ContrastiveConfig(**clip_files))
    assert not any(p.requires_grad for p in term.clip.parameters())
    torch.manual_seed(0)
    g = CaptionG()
    ids = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    captions = [CAPTIONS[i] for i in ids]
    z = torch.randn(len(ids), 4)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    with torch.no_grad():
        before = term.similarity(g(ids, z), captions).mean().item()
    for _ in range(10):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fake = g(ids, z)
        out = StepOutputs(None, DiscOutput(torch.zeros(8)), fake, fake, torch.zeros(8, 2), HingeLoss(), captions=captions)
        loss = term.g_loss(out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = term.similarity(g(ids, z), captions).mean().item()
    assert after > before + 0.05, (before, after)


def test_without_captions_it_says_what_it_needs(clip_files):
    term = ContrastiveTerm(ContrastiveConfig(**clip_files))
    out = StepOutputs(None, DiscOutput(torch.zeros(2)), torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 16, 16),
                      torch.zeros(2, 2), HingeLoss())
    with pytest.raises(UsageError, match="needs the batch's caption strings"):
        term.g_loss(out)


def test_missing_weights_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("T2I_OFFLINE", "1")
    monkeypatch.delenv("T2I_CLIP_WEIGHTS", raising=False)
    with pytest.raises(UsageError) as info:
        ContrastiveTerm(ContrastiveConfig())
    assert "\n" not in str(info.value) and "weights=PATH" in str(info.value) and "T2I_CLIP_WEIGHTS" in str(info.value)


def test_the_engine_passes_caption_strings(clip_files):
    result = check_training_step(loss="contrastive", loss_options=clip_files, train={"precision": "bf16"})
    assert result.status == "finished" and "g/contrastive" in result.last


def test_passes_the_conformance_kit(clip_files):
    check_loss("contrastive", clip_files)
