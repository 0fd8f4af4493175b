"""The training engine: a real step, checkpoints, bit-exact resume, divergence, composition of terms."""

from __future__ import annotations

import json
import re
import types

import pytest
import torch
from safetensors.torch import load_file

import t2i
from t2i import plugins
from t2i.engine.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from t2i.engine.trainer import Trainer
from t2i.errors import UsageError
from t2i.interfaces import LossTerm

from t2i_test_helpers import tiny_config


def weights(run_dir, step, name="generator"):
    return load_file(str(run_dir / "checkpoints" / f"step_{step:08d}" / f"{name}.safetensors"))


def test_a_run_writes_its_folder(tmp_path):
    cfg = tiny_config(train={"sample_every": 3})
    result = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=True).fit()
    run = tmp_path / "run"
    assert result.status == "finished" and result.step == 6
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4, 6]
    for key in ("d/adv", "d/matching_aware", "d/total", "g/adv", "g/total", "lr/g", "lr/d", "img_per_s"):
        assert all(isinstance(x[key], float) for x in lines), key
    assert (run / "samples" / "step_00000003.png").is_file() and (run / "samples" / "latest.png").is_file()
    assert any((run / "tensorboard").iterdir())
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000003", "step_00000006"]
    summary = (run / "summary.md").read_text()
    assert "finished" in summary and "samples/step_00000006.png" in summary and "matching_aware" in summary
    assert re.search(r"- peak memory: \d+\.\d\d GiB \(peak RSS", summary) and "precision fp32)" in summary
    saved = t2i.config.load_toml(run / "config.toml")
    assert saved["generator"]["options"]["ngf"] == 8 and "conditioning" in saved["generator"]["options"]


def test_training_changes_both_networks_and_keeps_ema_separate(tmp_path):
    trainer = Trainer(tiny_config(), tmp_path / "run", quiet=True, tensorboard=False)
    g0 = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    d0 = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    trainer.fit()
    assert any(not torch.equal(g0[k], v) for k, v in trainer.G.state_dict().items())
    assert any(not torch.equal(d0[k], v) for k, v in trainer.D.state_dict().items())
    ema = trainer.ema.module.state_dict()
    assert any(not torch.equal(ema[k], v) for k, v in trainer.G.state_dict().items() if v.is_floating_point())


@pytest.mark.parametrize("micro_batch", [0, 8])  # 8: two accumulated micro-batches per update
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, micro_batch):
    def config(steps):
        return tiny_config(train={"steps": steps, "checkpoint_every": 4, "micro_batch": micro_batch})

    straight = Trainer(config(8), tmp_path / "a", quiet=True, tensorboard=False)
    straight.fit()
    first = Trainer(config(4), tmp_path / "b", quiet=True, tensorboard=False)
    first.fit()
    resumed = Trainer(config(8), tmp_path / "b", resume=True, quiet=True, tensorboard=False)
    assert resumed.step == 4 and resumed.accumulation == (2 if micro_batch else 1)
    resumed.fit()
    for name in ("generator", "discriminator", "generator_ema", "text_encoder"):
        a, b = weights(tmp_path / "a", 8, name), weights(tmp_path / "b", 8, name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after resume"
    state_a = load_checkpoint(tmp_path / "a" / "checkpoints" / "step_00000008").state
    state_b = load_checkpoint(tmp_path / "b" / "checkpoints" / "step_00000008").state
    assert torch.equal(state_a["feed"]["rng"], state_b["feed"]["rng"])
    assert torch.equal(state_a["feed"]["noise_rng"], state_b["feed"]["noise_rng"])
    assert torch.equal(state_a["random"]["ranks"][0]["torch"], state_b["random"]["ranks"][0]["torch"])


def test_resume_across_an_epoch_boundary_is_bit_identical(tmp_path):
    # 256 images / batch 16 = 16 batches per epoch; stop at 10, resume to 20
    straight = Trainer(tiny_config(train={"steps": 20, "checkpoint_every": 10}), tmp_path / "a", quiet=True, tensorboard=False)
    straight.fit()
    Trainer(tiny_config(train={"steps": 10, "checkpoint_every": 10}), tmp_path / "b", quiet=True, tensorboard=False).fit()
    resumed = Trainer(tiny_config(train={"steps": 20, "checkpoint_every": 10}), tmp_path / "b", resume=True, quiet=True, tensorboard=False)
    resumed.fit()
    assert resumed.feed.epoch == 1
    a, b = weights(tmp_path / "a", 20), weights(tmp_path / "b", 20)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_epochs_stop_condition_and_d_steps(tmp_path):
    cfg = tiny_config(train={"steps": None, "epochs": 1.0, "d_steps": 2, "checkpoint_every": 0})
    result = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False).fit()
    assert result.step == 8  # 16 batches per epoch, 2 per generator step


