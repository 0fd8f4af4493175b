"""t2i-progressive: both networks through the conformance kit (t2i.testing), growing and not, then what the
kit cannot know: the schedule, every stage, the fade-in, the clock, and real engine runs (CPU, tiny)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from t2i.interfaces import DiscOutput
from t2i.testing import check_discriminator, check_generator
from t2i_progressive import (
    FULLY_GROWN,
    GrowthSchedule,
    ProgressiveDiscriminator,
    ProgressiveDiscriminatorConfig,
    ProgressiveGenerator,
    ProgressiveGeneratorConfig,
    stage_resolutions,
)

TEXT_DIM = 16
B = 4
P = 100  # images per phase in the unit tests


def make_g(resolution=32, **options):
    options = {"ch": 4, "z_dim": 16, "text_proj_dim": 8, "images_per_phase": P, **options}
    return ProgressiveGenerator(ProgressiveGeneratorConfig(**options), resolution=resolution, text_dim=TEXT_DIM)


def make_d(resolution=32, **options):
    options = {"ch": 4, "images_per_phase": P, **options}
    return ProgressiveDiscriminator(ProgressiveDiscriminatorConfig(**options), resolution=resolution, text_dim=TEXT_DIM)


def inputs(g, batch=B, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, g.z_dim, generator=gen), torch.randn(batch, TEXT_DIM, generator=gen)


def stable_seen(stage: int) -> int:
    """Images seen in the middle of stage ``stage``'s stable phase (P = 100)."""
    return P // 2 if stage == 0 else 2 * stage * P + P // 2


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- the interface contract (t2i.testing) ----------------------------------------------------------------

# the registered test options grow from 16 px with 1,000 images per phase: the kit checks every stage
VARIANTS = {"growing": ({}, None), "not-growing": ({"start_resolution": 0}, (32,))}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_generator_conforms(variant):
    options, resolutions = VARIANTS[variant]
    check_generator("progressive", options, resolutions=resolutions)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_discriminator_conforms(variant):
    options, resolutions = VARIANTS[variant]
    check_discriminator("progressive", options, resolutions=resolutions)


# -- the schedule ------------------------------------------------------------------------------------


def test_schedule_phase_boundaries():
    s = GrowthSchedule(start_resolution=8, images_per_phase=P)  # 8 -> 16 -> 32: two doublings
    expected = {
        0: (0, 1.0), P - 1: (0, 1.0),                                   # stable at 8
        P: (1, 0.0), P + 25: (1, 0.25), 2 * P - 1: (1, 0.99),           # fade-in of 16
        2 * P: (1, 1.0), 3 * P - 1: (1, 1.0),                           # stable at 16
        3 * P: (2, 0.0), 3 * P + 50: (2, 0.5),                          # fade-in of 32
        4 * P: (2, 1.0), 10**9: (2, 1.0), FULLY_GROWN: (2, 1.0),        # fully grown
    }
    for seen, (stage, alpha) in expected.items():
        got = s.at(seen, 32)
        assert got[0] == stage and got[1] == pytest.approx(alpha), seen
    assert s.grown_after(32) == 4 * P
    assert stage_resolutions(s, 32) == [8, 16, 32]
    assert stage_resolutions(s, 128) == [8, 16, 32, 64, 128]
    with pytest.raises(ValueError, match="images_seen"):
        s.at(-1, 32)


def test_alpha_rises_linearly_during_a_fade_in_and_is_one_otherwise():
    s = GrowthSchedule(start_resolution=4, images_per_phase=P)
    fades = [seen for seen in range(0, 8 * P) if s.at(seen, 32)[1] < 1]
    assert fades == [seen for k in (1, 2, 3) for seen in range((2 * k - 1) * P, 2 * k * P)]
    for k in (1, 2, 3):
        alphas = [s.at(seen, 32)[1] for seen in range((2 * k - 1) * P, 2 * k * P)]
        assert alphas == pytest.approx([i / P for i in range(P)])
    stages = [s.at(seen, 32)[0] for seen in range(0, 8 * P, P)]
    assert stages == [0, 1, 1, 2, 2, 3, 3, 3]


