"""What the health monitor can say about a run: the verdicts, their thresholds and their suggestions.

A :class:`HealthMonitor` is fed every record a run logs (``observe(step, record)``: the lines of
``metrics.jsonl``, ``eval/...`` values included) and keeps a list of :class:`Verdict` objects. A condition
that persists over consecutive records is one verdict whose step range grows; one that goes away and
comes back is a new verdict. :func:`diagnose` replays a whole ``metrics.jsonl`` for a report.

What is detected, and the thresholds (module constants, chosen so that a healthy run of the default
recipe raises none of the errors; records are the *logged averages*, ``train.log_every`` steps each):

=================  ========  ==================================================================================
code               severity  condition
=================  ========  ==================================================================================
non_finite         error     a ``d/``, ``g/`` or ``lr/`` value is NaN/inf (``null`` in metrics.jsonl), or a
                             network's weights are; the trainer stops, keeps the last good checkpoint, and the
                             verdict names the loss terms and the networks that went bad
loss_explosion     error     ``|value|`` of a loss or mean logit above :data:`EXPLODE_LIMIT` (1e4)
d_loss_stuck       error     ``d/total`` varies by at most :data:`STUCK_TOLERANCE` x max(1, ``|mean|``) over
                             :data:`WINDOW` records while ``lr/d > 0`` (a loss stuck at one value)
d_not_learning     error     D's parameters change by less than :data:`FROZEN_UPDATE` (relative norm,
                             ``health/d_update``) over :data:`WINDOW` records while ``lr/d > 0``
g_not_learning     error     the same for the generator (``health/g_update``)
d_wins             warning   for :data:`WINDOW` records D beats G outright: ``d/adv <=`` :data:`D_WIN_LOSS`, or
                             mean real minus fake logit ``>=`` :data:`D_WIN_GAP` (D accuracy ~1 on both), or
                             ``g/adv >=`` :data:`G_LOSS_HIGH` while ``d/adv`` is below chance (< 2)
d_collapsed       warning   for :data:`WINDOW` records D gives real and fake images the same mean logit
                             (``|real - fake| <=`` :data:`D_COLLAPSE_GAP`): it no longer tells them apart
g_chaotic          warning   over :data:`CHAOS_WINDOW` records ``g/total`` has a high spread
                             (std / max(1, ``|mean|``) ``>=`` :data:`CHAOS_CV`) and no trend (R^2 of a linear fit
                             ``<`` :data:`CHAOS_R2`; lag-1 autocorrelation ``<`` :data:`CHAOS_AUTOCORR`)
mode_collapse      error     an ``eval/.../collapse_score`` (metric ``diversity``) below :data:`COLLAPSE_ERROR`
                   warning   ... or below :data:`COLLAPSE_WARNING`
metric_stalled     info      an ``eval/...`` value moved by at most :data:`STALL_TOLERANCE` (relative) over the last
                             :data:`STALL_EVALS` evaluations (values of real images, the ceilings, are skipped,
                             and so is a value that has reached its ceiling)
=================  ========  ==================================================================================

The suggestions are the standard remedies from the literature: TTUR (Heusel et al. 2017) and a slower D,
spectral norm (Miyato et al. 2018), R1 (Mescheder et al. 2018), feature matching and minibatch
discrimination (Salimans et al. 2016), gradient clipping and lower learning rates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

__all__ = [
    "Verdict",
    "verdict_lines",
    "describe_key",
    "SEVERITIES",
    "SUGGESTIONS",
    "WINDOW",
    "EXPLODE_LIMIT",
    "STUCK_TOLERANCE",
    "FROZEN_UPDATE",
    "D_WIN_LOSS",
    "D_WIN_GAP",
    "G_LOSS_HIGH",
    "D_CHANCE",
    "D_COLLAPSE_GAP",
    "CHAOS_WINDOW",
    "CHAOS_CV",
    "CHAOS_R2",
    "CHAOS_AUTOCORR",
    "COLLAPSE_ERROR",
    "COLLAPSE_WARNING",
    "STALL_EVALS",
    "STALL_TOLERANCE",
    "MAX_TRACKED_PARAMETERS",
]

SEVERITIES = ("info", "warning", "error")

WINDOW = 6  # logged records a persistent condition must last before it is a verdict
EXPLODE_LIMIT = 1e4  # a loss or mean logit this large has left every sane range
STUCK_TOLERANCE = 1e-4  # relative spread of d/total under which D's loss counts as constant
FROZEN_UPDATE = 1e-7  # relative parameter change per logging interval under which a network is frozen
D_WIN_LOSS = 0.05  # D's adversarial loss this close to 0: it classifies every image right
D_WIN_GAP = 6.0  # real minus fake mean logit: sigmoid(3) = 0.95 on each side, D accuracy ~1
G_LOSS_HIGH = 10.0  # G's adversarial loss this high: D rejects fakes with certainty (e^-10)
D_CHANCE = 2.0  # D's adversarial loss at chance is 2 ln 2 = 1.39 (BCE), 2 (hinge), 0.5 (LSGAN): below 2 = better than chance
D_COLLAPSE_GAP = 0.05  # real and fake mean logits this close: D no longer separates them
CHAOS_WINDOW = 10  # records of g/total looked at for chaos
CHAOS_CV = 0.15  # std / max(1, |mean|) at or above which G's loss is called high-variance
CHAOS_R2 = 0.2  # a linear trend explaining less of the variance than this is no trend
CHAOS_AUTOCORR = 0.3  # consecutive values this uncorrelated jump around rather than drift
COLLAPSE_ERROR = 0.25  # diversity/collapse_score below this: captions give (nearly) the same image
COLLAPSE_WARNING = 0.5
STALL_EVALS = 3  # evaluations an eval value must stay flat over
STALL_TOLERANCE = 0.005  # relative spread of an eval value that counts as flat
MAX_TRACKED_PARAMETERS = 200_000_000  # networks larger than this get no health/<x>_update (a copy costs memory)

SUGGESTIONS = {
    "non_finite": "lower the learning rates or set train.grad_clip=1.0, prefer bf16/fp32 over fp16, and resume "
                  "from the last good checkpoint",
    "loss_explosion": "the learning rates are far too high for these networks: lower them (2e-4 is the usual "
                      "start), clip gradients (train.grad_clip=1.0) and add spectral norm to D",
    "d_loss_stuck": "D has stopped learning: check lr/d and its schedule, use a TTUR ratio "
                    "nearer 1:1 or 1:2, lower the feature-matching weight, or switch to the hinge loss",
    "d_not_learning": "D gets no gradient or no step: check that lr/d is not tiny and its parameters require grad; "
                      "after a loss explosion its units saturate (lower the learning rates)",
    "g_not_learning": "G gets no gradient or no step: after a loss explosion its tanh/BN units saturate (lower the "
                      "learning rates, clip gradients); else check lr/g and that its parameters require grad",
    "d_wins": "D wins outright and G gets no useful gradient: lower the D learning rate (TTUR, e.g. lr_d = lr_g / 2), "
              "add spectral norm or an R1 penalty to D, or use fewer D steps",
    "d_collapsed": "D no longer separates real from fake: raise its learning rate or capacity, remove heavy "
                   "regularisation (large R1 / gradient-penalty weights), or check its inputs",
    "g_chaotic": "G's loss oscillates without converging: lower both learning rates, balance G and D (TTUR), "
                 "add spectral norm to D, or reduce the feature-matching weight",
    "mode_collapse": "captions give (nearly) the same image: add minibatch discrimination (progressive's mbstd), "
                     "use the matching-aware term, feature matching at a small weight, or lower lr_g",
    "metric_stalled": "the metric has stopped improving: stop here, or change the recipe rather than train longer",
}

@dataclass
class Verdict:
    """One named problem: what (``code``, ``message``), how bad, when (``first_step``-``last_step``), the
    numbers that show it (``evidence``) and what to try (``suggestion``).

    ``cleared_at``: the first step at which the condition was checked again and no longer held (the next
    logged record, or the next evaluation for an evaluation's verdict); ``None`` while it still holds at
    the latest check, which at the end of a run means it still held when the run ended."""

    code: str
    severity: str
    first_step: int
    last_step: int
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    suggestion: str = ""
    key: str = ""  # what the verdict is about (a metric key, a network), so two of one code stay apart
    cleared_at: int | None = None

    @property
    def cleared(self) -> bool:
        return self.cleared_at is not None

    def line(self, *, status: bool = False) -> str:
        """``[error] d_loss_stuck (steps 200-1200): <message>; try: <suggestion>``; a cleared verdict says
        ``(steps 200-1200, cleared at step 1300)``, and with ``status`` (the end of a run) one that was not
        says ``(steps 200-1200, still holds at the end)``."""
        steps = f"step {self.first_step}" if self.first_step == self.last_step else f"steps {self.first_step}-{self.last_step}"
        if self.cleared_at is not None:
            steps += f", cleared at step {self.cleared_at}"
        elif status:
            steps += ", still holds at the end"
        return f"[{self.severity}] {self.code} ({steps}): {self.message}; try: {self.suggestion}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Verdict":
        cleared = data.get("cleared_at")
        return cls(**{k: data[k] for k in ("code", "severity", "first_step", "last_step", "message")},
                   evidence=dict(data.get("evidence", {})), suggestion=data.get("suggestion", ""),
                   key=data.get("key", ""), cleared_at=None if cleared is None else int(cleared))


def describe_key(key: str) -> str:
    """``g/feature_matching`` -> ``g/feature_matching (term 'feature_matching' of the generator loss)``."""
    side, _, term = key.partition("/")
    network = {"d": "discriminator", "g": "generator", "lr": "learning rate"}.get(side, side)
    if side == "lr":
        return f"{key} (the {network} of {term})"
    if term in ("total",):
        return f"{key} (the {network} loss)"
    if term in ("adv",):
        return f"{key} (the {network}'s adversarial loss)"
    if term.endswith("_logit"):
        return f"{key} (the {network}'s output)"
    return f"{key} (term '{term}' of the {network} loss)"


def verdict_lines(verdicts: list[Verdict]) -> list[str]:
    """Markdown bullets for the end of a run: those that still hold first, then those that cleared, each
    group most severe first, every line saying when it started and whether it cleared; one line saying so
    when there is nothing to report."""
    if not verdicts:
        return ["No problems detected (checks: " + ", ".join(SUGGESTIONS) + ")."]
    ordered = sorted(verdicts, key=lambda v: (v.cleared, -SEVERITIES.index(v.severity), v.first_step))
    return [f"- {v.line(status=True)}" for v in ordered]