def test_a_killed_checkpoint_write_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    tensors = {"net": {"w": torch.ones(3)}}
    save_checkpoint(folder, 1, tensors, {"step": 1}, {})

    def die(*args, **kwargs):
        raise KeyboardInterrupt  # the process is killed while writing state.pt

    monkeypatch.setattr(torch, "save", die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(folder, 2, {"net": {"w": torch.zeros(3)}}, {"step": 2}, {})
    assert latest_checkpoint(folder).name == "step_00000001"
    assert [p.name for p in folder.iterdir()] == ["step_00000001"]  # no half-built temporary folder left
    assert torch.equal(load_checkpoint(latest_checkpoint(folder)).weights["net"]["w"], torch.ones(3))


def test_keep_last_k_checkpoints(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, {"net": {"w": torch.full((2,), float(step))}}, {}, {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004", "step_00000005"]


class NaNAfter(LossTerm):
    """A deliberately broken term: finite for two steps, then NaN."""

    def g_loss(self, out):
        value = out.fake.logits.mean() * 0
        return value + (float("nan") if out.step >= 2 else 0.0)


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    plugin = types.ModuleType("nanplugin")
    plugin.t2i_register_losses = t2i.hookimpl(lambda register: register("nan_after", NaNAfter))
    plugins.register_plugin(plugin, name="nanplugin")
    cfg = tiny_config(loss={"terms": {"nan_after": 1.0}}, train={"steps": 20, "log_every": 4, "checkpoint_every": 2})
    result = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False).fit()
    assert result.status == "diverged"
    assert "g/nan_after" in result.message
    assert result.checkpoint is not None and result.checkpoint.name == "step_00000002"
    g = weights(tmp_path / "run", 2)
    assert all(torch.isfinite(v).all() for v in g.values())


class CountingTerm(LossTerm):
    """Records what the engine handed it; adds nothing to the loss."""

    needs = frozenset({"real_in_g_step", "real_grad"})
    seen: list = []

    def d_loss(self, out):
        CountingTerm.seen.append(("d", out.real.features is not None, out.real_images.requires_grad))
        return out.real.logits.sum() * 0

    def g_loss(self, out):
        CountingTerm.seen.append(("g", out.real is not None, None))
        return None


def test_terms_declare_what_they_need_and_the_engine_provides_it(tmp_path):
    plugin = types.ModuleType("countplugin")
    plugin.t2i_register_losses = t2i.hookimpl(lambda register: register("counting", CountingTerm))
    plugins.register_plugin(plugin, name="countplugin")
    CountingTerm.seen = []
    cfg = tiny_config(loss={"terms": {"counting": 0.5}}, train={"steps": 2, "checkpoint_every": 0})
    Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False).fit()
    assert ("d", True, True) in CountingTerm.seen and ("g", True, None) in CountingTerm.seen


def test_adversarial_and_term_roles_are_checked(tmp_path):
    with pytest.raises(UsageError, match="is a loss term, not an adversarial loss"):
        Trainer(tiny_config(loss={"adversarial": "matching_aware"}), tmp_path / "a", quiet=True)
    with pytest.raises(UsageError, match="is an adversarial loss; choose it with --loss"):
        Trainer(tiny_config(loss={"terms": {"bce": 1.0}}), tmp_path / "b", quiet=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing half-written


def test_unsupported_resolution_fails_before_training(tmp_path):
    with pytest.raises(UsageError, match=r"generator 'dcgan' supports resolutions 32, 64, 128, not 16"):
        Trainer(tiny_config(data={"resolution": 16}), tmp_path / "run", quiet=True)


@pytest.mark.parametrize("adversarial", ["bce", "hinge"])
@pytest.mark.parametrize("schedule", ["constant", "cosine_restarts", "linear"])
def test_losses_and_schedules_train(tmp_path, adversarial, schedule):
    cfg = tiny_config(loss={"adversarial": adversarial}, train={"schedule": schedule, "t0": 4, "steps": 3, "checkpoint_every": 0})
    trainer = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False)
    result = trainer.fit()
    assert result.status == "finished"
    lr = trainer.opt_g.param_groups[0]["lr"]
    if schedule == "constant":
        assert lr == pytest.approx(2e-4)
    elif schedule == "linear":
        assert lr == pytest.approx(0.0)
    else:
        assert 0 < lr < 2e-4


def test_bf16_autocast_grad_clip_and_trainable_text_encoder(tmp_path):
    cfg = tiny_config(
        text_encoder={"options": {"trainable": True}},
        train={"precision": "bf16", "grad_clip": 1.0, "lr_g": 1e-4, "lr_d": 4e-4, "betas": [0.5, 0.999], "steps": 3, "checkpoint_every": 0},
    )
    trainer = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False)
    before = trainer.encoder.embedding.weight.detach().clone()
    result = trainer.fit()
    assert result.status == "finished" and trainer.precision.name == "bf16"
    assert not torch.equal(before, trainer.encoder.embedding.weight)  # trained with D
    assert trainer.opt_g.param_groups[0]["betas"] == (0.5, 0.999)