def test_start_at_the_target_means_no_growing():
    for start in (0, 32):
        s = GrowthSchedule(start_resolution=start, images_per_phase=1)
        assert stage_resolutions(s, 32) == [32] and s.grown_after(32) == 0
        assert s.at(0, 32) == (0, 1.0) and s.at(10**6, 32) == (0, 1.0)


@pytest.mark.parametrize(
    "cls, options",
    [
        (GrowthSchedule, dict(start_resolution=12)),
        (GrowthSchedule, dict(start_resolution=2)),
        (GrowthSchedule, dict(start_resolution=-8)),
        (GrowthSchedule, dict(images_per_phase=0)),
        (ProgressiveGeneratorConfig, dict(start_resolution=24)),
        (ProgressiveGeneratorConfig, dict(ch=0)),
        (ProgressiveGeneratorConfig, dict(z_dim=-1)),
        (ProgressiveDiscriminatorConfig, dict(images_per_phase=-5)),
        (ProgressiveDiscriminatorConfig, dict(mbstd_group=-1)),
    ],
)
def test_config_validation(cls, options):
    with pytest.raises(ValueError, match=next(iter(options))):
        cls(**options)


@pytest.mark.parametrize("cls", [ProgressiveGenerator, ProgressiveDiscriminator])
def test_a_start_above_the_target_is_refused(cls):
    cfg_cls = ProgressiveGeneratorConfig if cls is ProgressiveGenerator else ProgressiveDiscriminatorConfig
    with pytest.raises(ValueError, match="start_resolution 64 is above the target resolution 32"):
        cls(cfg_cls(start_resolution=64), resolution=32, text_dim=TEXT_DIM)


