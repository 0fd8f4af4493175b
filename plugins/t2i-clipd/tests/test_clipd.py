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


@pytest.mark.parametrize("resolution, objective", [(32, "recipe"), (64, "recipe"), (32, "galip")])
def test_the_shapes_recipes_train_with_the_engine_and_checkpoints_hold_the_head_only(tmp_path, resolution, objective):
    """Each recipe's pairing and objective (hinge, mismatched / 2, lazy R1, the hybrid head) on its own ViT, for
    one real engine step at the generator's test widths (the recipe's D options, as shipped); and the same
    pairing with GALIP's own objective (``clip_ma_gp`` at CLIP's features, NetC's concat head)."""
    pytest.importorskip("t2i_stylegan", reason="the Shapes recipes pair clipd with t2i-stylegan's generator")
    recipe = tomllib.loads(RECIPES[resolution].read_text())
    assert recipe["data"]["resolution"] == resolution
    loss, d = recipe["loss"], recipe["discriminator"]
    options = d["options"] | {"model": str(RECIPES[resolution].parents[3] / d["options"]["model"])}
    terms, term_options = loss["terms"], loss.get("term_options")
    if objective == "galip":
        options = {k: v for k, v in options.items() if k != "head"}
        terms, term_options = {"matching_aware": 0.5, "clip_ma_gp": 1.0}, None
    result = check_training_step(
        recipe["generator"]["name"], d["name"], run_dir=tmp_path / "run", steps=1, resolution=resolution,
        discriminator_options=options, loss=loss["adversarial"], loss_options=loss["options"],
        terms=terms, term_options=term_options, train=recipe["train"] | {"batch_size": 8},
    )
    assert {"d/adv", "g/adv"} | {f"d/{term}" for term in terms} <= set(result.last)
    saved = load_file(next((result.run_dir / "checkpoints").glob("step_*")) / "discriminator.safetensors")
    head = ClipDiscriminator(ClipDConfig(**options), resolution=resolution, text_dim=TEXT_DIM).state_dict()
    assert set(saved) == set(head)  # the head only: no CLIP weights in checkpoints


# -- the architecture ------------------------------------------------------------------------------------


def test_taps_the_chosen_blocks_and_shapes():
    d = make_d(layers=(0, 2))
    grids = d.vit(torch.rand(2, 3, 64, 64) * 2 - 1)  # any size: resized to CLIP's 32 px
    assert [tuple(g.shape) for g in grids] == [(2, 64, 4, 4)] * 2  # width 64, 32 / 8 = 4 patches a side
    assert len(d.blocks) == 1 and d.main.shortcut.out_channels == 16
    h, features = d.image_features(torch.zeros(2, 3, 32, 32))
    assert h.shape == (2, 16, 4, 4) and len(features) == 2
    # the first tapped grid is the output of block 0, computed by hand from the ViT's parts
    v = d.vit.visual
    x = d.vit.bundle.preprocess(torch.zeros(1, 3, 32, 32))
    x = v.conv1(x).flatten(2).transpose(1, 2)
    x = v.ln_pre(torch.cat([v.class_embedding.expand(1, 1, -1), x], 1) + v.positional_embedding)
    x = v.transformer.resblocks[0](x)
    assert torch.allclose(d.vit(torch.zeros(1, 3, 32, 32))[0], x[:, 1:].transpose(1, 2).reshape(1, 64, 4, 4),
                          atol=1e-6)


def test_the_sentence_conditions_and_gates_start_closed():
    d = make_d()
    assert all(b.gamma.item() == 0 and b.beta.item() == 0 for b in d.blocks) and d.main.gamma.item() == 0
    opened = make_d(gate_init=1.0)
    assert all(b.gamma.item() == 1 and b.beta.item() == 1 for b in opened.blocks) and opened.main.gamma.item() == 1
    image, text = torch.rand(B, 3, 32, 32) * 2 - 1, torch.randn(B, TEXT_DIM)
    out = d(image, text, mismatched_text=text.roll(1, 0))
    assert out.logits.shape == (B,) and not torch.allclose(out.logits, out.mismatched_logits)


