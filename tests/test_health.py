"""Training-health diagnosis: thresholds on synthetic record sequences, then failures induced in real runs
(lr = 10, a frozen discriminator, a discriminator that cannot learn, a generator that outputs a constant,
a NaN loss term) and the verdicts they must produce in metrics.jsonl, health.json and summary.md."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch
from torch import nn

import t2i
from t2i import plugins
from t2i.engine import verdicts as vocab  # the thresholds and verdict lines
from t2i.engine.health import HealthMonitor, Verdict, diagnose, read_health, read_records
from t2i.engine.progress import format_record
from t2i.engine.trainer import Trainer
from t2i.config import resolve
from t2i.interfaces import LossTerm
from t2i.testing.toys import ToyConfig, ToyDiscriminator, ToyGenerator


def records(n: int, start: int = 1, every: int = 1, **series) -> list[dict]:
    """``n`` records; each keyword is a constant or a function of the record index."""
    out = []
    for i in range(n):
        rec = {"step": start + i * every, "lr/g": 2e-4, "lr/d": 2e-4}
        for key, value in series.items():
            rec[key.replace("__", "/")] = value(i) if callable(value) else value
        out.append(rec)
    return out


def healthy(n: int = 20) -> list[dict]:
    """A run that learns: D's loss drifts down with noise, logits separate a little, G's loss trends."""
    noise = [math.sin(1.7 * i) * 0.05 for i in range(n)]
    return records(
        n,
        d__adv=lambda i: 1.3 - 0.01 * i + noise[i], d__total=lambda i: 1.8 - 0.01 * i + noise[i],
        d__real_logit=lambda i: 0.4 + noise[i], d__fake_logit=lambda i: -0.3 - noise[i],
        g__adv=lambda i: 0.7 + 0.02 * i, g__total=lambda i: 0.7 + 0.02 * i + noise[i] / 2,
        health__g_update=1e-3, health__d_update=1e-3,
    )


def codes(verdicts: list[Verdict]) -> set[str]:
    return {v.code for v in verdicts}


# -- thresholds on synthetic records ---------------------------------------------------------------------
def test_a_healthy_run_has_no_verdicts():
    assert diagnose(healthy()) == []


def test_the_seeds_stuck_discriminator_loss_is_named_with_its_step_range():
    recs = healthy(4) + records(8, start=5, d__adv=1.0064, d__total=1.0064, d__real_logit=0.2, d__fake_logit=-0.1,
                                g__adv=lambda i: 30 + (i % 3) * 3, g__total=lambda i: 30 + (i % 3) * 3)
    stuck = [v for v in diagnose(recs) if v.code == "d_loss_stuck"]
    assert len(stuck) == 1
    v = stuck[0]
    assert v.severity == "error" and (v.first_step, v.last_step) == (5, 12)  # from the first stuck record on
    assert v.evidence["d/total"] == pytest.approx(1.0064) and "stuck at 1.006" in v.message
    assert "TTUR" in v.suggestion and "feature-matching" in v.suggestion
    # a constant loss with the learning rate at 0 (a schedule's end) is not "stuck"
    frozen_on_purpose = [dict(r, **{"lr/d": 0.0}) for r in recs]
    assert "d_loss_stuck" not in codes(diagnose(frozen_on_purpose))


def test_noise_just_above_the_tolerance_is_not_stuck():
    eps = vocab.STUCK_TOLERANCE * 3
    recs = records(10, d__total=lambda i: 1.0 + (eps if i % 2 else 0.0), d__adv=1.0)
    assert "d_loss_stuck" not in codes(diagnose(recs))


def test_discriminator_winning_outright_by_loss_by_logits_and_by_generator_loss():
    by_loss = records(8, d__adv=0.01, d__total=lambda i: 0.01 + 0.01 * i, g__adv=lambda i: 5 + i, g__total=lambda i: 5 + i)
    by_logits = records(8, d__adv=0.3, d__total=lambda i: 0.3 + 0.01 * i, d__real_logit=4.0, d__fake_logit=-4.0, g__adv=4.0, g__total=4.0)
    by_g_loss = records(8, d__adv=1.0, d__total=1.0 + 1e-2, g__adv=lambda i: 29 + (i * 7) % 8, g__total=30.0)
    for recs in (by_loss, by_logits, by_g_loss):
        found = [v for v in diagnose(recs) if v.code == "d_wins"]
        assert len(found) == 1 and found[0].severity == "warning", recs[0]
        assert "lower the D learning rate" in found[0].suggestion and "spectral norm" in found[0].suggestion
    assert next(v for v in diagnose(by_loss) if v.code == "d_wins").evidence["g/adv_last"] == 12
    # one record short of the window: not yet
    assert "d_wins" not in codes(diagnose(by_loss[: vocab.WINDOW - 1]))


def test_a_discriminator_that_cannot_tell_real_from_fake_has_collapsed():
    recs = records(8, d__adv=1.386, d__total=lambda i: 1.386 + 0.01 * (i % 2), d__real_logit=0.01, d__fake_logit=0.0,
                   g__adv=0.69, g__total=0.69)
    (v,) = [v for v in diagnose(recs) if v.code == "d_collapsed"]
    assert v.evidence["max_abs_gap"] == pytest.approx(0.01)


def test_chaotic_generator_loss_without_trend_but_not_a_noisy_trend():
    jumps = [3.0, 0.5, 2.5, 0.8, 3.2, 0.4, 2.9, 1.0, 3.1, 0.6, 2.7]
    chaotic = records(len(jumps), d__adv=1.0, d__total=lambda i: 1.0 + 0.1 * (i % 3), g__adv=lambda i: jumps[i],
                      g__total=lambda i: jumps[i])
    (v,) = [v for v in diagnose(chaotic) if v.code == "g_chaotic"]
    assert v.evidence["trend_r2"] < vocab.CHAOS_R2 and v.evidence["cv"] >= vocab.CHAOS_CV
    trending = records(12, d__adv=1.0, d__total=lambda i: 1.0 + 0.1 * (i % 3),
                       g__total=lambda i: 6.0 - 0.5 * i + (0.3 if i % 2 else -0.3), g__adv=1.0)
    assert "g_chaotic" not in codes(diagnose(trending))


def test_one_stretch_of_chaos_is_one_verdict_even_when_a_window_misses():
    jumps = [3.0, 0.5, 2.5, 0.8, 3.2, 0.4, 2.9, 1.0, 3.1, 0.6, 2.7]
    series = jumps + [1.6 + 0.1 * i for i in range(7)] + jumps  # a calm spell shorter than the window
    recs = records(len(series), d__adv=1.0, d__total=lambda i: 1.0 + 0.1 * (i % 3), g__adv=lambda i: series[i],
                   g__total=lambda i: series[i])
    (v,) = [v for v in diagnose(recs) if v.code == "g_chaotic"]  # overlapping windows: not one verdict each
    assert (v.first_step, v.last_step) == (1, len(series))


def test_non_finite_values_name_the_network_and_the_term():
    recs = healthy(3) + [{"step": 4, "d/total": 1.0, "g/total": None, "g/feature_matching": float("nan"), "lr/g": 1e-4}]
    (v,) = [v for v in diagnose(recs) if v.code == "non_finite"]
    assert v.severity == "error" and v.first_step == 4
    assert "g/feature_matching (term 'feature_matching' of the generator loss)" in v.message
    assert "g/total (the generator loss)" in v.message


def test_non_finite_weights_name_the_network_and_its_parameters():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    monitor = HealthMonitor({"generator": net})
    with torch.no_grad():
        net[1].weight[0, 0] = float("inf")
    monitor.network_health(7)
    (v,) = monitor.verdicts
    assert v.code == "non_finite" and v.first_step == 7
    assert "generator" in v.message and "1.weight" in v.message and "0.weight" not in v.message


def test_loss_explosion():
    recs = healthy(3) + records(2, start=4, d__total=3e7, d__adv=3e7, g__total=1e9, g__adv=1e9)
    (v,) = [v for v in diagnose(recs) if v.code == "loss_explosion"]
    assert (v.first_step, v.last_step) == (4, 5) and "= 1e+09" in v.message and v.evidence["d/total"] == 3e7


def test_mode_collapse_from_the_diversity_metric():
    def evals(score):
        return diagnose([{"step": 100, "eval/diversity/collapse_score": score, "eval/diversity/within_caption": 0.1}])

    assert [(v.code, v.severity) for v in evals(0.05)] == [("mode_collapse", "error")]
    assert [(v.code, v.severity) for v in evals(0.4)] == [("mode_collapse", "warning")]
    assert evals(0.95) == []


def test_stalled_metrics_are_info_and_ceilings_are_ignored():
    recs = [{"step": s, "eval/shapes_accuracy/mean/seen": 0.61, "eval/shapes_accuracy/colour/real": 1.0,
             "eval/diversity/real_between_captions": 0.3} for s in (100, 200, 300)]
    (v,) = diagnose(recs)
    assert (v.code, v.severity, v.first_step, v.last_step) == ("metric_stalled", "info", 100, 300)
    assert v.key == "shapes_accuracy/mean/seen"
    recs[1]["eval/shapes_accuracy/mean/seen"] = 0.7
    assert diagnose(recs) == []


def test_a_metric_at_what_real_images_score_is_not_stalled():
    """Shapes' background accuracy sits at 1.000, the real images' score, for the rest of a run: done, not stuck."""
    recs = [{"step": s, "eval/shapes_accuracy/background": 1.0, "eval/shapes_accuracy/background/seen": 1.0,
             "eval/shapes_accuracy/background/real": 1.0, "eval/shapes_accuracy/shape/seen": 0.5,
             "eval/shapes_accuracy/shape/real": 0.999} for s in (100, 200, 300)]
    assert [v.key for v in diagnose(recs)] == ["shapes_accuracy/shape/seen"]  # flat below its ceiling: stalled
    for r in recs:  # without a ceiling in the values, a flat 1.0 is still reported
        del r["eval/shapes_accuracy/background/real"]
    assert {v.key for v in diagnose(recs)} == {"shapes_accuracy/shape/seen", "shapes_accuracy/background",
                                               "shapes_accuracy/background/seen"}


def test_a_condition_that_stops_and_returns_is_two_verdicts():
    stuck = dict(d__adv=1.0, d__total=1.0, g__adv=1.0, g__total=1.0)
    recs = records(7, **stuck) + healthy(3)[:1] + records(6, start=9, **stuck)
    for i, r in enumerate(recs):
        r["step"] = i + 1
    found = [(v.first_step, v.last_step) for v in diagnose(recs) if v.code == "d_loss_stuck"]
    assert found == [(1, 7), (9, 14)]


def test_verdicts_round_trip_through_json_and_show_in_the_progress_line():
    (v,) = [v for v in diagnose(records(8, d__adv=0.01, d__total=0.01, g__adv=1.0, g__total=1.0)) if v.code == "d_wins"]
    assert Verdict.from_dict(json.loads(json.dumps(v.to_dict()))) == v
    assert v.line().startswith("[warning] d_wins (steps 1-8): D beats G outright")
    line = format_record({"img_per_s": 100.0, "d/total": 0.01, "health": ["d_wins"]})
    assert line.endswith("health: d_wins") and "d/total 0.010" in line


def test_a_verdict_that_cleared_says_when_and_one_that_holds_says_so():
    """Mode collapse at step 131, healthy at the next evaluation: it cleared there; D stuck to the end holds."""
    monitor = HealthMonitor()
    for step in (100, 131, 200):
        monitor.observe(step, {"eval/diversity/collapse_score": 0.1 if step == 131 else 0.9})
        monitor.observe(step, {"eval/fid": 50.0 - step / 10})  # another metric at the same step clears nothing
        if step == 131:
            monitor.observe(160, {"eval/fid": 30.0})  # nor does an evaluation without the diversity metric
    stuck = dict(d__adv=1.0, d__total=1.0, g__adv=1.0, g__total=1.0)
    for r in healthy(4) + records(8, start=5, **stuck):
        monitor.observe(r["step"], r)
    collapse = next(v for v in monitor.verdicts if v.code == "mode_collapse")
    assert (collapse.first_step, collapse.last_step, collapse.cleared_at) == (131, 131, 200)
    holding = next(v for v in monitor.verdicts if v.code == "d_loss_stuck")
    assert holding.cleared_at is None
    # health.json carries it; the summary's lines say when each started and whether it cleared
    saved = json.loads(monitor.to_json())
    assert next(v for v in saved if v["code"] == "mode_collapse")["cleared_at"] == 200
    assert Verdict.from_dict(saved[0]) == monitor.verdicts[0]
    lines = vocab.verdict_lines(monitor.verdicts)
    assert lines[0].startswith("- [error] d_loss_stuck (steps 5-12, still holds at the end):")
    assert lines[-1].startswith("- [error] mode_collapse (step 131, cleared at step 200):")


def test_a_training_verdict_clears_at_the_first_record_without_it():
    stuck = dict(d__adv=1.0, d__total=1.0, g__adv=1.0, g__total=1.0)
    recs = records(7, **stuck) + healthy(3)[:1] + records(6, start=9, **stuck)
    for i, r in enumerate(recs):
        r["step"] = i + 1
    found = [(v.first_step, v.last_step, v.cleared_at) for v in diagnose(recs) if v.code == "d_loss_stuck"]
    assert found == [(1, 7, 8), (9, 14, None)]


def test_the_summary_lists_a_cleared_verdict_as_cleared(tmp_path):
    from t2i.engine.summary import RunFacts, RunResult, summary_markdown

    monitor = HealthMonitor()
    for step, score in ((131, 0.1), (200, 0.9)):
        monitor.observe(step, {"eval/diversity/collapse_score": score})
    facts = RunFacts(epochs=1.0, train_images=128, device="cpu", precision="fp32", lr_g=2e-4, lr_d=2e-4,
                     world_size=1, parameters={"generator": 1, "discriminator": 1, "text encoder": 1},
                     encoder_trainable=False, terms=[])
    text = summary_markdown(RunResult(tmp_path, "finished", 200, 60.0, 1.0, None, None), tiny(), facts,
                            monitor.verdicts)
    assert "mode_collapse (step 131, cleared at step 200)" in text


# -- failures induced in real runs -----------------------------------------------------------------------
BASE = {
    "data": {"resolution": 32, "options": {"train_size": 128, "test_size": 32}},
    "text_encoder": {"options": {"dim": 16}},
    "train": {"batch_size": 16, "steps": 16, "log_every": 2, "sample_every": 0, "checkpoint_every": 0, "device": "cpu"},
    "eval": {"metrics": []},
}


def tiny(generator=None, discriminator=None, **sections) -> object:
    raw = json.loads(json.dumps(BASE))
    raw["generator"] = generator or {"name": "dcgan", "options": {"ngf": 8}}
    raw["discriminator"] = discriminator or {"name": "dcgan", "options": {"ndf": 8}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return resolve(raw)


def run(cfg, path):
    result = Trainer(cfg, path, quiet=True, tensorboard=False).fit()
    return result, read_health(path), read_records(path)


class FrozenDiscriminator(ToyDiscriminator):
    """Its logits are always 0: its parameters get zero gradients, so it never learns anything."""

    def condition(self, h, text):
        return super().condition(h, text) * 0.0


class ConstantGenerator(ToyGenerator):
    """One learned colour, whatever the noise and the caption: the purest mode collapse."""

    def __init__(self, cfg=None, *, resolution=32, text_dim=16):
        super().__init__(cfg, resolution=resolution, text_dim=text_dim)
        self.level = nn.Parameter(torch.zeros(3))

    def forward(self, z, text):
        return torch.tanh(self.level).view(1, 3, 1, 1).expand(z.shape[0], 3, self.resolution, self.resolution)


@pytest.fixture
def broken_parts():
    plugin = types.ModuleType("brokenparts")
    plugin.t2i_register_discriminators = t2i.hookimpl(lambda register: register("frozen_d", FrozenDiscriminator, config=ToyConfig))
    plugin.t2i_register_generators = t2i.hookimpl(lambda register: register("constant_g", ConstantGenerator, config=ToyConfig))
    plugins.register_plugin(plugin, name="brokenparts")
    yield
    plugins.unregister_plugin("brokenparts")


def test_lr_10_explodes_and_every_output_says_so(tmp_path):
    cfg = tiny(discriminator={"name": "dcgan", "options": {"ndf": 8, "spectral_norm": False}},
               train={"lr_g": 10.0, "lr_d": 10.0})
    result, verdicts, recs = run(cfg, tmp_path / "run")
    assert "loss_explosion" in codes(verdicts)
    explosion = next(v for v in verdicts if v.code == "loss_explosion")
    assert explosion.severity == "error" and explosion.first_step <= 4
    assert any("loss_explosion" in r.get("health", []) for r in recs)  # metrics.jsonl
    assert "loss_explosion" in (tmp_path / "run" / "summary.md").read_text()
    assert all(isinstance(r.get("health/d_update"), float) for r in recs)


def test_a_frozen_discriminator_is_stuck_collapsed_and_not_learning(tmp_path, broken_parts):
    cfg = tiny(discriminator={"name": "frozen_d", "options": {"width": 4}}, loss={"adversarial": "bce"})
    result, verdicts, _ = run(cfg, tmp_path / "run")
    assert {"d_loss_stuck", "d_collapsed", "d_not_learning"} <= codes(verdicts)
    stuck = next(v for v in verdicts if v.code == "d_loss_stuck")
    assert stuck.evidence["d/total"] == pytest.approx(3 * math.log(2), rel=1e-4)  # BCE and matching-aware at logit 0
    assert (stuck.first_step, stuck.last_step) == (2, 16)
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "## Health" in summary and "d_loss_stuck" in summary

    # resuming keeps the history: the verdict still starts at step 2
    Trainer(tiny(discriminator={"name": "frozen_d", "options": {"width": 4}}, loss={"adversarial": "bce"},
                 train={"steps": 16, "checkpoint_every": 8}), tmp_path / "again", quiet=True, tensorboard=False).fit()
    longer = tiny(discriminator={"name": "frozen_d", "options": {"width": 4}}, loss={"adversarial": "bce"},
                  train={"steps": 20, "checkpoint_every": 8})
    Trainer(longer, tmp_path / "again", resume=True, quiet=True, tensorboard=False).fit()
    resumed = next(v for v in read_health(tmp_path / "again") if v.code == "d_loss_stuck")
    assert (resumed.first_step, resumed.last_step) == (2, 20)


def test_a_tiny_discriminator_learning_rate_is_not_learning(tmp_path):
    result, verdicts, recs = run(tiny(train={"lr_d": 1e-12}), tmp_path / "run")
    assert "d_not_learning" in codes(verdicts) and "g_not_learning" not in codes(verdicts)
    assert max(r["health/d_update"] for r in recs) < vocab.FROZEN_UPDATE < min(r["health/g_update"] for r in recs)


def test_a_constant_generator_is_mode_collapse(tmp_path, broken_parts):
    cfg = tiny(generator={"name": "constant_g", "options": {"width": 4}}, train={"steps": 4},
               eval={"metrics": ["diversity"], "options": {"diversity": {"n_captions": 4, "per_caption": 2}}})
    result, verdicts, recs = run(cfg, tmp_path / "run")
    (v,) = [v for v in verdicts if v.code == "mode_collapse"]
    assert v.severity == "error" and v.evidence["eval/diversity/collapse_score"] == pytest.approx(0.0, abs=1e-6)
    assert recs[-1]["health"] == ["mode_collapse"] and "eval/diversity/collapse_score" in recs[-1]
    assert "mode_collapse" in (tmp_path / "run" / "summary.md").read_text()
    assert "mode_collapse (step 4, still holds at the end)" in (tmp_path / "run" / "summary.md").read_text()


class NaNAfter(LossTerm):
    """A generator term that turns NaN at step 6."""

    def g_loss(self, out):
        value = out.fake.logits.mean() * 0
        return value + (float("nan") if out.step >= 6 else 0.0)


def test_a_diverged_run_names_the_term_and_the_network(tmp_path):
    plugin = types.ModuleType("nanterm")
    plugin.t2i_register_losses = t2i.hookimpl(lambda register: register("nan_after", NaNAfter))
    plugins.register_plugin(plugin, name="nanterm")
    try:
        cfg = tiny(loss={"terms": {"nan_after": 1.0}}, train={"checkpoint_every": 4})
        result, verdicts, _ = run(cfg, tmp_path / "run")
    finally:
        plugins.unregister_plugin("nanterm")
    assert result.status == "diverged"
    messages = " | ".join(v.message for v in verdicts if v.code == "non_finite")
    assert "non-finite g/nan_after (term 'nan_after' of the generator loss)" in messages
    saved = json.loads((tmp_path / "run" / "health.json").read_text())
    assert {v["code"] for v in saved} >= {"non_finite"}
