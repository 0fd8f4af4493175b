"""t2i-clipd: the discriminator and GALIP's terms through the conformance kit (D alone and paired with several
generators), then what the kit cannot know: the frozen CLIP stays frozen (not optimised, not saved, never in
train mode) while gradients reach the generator through it, the layers it taps, the head's parameter count at
GALIP's setting, GALIP's penalty and similarity terms, weights loading and its one-line errors. CLIP here is the tiny ViT config shipped with the package, with
random weights (``random:0``) or a weights file written by the test."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import t2i
from t2i.errors import UsageError
from t2i.interfaces import StepOutputs
from t2i.testing import TOY, check_discriminator, check_loss, check_pair, check_training_step
from t2i.testing.fixtures import one_intra_op_thread  # noqa: F401  (autouse: one thread here)
from t2i_clipd import (
    TINY_CLIP_CONFIG,
    ClipDConfig,
    ClipDiscriminator,
    ClipMAGPConfig,
    ClipMAGPTerm,
    ClipSimConfig,
    ClipSimTerm,
    DBlock,
    parameter_count,
)
from t2i_clipd.vit import load_vit

TEXT_DIM = 16
B = 4
TINY = {"model": TINY_CLIP_CONFIG, "weights": "random:0", "layers": (0, 1, 2), "head_width": 16, "joint_width": 8}
RECIPES = {32: Path(__file__).parents[1] / "recipes" / "shapes-32.toml",
           64: Path(__file__).parents[1] / "recipes" / "shapes-64.toml"}

# GALIP's NetD + NetC (tobran/GALIP, code/models/GALIP.py) on ViT-B/32 (width 768, 7x7 grid), sentence 512:
# trainable parameters as the release builds them, and as they take part (the release's D_Blocks build a
# 1x1 shortcut conv each; the two 768 -> 768 blocks never use theirs). How: README.md, "Parameter counts".
GALIP_D_BUILT, GALIP_D_USED = 30_806_021, 29_624_837


def make_d(resolution=32, **options):
    return ClipDiscriminator(ClipDConfig(**(TINY | options)), resolution=resolution, text_dim=TEXT_DIM)


def clip_state(d):
    return {k: v.clone() for k, v in d.vit.visual.state_dict().items()}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- the interface contract (t2i.testing) ------------------------------------------------------------------


def test_discriminator_conforms():
    check_discriminator("clipd", resolutions=(32,))  # every size is resized to CLIP's input: one is enough


def test_hybrid_head_conforms_and_adds_the_projection_term():
    """``head=hybrid`` (not in the paper): NetC's logit plus ``embed(sentence) . mean-pooled trunk features``."""
    from t2i_clipd.plugin import TINY_CLIP_CONFIG

    check_discriminator("clipd", resolutions=(32,), options={"model": TINY_CLIP_CONFIG, "weights": "random:0",
                                                             "layers": (0, 1, 2), "head_width": 16,
                                                             "joint_width": 8, "head": "hybrid"})
    d = make_d(head="hybrid")
    image, text = torch.rand(B, 3, 32, 32) * 2 - 1, torch.randn(B, TEXT_DIM)
    h, _ = d.image_features(image)
    projection = (d.embed(text) * h.mean(dim=(2, 3))).sum(dim=1)
    tiled = text[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
    torch.testing.assert_close(d.condition(h, text), d.head(torch.cat([h, tiled], dim=1)).flatten() + projection)
    assert make_d().embed is None  # GALIP's concat head is the default


# Every generator x clipd pair (and galip x every discriminator) is trained by the kit's pair check in
# tests/test_conformance.py (test_pair_trains_with_the_engine_or_is_refused_as_it_must_be), which parametrizes
# over the registry; here, the one pair whose path differs: a multi-scale generator, whose final image D judges.


def test_trains_with_a_multi_scale_generator():
    check_pair("attngan", "clipd", resolution=64)


# -- frozen CLIP, trainable head ---------------------------------------------------------------------------


def test_clip_is_not_a_parameter_nor_saved_and_stays_in_eval_mode():
    d = make_d()
    assert all(not p.requires_grad for p in d.vit.visual.parameters())
    clip_ids = {id(p) for p in d.vit.visual.parameters()}
    assert clip_ids and not clip_ids & {id(p) for p in d.parameters()}  # so not in D's optimiser
    assert not any("visual" in k or "vit" in k for k in d.state_dict())
    d.train()
    assert d.training and not d.vit.visual.training
    d.to(torch.float64)  # moves reach the ViT
    assert d.vit.visual.conv1.weight.dtype == torch.float64


def test_a_training_step_changes_the_head_not_clip_and_g_gets_gradient_through_clip():
    from t2i_dfgan import DFGANGenerator, DFGANGeneratorConfig

    d = make_d()
    g = DFGANGenerator(DFGANGeneratorConfig(nf=4), resolution=32, text_dim=TEXT_DIM)
    with torch.no_grad():  # open the gates so that every block matters
        for block in [*d.blocks, d.main]:
            block.gamma.fill_(0.5)
            if block.beta is not None:
                block.beta.fill_(0.5)
    clip_before, head_before = clip_state(d), {k: v.clone() for k, v in d.state_dict().items()}
    opt_d = torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=1e-3)
    z, text = torch.randn(B, g.z_dim), torch.randn(B, TEXT_DIM)
    real = torch.rand(B, 3, 32, 32) * 2 - 1

    # D step: hinge
    d.train()
    fake = g(z, text).detach()
    loss_d = F.relu(1 - d(real, text).logits).mean() + F.relu(1 + d(fake, text).logits).mean()
    loss_d.backward()
    opt_d.step()
    assert all(p.grad is None for p in d.vit.visual.parameters())
    assert all(torch.equal(v, clip_before[k]) for k, v in d.vit.visual.state_dict().items())
    assert all(not torch.equal(v, head_before[k]) for k, v in d.state_dict().items() if k != "clip_id")

    # G step: D frozen as the engine does; the gradient reaches G only through CLIP's ViT
    for p in d.parameters():
        p.requires_grad_(False)
    fake = g(z, text)
    fake.retain_grad()
    (-d(fake, text).logits.mean()).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.to_rgb.parameters())
    assert sum(p.grad.abs().sum() for p in g.parameters() if p.grad is not None) > 0