def test_fp16_on_cpu_is_refused_with_one_line(tmp_path):
    with pytest.raises(t2i.ConfigError, match="fp16 needs a CUDA device"):
        Trainer(tiny_config(train={"precision": "fp16"}), tmp_path / "run", quiet=True)


class MeanPixel(t2i.interfaces.Metric):
    """A tiny honest metric: mean pixel value of images generated for the first 8 reference captions."""

    def evaluate(self, generate, reference):
        images = generate([reference.captions_of(i)[0] for i in range(8)])
        assert images.dtype == torch.uint8 and images.shape[1:] == (32, 32, 3)
        return {"mean_pixel": images.float().mean().item(), "protocol": {"n": 8}}


def test_metrics_run_during_training_and_at_the_end(tmp_path):
    plugin = types.ModuleType("metricplugin")
    plugin.t2i_register_metrics = t2i.hookimpl(lambda register: register("mean_pixel", MeanPixel))
    plugins.register_plugin(plugin, name="metricplugin")
    cfg = tiny_config(eval={"metrics": ["mean_pixel"], "every": 2}, train={"steps": 4, "checkpoint_every": 0})
    result = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False).fit()
    run = tmp_path / "run"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "eval/mean_pixel" in x] == [2, 4]
    report = json.loads((run / "eval.json").read_text())
    assert report["step"] == 4 and report["protocol"]["mean_pixel"]["n"] == 8
    assert 0 <= result.evaluation["mean_pixel"] <= 255
    assert f"| mean_pixel | {result.evaluation['mean_pixel']:.3f} |" in (run / "summary.md").read_text()