def test_parameter_count_at_galips_setting():
    """GALIP's NetD + NetC on ViT-B/32 (768 x 7 x 7 grids, layers 1, 4, 8) and a 512-d CLIP sentence."""
    with torch.device("meta"):  # shapes only: no memory, no random draws
        blocks = [DBlock(768, 768, clip_feature=True) for _ in range(2)] + [DBlock(768, 512, clip_feature=False)]
        head = torch.nn.Sequential(torch.nn.Conv2d(1024, 128, 4, bias=False), torch.nn.Conv2d(128, 1, 4, bias=False))
    ours = sum(parameter_count(m) for m in [*blocks, head])
    assert ours == GALIP_D_USED
    assert GALIP_D_BUILT - GALIP_D_USED == 2 * (768 * 768 + 768)  # the two unused shortcut convs
    # ClipDiscriminator builds these layers from the ViT's width and grid; at the tiny model's 64 x 4 x 4:
    tiny = make_d(layers=(0, 1, 2), head_width=16, joint_width=8)
    assert (tiny.vit.width, tiny.vit.grid) == (64, 4)
    w = 64
    expected = (2 * (2 * w * w * 9 + 2)  # two CLIP-feature blocks: two 3x3 convs, gamma, beta
                + (w * 16 * 9 + 16 * 16 * 9 + (w * 16 + 16) + 1)  # the block to head_width, with its shortcut
                + (16 + TEXT_DIM) * 8 * 4 * 4 + 8 * 1)  # NetC: 4x4 conv, then the 1x1 left of the 4x4 grid
    assert parameter_count(tiny) == expected


def test_defaults_are_galips():
    cfg = ClipDConfig()
    assert (cfg.model, cfg.pretrained, cfg.layers, cfg.head_width, cfg.joint_width) == (
        "ViT-B-32-quickgelu", "openai", (1, 4, 8), 512, 128)


# -- GALIP's terms ----------------------------------------------------------------------------------------


def test_clip_ma_gp_conforms_and_is_galips_penalty_at_clips_features():
    check_loss("clip_ma_gp", train=False)  # with clipd (its test_discriminator); trained in the recipe test above
    d = make_d()
    with torch.no_grad():
        for block in [*d.blocks, d.main]:
            block.gamma.fill_(0.5)
    real, text = torch.rand(B, 3, 32, 32) * 2 - 1, torch.randn(B, TEXT_DIM)
    term = ClipMAGPTerm(ClipMAGPConfig())
    out = StepOutputs(real=None, fake=d(real, text), real_images=real, fake_images=real, text=text,
                      adversarial=t2i.registry("losses").create("hinge"), discriminator=d)
    penalty = term.d_loss(out)
    # by hand: GALIP's MA_GP_FP32 with the grids stacked as their CLIP_real, and the sentence
    grids = torch.stack(d.vit(real), 1).requires_grad_(True)
    sent = text.clone().requires_grad_(True)
    logits = d.condition(d.trunk(list(grids.unbind(1)))[0], sent)
    g_img, g_sent = torch.autograd.grad(logits.sum(), (grids, sent))
    norm = torch.cat([g_img.flatten(1), g_sent], 1).norm(dim=1)
    assert torch.allclose(penalty, 2.0 * norm.pow(6).mean(), rtol=1e-4)
    penalty.backward()  # it trains the head and nothing else
    assert d.main.gamma.grad is not None and all(p.grad is None for p in d.vit.visual.parameters())


def test_clip_ma_gp_refuses_other_discriminators():
    with pytest.raises(AssertionError, match="needs the clipd discriminator"):
        check_loss("clip_ma_gp", train=False, discriminator=TOY)