@pytest.mark.parametrize("resolution", sorted(RECIPES))
def test_the_shapes_recipes_train_with_the_engine_and_checkpoints_hold_the_head_only(tmp_path, resolution):
    """Each recipe's pairing and objective (GALIP's: hinge, mismatched / 2, clip_ma_gp) on its own ViT, for
    one real engine step at the generator's test widths (the recipe's D options, as shipped)."""
    pytest.importorskip("t2i_stylegan", reason="the Shapes recipes pair clipd with t2i-stylegan's generator")
    recipe = tomllib.loads(RECIPES[resolution].read_text())
    assert recipe["data"]["resolution"] == resolution
    loss, d = recipe["loss"], recipe["discriminator"]
    options = d["options"] | {"model": str(RECIPES[resolution].parents[3] / d["options"]["model"])}
    result = check_training_step(
        recipe["generator"]["name"], d["name"], run_dir=tmp_path / "run", steps=1, resolution=resolution,
        discriminator_options=options, loss=loss["adversarial"], loss_options=loss["options"],
        terms=loss["terms"], train=recipe["train"] | {"batch_size": 8},
    )
    assert {"d/adv", "d/matching_aware", "d/clip_ma_gp", "g/adv"} <= set(result.last)
    saved = load_file(next((result.run_dir / "checkpoints").glob("step_*")) / "discriminator.safetensors")
    head = ClipDiscriminator(ClipDConfig(**options), resolution=resolution, text_dim=TEXT_DIM).state_dict()
    assert set(saved) == set(head)  # the head only: no CLIP weights in checkpoints


@pytest.mark.parametrize("resolution", sorted(RECIPES))
def test_the_shapes_recipes_name_the_shipped_tiny_configs(resolution):
    recipe = tomllib.loads(RECIPES[resolution].read_text())
    options = recipe["discriminator"]["options"]
    assert recipe["discriminator"]["name"] == "clipd" and recipe["generator"]["name"] == "stylegan"
    assert options["weights"].startswith("random:")
    # each resolution has a ViT of its own input size with an 8 x 8 grid: no resize hides pixels from D
    vit = load_vit(str(RECIPES[resolution].parents[3] / options["model"]), weights=options["weights"])
    assert vit.image_size == resolution and vit.model.visual.grid_size == (8, 8)
    # the options the README's 15-minute runs measured: taps next to the patch embedding, gates from 0.5
    assert options["layers"] == [0, 1] and options["gate_init"] == 0.5 and "head" not in options
    assert recipe["train"]["lr_d"] == 4e-4 and "clip_sim" not in recipe["loss"]["terms"]


def test_registered_by_this_plugin():
    assert t2i.registry("discriminators").owner("clipd").startswith("t2i-clipd")
    for term in ("clip_sim", "clip_ma_gp"):
        assert t2i.registry("losses").owner(term).startswith("t2i-clipd")