def test_unknown_metric_fails_before_training(tmp_path):
    with pytest.raises(UsageError, match=r"unknown metric 'fidd'"):
        Trainer(tiny_config(eval={"metrics": ["fidd"]}), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_resume_forgets_metrics_logged_after_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(train={"steps": 4, "checkpoint_every": 2, "log_every": 1}), run, quiet=True, tensorboard=False).fit()
    import shutil

    shutil.rmtree(run / "checkpoints" / "step_00000004")  # as if killed after logging step 4, before saving it
    Trainer(tiny_config(train={"steps": 4, "checkpoint_every": 2, "log_every": 1}), run, resume=True, quiet=True, tensorboard=False).fit()
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_ema_averages_parameters_and_copies_buffers(tmp_path):
    trainer = Trainer(tiny_config(train={"steps": 3, "checkpoint_every": 0}), tmp_path / "run", quiet=True, tensorboard=False)
    trainer.fit()
    ema = trainer.ema.module
    for (name, b_ema), (_, b) in zip(ema.named_buffers(), trainer.G.named_buffers()):
        assert torch.equal(b_ema, b), name  # e.g. BatchNorm's num_batches_tracked is 3, not an average
    assert any(not torch.equal(p_ema, p) for p_ema, p in zip(ema.parameters(), trainer.G.parameters()))


def _flat_layout(state):
    """A per-part ``state.pt`` written back in the flat layout of earlier t2i versions."""
    feed, ranks = state["feed"], state["random"]["ranks"]
    return {
        **{k: state[k] for k in ("opt_g", "opt_d", "sched_g", "sched_d", "scaler")},
        "epoch": feed["epoch"], "position": feed["position"], "rng": feed["rng"], "noise_rng": feed["noise_rng"],
        "elapsed": state["stopping"]["elapsed"], "ema_n_averaged": state["ema"]["n_averaged"],
        "torch_rng": ranks[0]["torch"], "world_size": 1,
    }