def test_clip_sim_conforms_and_pulls_images_toward_their_captions():
    check_loss("clip_sim", train=False)
    term = ClipSimTerm(ClipSimConfig(model=TINY_CLIP_CONFIG, weights="random:0"))
    images = (torch.rand(B, 3, 32, 32) * 2 - 1).requires_grad_(True)
    captions = ["a red circle", "a blue square", "a red circle", "a green star"]
    out = StepOutputs(real=None, fake=None, real_images=images, fake_images=images, text=torch.zeros(B, 1),
                      adversarial=None, captions=captions)
    loss = term.g_loss(out)
    image_emb = F.normalize(term.bundle.model.encode_image(term.bundle.preprocess(images)), dim=-1)
    text_emb = F.normalize(term.bundle.model.encode_text(term.bundle.tokenizer(captions)), dim=-1)
    assert torch.allclose(loss, -(image_emb * text_emb).sum(-1).mean(), atol=1e-5)  # GALIP: -cos, weight sim_w
    loss.backward()
    assert images.grad.abs().sum() > 0 and all(not p.requires_grad for p in term.clip.parameters())


# -- weights and errors ----------------------------------------------------------------------------------


def test_a_weights_file_loads_the_same_model(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(load_vit(TINY_CLIP_CONFIG, weights="random:0").model.state_dict(), path)
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    a, b = make_d(), make_d(weights=str(path))
    assert all(torch.equal(x, y) for x, y in zip(a.vit(image), b.vit(image)))


def test_a_head_is_refused_on_other_clip_weights():
    state = make_d().state_dict()
    make_d().load_state_dict(state)  # the same CLIP: fine
    with pytest.raises(UsageError, match="trained on other CLIP weights"):
        make_d(weights="random:1").load_state_dict(state)


def test_a_missing_weights_file_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "clip.pt"
    with pytest.raises(UsageError, match=str(missing)) as info:
        make_d(weights=str(missing))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("options, match", [
    (dict(layers=(0, 5)), "blocks 0..2"),
    (dict(weights="random:x"), "random:SEED"),
    (dict(model="ViT-B-33"), "unknown CLIP model"),
])
def test_bad_options_are_one_line_usage_errors(options, match):
    with pytest.raises(UsageError, match=match):
        make_d(**options)


@pytest.mark.parametrize("options", [dict(layers=(4, 1)), dict(layers=()), dict(head_width=0)])
def test_config_validation(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        ClipDConfig(**options)


@pytest.mark.parametrize("resolution", sorted(RECIPES))
def test_the_shapes_recipes_name_the_shipped_tiny_configs(resolution):
    recipe = tomllib.loads(RECIPES[resolution].read_text())
    options = recipe["discriminator"]["options"]
    assert recipe["discriminator"]["name"] == "clipd" and recipe["generator"]["name"] == "stylegan"
    assert options["weights"].startswith("random:")
    # each resolution has a ViT of its own input size with an 8 x 8 grid: no resize hides pixels from D
    vit = load_vit(str(RECIPES[resolution].parents[3] / options["model"]), weights=options["weights"])
    assert vit.image_size == resolution and vit.model.visual.grid_size == (8, 8)
    # the options the README's 15-minute runs measured: taps next to the patch embedding, open gates, the
    # projection term beside NetC's concat head, lazy R1 on the images in place of MA-GP at CLIP's features
    assert options["layers"] == [0, 1] and options["gate_init"] == 1.0 and options["head"] == "hybrid"
    terms = recipe["loss"]["terms"]
    assert terms == {"matching_aware": 0.5, "r1": 0.025} and recipe["loss"]["term_options"]["r1"] == {"every": 16}
    assert (recipe["train"]["lr_d"], recipe["train"]["batch_size"]) == {32: (4e-4, 32), 64: (8e-4, 16)}[resolution]


def test_registered_by_this_plugin():
    assert t2i.registry("discriminators").owner("clipd").startswith("t2i-clipd")
    for term in ("clip_sim", "clip_ma_gp"):
        assert t2i.registry("losses").owner(term).startswith("t2i-clipd")