# -- the networks at every stage -------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [16, 32, 64, 128])
def test_full_resolution_output_in_range_and_d_accepts_it_at_every_stage(resolution):
    g, d = make_g(resolution, start_resolution=4), make_d(resolution, start_resolution=4)
    assert g.progressive and d.progressive and d.provides_features
    z, text = inputs(g)
    n_stages = len(g.stage_resolutions)
    assert g.stage_resolutions == [4 * 2**k for k in range(n_stages)] and g.stage_resolutions[-1] == resolution
    for seen in [stable_seen(k) for k in range(n_stages)] + [(2 * k - 1) * P + P // 3 for k in range(1, n_stages)]:
        g.on_train_step(0, seen), d.on_train_step(0, seen)
        with torch.no_grad():
            image = g(z, text)
            out = d(image, text, mismatched_text=text.roll(1, dims=0))
        assert image.shape == (B, 3, resolution, resolution)
        assert torch.isfinite(image).all() and image.min() >= -1 and image.max() <= 1
        assert isinstance(out, DiscOutput) and out.logits.shape == (B,) and out.mismatched_logits.shape == (B,)
        assert torch.isfinite(out.logits).all()
        stage = g.stage
        assert len(out.features) == stage + 1 and out.features[-1].shape[-1] == 4  # blocks to 4x4, then the 4x4 map
        assert [f.shape[-1] for f in out.features[:-1]] == [d.current_resolution // 2**i for i in range(1, stage + 1)]


def test_before_a_fade_the_image_is_the_stage_resolution_upsampled():
    g = make_g(64, start_resolution=8)
    z, text = inputs(g)
    for stage, res in enumerate([8, 16, 32, 64]):
        g.on_train_step(0, stable_seen(stage))
        assert g.current_resolution == res and g.alpha == 1.0
        with torch.no_grad():
            image = g(z, text)
        f = 64 // res
        low = image[..., ::f, ::f]
        assert torch.equal(image, low.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3))
        coarser = low[..., ::2, ::2].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        assert not torch.equal(low, coarser)  # and really at ``res``: not constant on larger blocks


def test_fade_in_is_continuous():
    g = make_g(32, start_resolution=8)
    z, text = inputs(g)

    def at(seen):
        g.on_train_step(0, seen)
        with torch.no_grad():
            return g(z, text)

    for k in (1, 2):
        start, end = (2 * k - 1) * P, 2 * k * P
        assert torch.equal(at(start), at(start - 1))  # alpha = 0: exactly the previous stage
        assert not torch.equal(at(start + P // 2), at(start))
        steps = [at(seen) for seen in range(start, end + 1, 10)]  # alpha 0, 0.1, ..., 1
        jumps = [float((b - a).abs().max()) for a, b in zip(steps, steps[1:])]
        total = float((steps[-1] - steps[0]).abs().max())
        assert max(jumps) <= 0.25 * total  # each 0.1 of alpha moves the image by a fraction of the whole fade
        assert torch.allclose(at(end - 1), at(end), atol=0.05 * total)  # alpha -> 1 lands on the stable stage


def test_d_compares_images_at_the_current_resolution():
    d = make_d(32, start_resolution=8).eval()
    image, text = torch.rand(B, 3, 32, 32) * 2 - 1, torch.randn(B, TEXT_DIM)
    for stage, res in enumerate([8, 16, 32]):
        d.on_train_step(0, stable_seen(stage))
        with torch.no_grad():
            logits = d(image, text).logits

            def seen_as(f):  # the image average-pooled by f and upsampled back
                blocky = F.avg_pool2d(image, f).repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)
                return torch.allclose(logits, d(blocky, text).logits, atol=1e-5)

            assert seen_as(32 // res)  # D sees only the image pooled to the current resolution...
            assert not seen_as(64 // res)  # ... and all of that


def test_d_fade_in_is_continuous():
    d = make_d(32, start_resolution=8)
    image, text = torch.rand(B, 3, 32, 32) * 2 - 1, torch.randn(B, TEXT_DIM)

    def logits(seen):
        d.on_train_step(0, seen)
        with torch.no_grad():
            return d(image, text).logits

    assert torch.allclose(logits(P), logits(P - 1), atol=1e-5)  # alpha = 0 scores like the previous stage
    assert not torch.allclose(logits(P + P // 2), logits(P - 1))


# -- gradients, conditioning, state ---------------------------------------------------------------------


def _backward(g, d):
    z, text = inputs(g)
    out = d(g(z, text), text, mismatched_text=text.roll(1, dims=0))
    (out.logits.mean() + out.mismatched_logits.mean() + sum(f.mean() for f in out.features)).backward()


def test_while_growing_only_the_active_stages_get_gradients():
    g, d = make_g(start_resolution=8), make_d(start_resolution=8)  # 8 -> 16 -> 32
    for net in (g, d):
        net.on_train_step(0, P + P // 2)  # fading in 16
    _backward(g, d)
    grads = {n for n, p in [*g.named_parameters(prefix="G"), *d.named_parameters(prefix="D")] if p.grad is not None}
    assert {"G.to_rgb.0.weight", "G.to_rgb.1.weight", "D.from_rgb.0.weight", "D.from_rgb.1.weight"} <= grads
    assert not any(n.startswith(("G.blocks.2.", "G.to_rgb.2.", "D.blocks.2.", "D.from_rgb.2.")) for n in grads)
    g.zero_grad(set_to_none=True), d.zero_grad(set_to_none=True)
    for net in (g, d):
        net.on_train_step(0, 10**6)  # fully grown: the earlier stages' to_rgb / from_rgb are retired
    _backward(g, d)
    retired = {f"{net}.{layer}.{s}.{w}" for net, layer in (("G", "to_rgb"), ("D", "from_rgb"))
               for s in (0, 1) for w in ("weight", "bias")}
    for name, p in [*g.named_parameters(prefix="G"), *d.named_parameters(prefix="D")]:
        if name in retired:  # stage 1's is still computed, with weight 1 - alpha = 0
            assert p.grad is None or not p.grad.any(), name
        else:
            assert p.grad is not None and p.grad.any(), name


def test_text_conditions_both_networks():
    g, d = make_g(start_resolution=8).eval(), make_d(start_resolution=8).eval()
    z, text = inputs(g)
    other = torch.randn_like(text)
    # the modulation starts at zero; give it some weight so that every layer's conditioning is exercised
    for m in g.modules():
        if m.__class__.__name__ == "_Modulation":
            torch.nn.init.normal_(m.affine.weight, std=0.1)
    for seen in (0, P + P // 2, 10**6):
        g.on_train_step(0, seen), d.on_train_step(0, seen)
        with torch.no_grad():
            assert not torch.allclose(g(z, text), g(z, other))
            image = g(z, text)
            assert not torch.allclose(d(image, text).logits, d(image, other).logits)


def test_a_fresh_network_is_fully_grown_and_the_clock_travels_in_the_state_dict():
    g, d = make_g(start_resolution=8), make_d(start_resolution=8)
    assert g.images_seen == FULLY_GROWN and g.growth == (2, 1.0) and d.current_resolution == 32
    for net in (g, d):
        net.on_train_step(0, 3 * P + 30)  # fading in 32
    g2, d2 = make_g(start_resolution=8), make_d(start_resolution=8)
    g2.load_state_dict(g.state_dict())
    d2.load_state_dict(d.state_dict())
    assert g2.images_seen == d2.images_seen == 3 * P + 30 and g2.growth == (2, pytest.approx(0.3))
    z, text = inputs(g)
    with torch.no_grad():
        image = g(z, text)
        assert torch.equal(image, g2(z, text))
        assert torch.equal(d(image, text).logits, d2(image, text).logits)
    assert g.state_dict()["_extra_state"].dtype == torch.int64


def test_the_engines_ema_copy_follows_the_generators_stage():
    g = make_g(start_resolution=8)
    ema = AveragedModel(g, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=False)  # as the engine builds it
    for step in range(5):
        g.on_train_step(step, step * 40)
        ema.update_parameters(g)
        assert ema.module.growth == g.growth
    assert ema.module.state_dict()["_extra_state"] == 160
    assert copy.deepcopy(g).images_seen == 160


def test_mid_fade_in_batch_of_one_eval_autocast_channels_last():
    g = make_g(start_resolution=8).to(memory_format=torch.channels_last).eval()
    d = make_d(start_resolution=8).to(memory_format=torch.channels_last).eval()
    for net in (g, d):
        net.on_train_step(0, P + P // 2)
    z, text = inputs(g, batch=1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        image = g(z, text)
        out = d(image.contiguous(memory_format=torch.channels_last), text, mismatched_text=-text)
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image.float()).all()
    assert out.logits.shape == (1,) and torch.isfinite(out.logits.float()).all()


def test_torch_compile_builds_one_graph_per_stage_not_per_step():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    g = make_g(32, start_resolution=8, images_per_phase=16)  # 3 stages over 64 images
    compiled = torch.compile(g, backend="eager")  # dynamo's guards only: no C++ compiler needed
    z, text = inputs(g)
    for step in range(12):
        g.on_train_step(step, 8 * step)
        assert torch.equal(compiled(z, text), g(z, text))
    assert counters["stats"]["unique_graphs"] <= 3 + 1  # one per stage, + alpha turning dynamic
    torch._dynamo.reset()


# -- the engine --------------------------------------------------------------------------------------------


def engine_config(**train):
    from t2i.config import merge, resolve

    growth = {"start_resolution": 8, "images_per_phase": 32}  # batch 8: 4 steps per phase
    raw = {
        "data": {"resolution": 32, "options": {"train_size": 64, "test_size": 16}},
        "generator": {"name": "progressive", "options": {"ch": 4, "z_dim": 16, "text_proj_dim": 8, **growth}},
        "discriminator": {"name": "progressive", "options": {"ch": 4, **growth}},
        "text_encoder": {"options": {"dim": 16}},
        "train": {"batch_size": 8, "steps": 18, "log_every": 2, "sample_every": 0, "checkpoint_every": 0, "device": "cpu", "ema": 0.999},
        "eval": {"metrics": []},
    }
    return resolve(merge(raw, {"train": train}))


def test_an_engine_run_grows_through_every_stage(tmp_path):
    from t2i.engine.trainer import Trainer

    trainer = Trainer(engine_config(), tmp_path / "run", quiet=True, tensorboard=False)
    seen = []
    for _ in range(18):
        logs = trainer.train_step()
        assert all(torch.isfinite(v) for v in logs.values())
        seen.append(trainer.G.growth)
        assert trainer.D.growth == trainer.G.growth == trainer.ema.module.growth
    # images seen before step t: 8 t; phases of 32 images = 4 steps
    assert [s for s, _ in seen] == [0] * 4 + [1] * 8 + [2] * 6
    assert [a for _, a in seen[4:8]] == [0.0, 0.25, 0.5, 0.75] and [a for _, a in seen[12:16]] == [0.0, 0.25, 0.5, 0.75]
    assert trainer.write_samples().is_file()


def test_sample_grids_show_the_current_resolution_upsampled(tmp_path):
    from t2i.engine.trainer import Trainer

    trainer = Trainer(engine_config(steps=2), tmp_path / "run", quiet=True, tensorboard=False)
    trainer.fit()
    G = trainer.sample_generator()
    assert G is trainer.ema.module and G.current_resolution == 8
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        image = G.eval()(z, torch.randn(2, 16))
    assert image.shape == (2, 3, 32, 32)
    assert torch.equal(image, image[..., ::4, ::4].repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))


def _weights(run_dir, step, name):
    return load_file(str(run_dir / "checkpoints" / f"step_{step:08d}" / f"{name}.safetensors"))


def test_resume_in_the_middle_of_a_fade_in_is_bit_identical(tmp_path):
    from t2i.engine.trainer import Trainer
    from t2i.runs import Sampler

    # 7 steps = 56 images: the checkpoint lands in the fade-in of 16 (alpha 0.75 at the next step)
    Trainer(engine_config(steps=14, checkpoint_every=7), tmp_path / "a", quiet=True, tensorboard=False).fit()
    Trainer(engine_config(steps=7, checkpoint_every=7), tmp_path / "b", quiet=True, tensorboard=False).fit()
    resumed = Trainer(engine_config(steps=14, checkpoint_every=7), tmp_path / "b", resume=True, quiet=True, tensorboard=False)
    assert resumed.step == 7 and resumed.images_seen == 56
    assert resumed.G.images_seen == 48 and resumed.G.growth == (1, 0.5)  # the clock of the last step before the stop
    resumed.fit()
    assert resumed.G.growth == (2, 0.25)  # went on into the fade-in of 32
    for name in ("generator", "discriminator", "generator_ema", "text_encoder"):
        a, b = _weights(tmp_path / "a", 14, name), _weights(tmp_path / "b", 14, name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after resume"
    # sampling from the mid-fade checkpoint uses the stage the run was at
    sampler = Sampler.load(tmp_path / "b" / "checkpoints" / "step_00000007", device="cpu")
    assert sampler.generator.growth == (1, 0.5)
    assert sampler.generate(["a red circle"], n=2).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("fixed", ["generator", "discriminator"])
def test_a_progressive_network_needs_a_progressive_partner(tmp_path, fixed):
    from t2i.engine.trainer import Trainer
    from t2i.errors import UsageError

    cfg = engine_config()
    key = "ngf" if fixed == "generator" else "ndf"
    cfg = dataclasses.replace(cfg, **{fixed: dataclasses.replace(getattr(cfg, fixed), name="dcgan", options={key: 8})})
    with pytest.raises(UsageError, match="progressive") as info:
        Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- registration ----------------------------------------------------------------------------------------


def test_registered_through_t2i():
    import t2i

    generators, discriminators = t2i.registry("generators"), t2i.registry("discriminators")
    for reg, cls in ((generators, ProgressiveGenerator), (discriminators, ProgressiveDiscriminator)):
        assert reg.owner("progressive").startswith("t2i-progressive")
        entry = reg.get("progressive")
        assert entry.factory is cls and entry.help
        net = reg.create("progressive", entry.metadata["test_options"], resolution=64, text_dim=TEXT_DIM)
        assert isinstance(net, cls) and net.stage_resolutions == [16, 32, 64]  # the kit's checks see growth
        net = reg.create("progressive", {"ch": "4", "start_resolution": "16", "images_per_phase": "1_000"}, resolution=64, text_dim=TEXT_DIM)
        assert net.stage_resolutions == [16, 32, 64] and net.schedule.images_per_phase == 1000
    fields = [row[0] for row in generators.describe("progressive")["fields"]]
    assert fields == ["start_resolution", "images_per_phase", "ch", "z_dim", "text_proj_dim"]
    assert [row[0] for row in discriminators.describe("progressive")["fields"]] == [
        "start_resolution", "images_per_phase", "ch", "mbstd_group"]