def test_a_checkpoint_in_the_earlier_flat_layout_resumes_bit_identically(tmp_path):
    straight = Trainer(tiny_config(train={"steps": 8, "checkpoint_every": 4}), tmp_path / "a", quiet=True, tensorboard=False)
    straight.fit()
    Trainer(tiny_config(train={"steps": 4, "checkpoint_every": 4}), tmp_path / "b", quiet=True, tensorboard=False).fit()
    state_file = tmp_path / "b" / "checkpoints" / "step_00000004" / "state.pt"
    torch.save(_flat_layout(torch.load(state_file, weights_only=True)), state_file)
    resumed = Trainer(tiny_config(train={"steps": 8, "checkpoint_every": 4}), tmp_path / "b", resume=True, quiet=True, tensorboard=False)
    assert resumed.step == 4 and resumed.feed.position == 4
    resumed.fit()
    for name in ("generator", "discriminator", "generator_ema"):
        a, b = weights(tmp_path / "a", 8, name), weights(tmp_path / "b", 8, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_the_checkpoint_holds_every_stateful_part_by_name(tmp_path):
    trainer = Trainer(tiny_config(train={"steps": 2, "checkpoint_every": 2}), tmp_path / "run", quiet=True, tensorboard=False)
    trainer.fit()
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000002")
    parts = trainer.stateful_parts()
    assert set(ckpt.weights) | set(ckpt.state) == set(parts)
    assert set(ckpt.weights) == {"generator", "discriminator", "text_encoder", "generator_ema"}
    assert ckpt.state["feed"]["position"] == 2 and ckpt.state["random"]["world_size"] == 1


class Telepathic(LossTerm):
    needs = frozenset({"telepathy"})


def test_an_unknown_need_is_refused_when_the_term_is_built(tmp_path):
    plugin = types.ModuleType("telepathyplugin")
    plugin.t2i_register_losses = t2i.hookimpl(lambda register: register("telepathic", Telepathic))
    plugins.register_plugin(plugin, name="telepathyplugin")
    with pytest.raises(UsageError, match=r"loss term 'telepathic' declares unknown needs 'telepathy'"):
        Trainer(tiny_config(loss={"terms": {"telepathic": 1.0}}), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


class QuietTerm(LossTerm):
    """A term whose registration metadata says otherwise: the class decides."""

    def g_loss(self, out):
        return out.fake.logits.mean() * 0


def test_a_loss_role_comes_from_its_class_not_its_registration_metadata(tmp_path):
    plugin = types.ModuleType("mislabelled")
    plugin.t2i_register_losses = t2i.hookimpl(lambda register: register("quiet_term", QuietTerm, role="adversarial"))
    plugins.register_plugin(plugin, name="mislabelled")
    cfg = tiny_config(loss={"terms": {"quiet_term": 1.0}}, train={"steps": 1, "checkpoint_every": 0})
    assert Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False).fit().status == "finished"
    with pytest.raises(UsageError, match="'quiet_term' is a loss term, not an adversarial loss"):
        Trainer(tiny_config(loss={"adversarial": "quiet_term"}), tmp_path / "b", quiet=True)


def test_the_summary_shows_the_learning_rates_the_optimisers_used(tmp_path):
    from t2i.engine.optim import learning_rates
    from t2i.engine.summary import RunFacts, RunResult, summary_markdown

    cfg = tiny_config(train={"lr_g": 1e-4, "lr_d": 4e-4, "scale_lr": True})
    assert learning_rates(cfg.train, 4) == (4e-4, 1.6e-3) and learning_rates(cfg.train, 1) == (1e-4, 4e-4)
    facts = RunFacts(epochs=1.0, train_images=256, device="cpu", precision="fp32", lr_g=4e-4, lr_d=1.6e-3,
                     world_size=4, parameters={"generator": 1, "discriminator": 2, "text encoder": 3},
                     encoder_trainable=False, terms=[])
    result = RunResult(tmp_path / "run", "finished", 6, 1.0, 10.0, None, None)
    text = summary_markdown(result, cfg, facts, [])
    assert "Adam lr G 0.0004 / D 0.0016 (train.scale_lr: 0.0001 / 0.0004 x 4 processes)" in text

    trainer = Trainer(tiny_config(train={"steps": 1, "lr_g": 1e-4, "checkpoint_every": 0}), tmp_path / "one", quiet=True, tensorboard=False)
    trainer.fit()
    assert "Adam lr G 0.0001 / D 0.0002," in (tmp_path / "one" / "summary.md").read_text()


def test_eval_names_the_weights_it_sampled_from(tmp_path):
    from t2i.runs import Sampler, evaluate_checkpoint

    plugin = types.ModuleType("metricplugin2")
    plugin.t2i_register_metrics = t2i.hookimpl(lambda register: register("mean_pixel2", MeanPixel))
    plugins.register_plugin(plugin, name="metricplugin2")
    for ema, expected in ((0.0, "generator"), (0.999, "generator_ema")):
        run = tmp_path / f"ema{ema}"
        Trainer(tiny_config(train={"steps": 2, "checkpoint_every": 0, "ema": ema}), run, quiet=True, tensorboard=False).fit()
        report = evaluate_checkpoint(run, metrics=["mean_pixel2"], device="cpu")
        assert report["weights"] == expected
        assert Sampler.load(run, device="cpu", ema=False).weights == "generator"


def test_runs_train_names_a_new_folder_on_rank_zero_and_announces_the_start(tmp_path):
    from t2i.runs import train

    seen = []
    result = train(tiny_config(train={"steps": 2, "checkpoint_every": 0}), lambda: tmp_path / "named", quiet=True,
                   tensorboard=False, on_start=lambda trainer, ctx: seen.append((trainer.step, ctx.rank, ctx.world_size)))
    assert result.status == "finished" and result.run_dir == tmp_path / "named" and seen == [(0, 0, 1)]
    resumed = train(tiny_config(train={"steps": 3, "checkpoint_every": 0}), tmp_path / "named", resume=True, quiet=True,
                    tensorboard=False, on_start=lambda trainer, ctx: seen.append((trainer.step, ctx.rank, ctx.world_size)))
    assert resumed.step == 3 and seen[-1] == (2, 0, 1)
