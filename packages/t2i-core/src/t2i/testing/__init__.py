"""The conformance kit: does a registered component keep its side of the contract in :mod:`t2i.interfaces`?

Import it in a plugin's own tests. One line per component::

    from t2i.testing import check_generator, check_training_step

    def test_my_generator():
        check_generator("sagan", {"ch": 8})               # every declared resolution <= 64, and 128

    def test_my_generator_trains():
        check_training_step(generator="sagan", generator_options={"ch": 8})

    def test_my_loss_with_terms():                         # an adversarial loss with weighted terms
        check_training_step(loss="hinge", terms={"r1": 1.0, "matching_aware": 0.5})

A plugin with variants (options that change the architecture) checks each one::

    @pytest.mark.parametrize("options", [{"conditioning": "concat"}, {"conditioning": "projection"}])
    def test_discriminator_variant(options):
        check_discriminator("dcgan", options)

Or cover every registered component, including ones installed after the test was written, with no new
test code (timm's recipe: parametrize over the registry itself)::

    import pytest
    import t2i.testing as kit

    @pytest.mark.parametrize("name", kit.registered("generators", "mine*"))   # or plugin="t2i-mine"
    def test_generator(name):
        kit.check_generator(name, resolutions=(32, 64))

:func:`registered` never returns an empty list: when nothing matches (the plugin is not installed, its
entry point in the group ``t2i`` is missing, the pattern is wrong), it fails the collection with a
message saying what to check, where an empty parameter set would make pytest skip the test and pass.

Small options for tests. A component can declare the options that make it cheap to test when it
registers, and every check uses them (explicit ``options`` are merged over them)::

    register("sagan", SAGANGenerator, config=SAGANGeneratorConfig, test_options={"ch": 8})

What is checked (each check raises :class:`AssertionError` naming the component and every broken
property, and returns a :class:`Report` of what passed):

- every component: it was registered as a class (or a factory function), not an instance; its config is a
  dataclass whose defaults are of their annotated types (``ngf: int = 16.0`` is not); each option has
  help (what ``t2i describe`` prints).
- generators and discriminators: a resolution they do not declare is refused with a one-line
  ``ValueError``; at each supported resolution (default: every declared resolution <= 64, plus 128 if
  declared): the attributes the engine reads (``resolution``, ``text_dim``, and a generator's ``z_dim``, a
  positive int), output shape, dtype and finiteness, ``[-1, 1]`` for images, ``(B,)`` logits and a
  :class:`~t2i.interfaces.DiscOutput` for discriminators (features when ``provides_features``,
  ``mismatched_logits`` when mismatched text is given); gradients reach every trainable parameter (and
  the input image, for gradient penalties); the text (and the noise) change the output; two builds
  under one ``torch.manual_seed`` are identical; a state-dict round trip through safetensors (as
  checkpoints do) reproduces the outputs; a batch of one in eval mode; CPU bf16 autocast;
  ``channels_last``. Progressive networks are checked across their growth schedule (``on_train_step``).
  A network that ``uses_words`` is built with ``word_dim = text_dim`` and called with random
  :class:`~t2i.interfaces.WordFeatures` throughout; it must also work with words of several lengths, depend
  on them, and (unless it declares ``masks_words = False``) ignore what lies at padding positions. A
  multi-scale generator's outputs all enter the gradient check; a multi-scale discriminator is given an
  image pyramid and its per-scale outputs are checked summed.
- text encoders with word features (``word_dim``): ``forward_words`` gives ``forward``'s embeddings and
  ``(N, L, word_dim)`` finite features with a bool mask, a real token in every row, rows independent.
- text encoders, losses, data sets and metrics: their interface, with the same spirit (see each check).
- :func:`check_training_step`: a few real steps of the engine (:class:`t2i.engine.trainer.Trainer`), with
  an adversarial loss and weighted terms, each of which must be logged.
- :func:`check_pair`: a generator with a discriminator. The pairs the engine must refuse
  (:func:`refusal_expected`: a progressive network with a fixed-resolution one, either way round, or
  networks that share no resolution) must be refused with a one-line error; any other pair must train,
  and its refusal is a failure.

Conditioning and gradients are checked on a copy whose weights are slightly perturbed, so that a
layer that starts at zero (DF-GAN's affine fusion, a zero-initialised gate) is not mistaken for an
unused one, while a layer that is never used, or a caption that is never read, is still caught.

Every check restores torch's global RNG state when it returns, so it does not disturb the caller's
seeding. Everything runs on the CPU.

Where each part lives: :mod:`~t2i.testing.generators`, :mod:`~t2i.testing.discriminators` (and what
they share, :mod:`~t2i.testing.networks`), :mod:`~t2i.testing.text`, :mod:`~t2i.testing.losses`,
:mod:`~t2i.testing.data` (data sets and metrics), :mod:`~t2i.testing.training`,
:mod:`~t2i.testing.pairs`, the toy networks in
:mod:`~t2i.testing.toys`, and the :class:`Report` with the helpers every check uses in ``_common``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._common import Report, default_options, registered
from .data import check_dataset, check_metric
from .discriminators import check_discriminator
from .generators import check_generator
from .loggers import check_logger
from .losses import KNOWN_NEEDS, check_loss
from .pairs import check_pair, refusal_expected
from .text import check_text_encoder
from .toys import TOY, ToyConfig, ToyDiscriminator, ToyGenerator
from .training import check_training_step

__all__ = [
    "Report",
    "registered",
    "default_options",
    "check_generator",
    "check_discriminator",
    "check_text_encoder",
    "check_loss",
    "check_dataset",
    "check_metric",
    "check_logger",
    "check_training_step",
    "check_pair",
    "refusal_expected",
    "check_component",
    "CHECKS",
    "KNOWN_NEEDS",
    "ToyConfig",
    "ToyGenerator",
    "ToyDiscriminator",
    "TOY",
]

# One entry point per kind
CHECKS: dict[str, Callable[..., Report]] = {
    "generators": check_generator,
    "discriminators": check_discriminator,
    "text_encoders": check_text_encoder,
    "losses": check_loss,
    "datasets": check_dataset,
    "metrics": check_metric,
    "loggers": check_logger,
}


def check_component(kind: str, name: str, options: Mapping[str, Any] | None = None, **kwargs: Any) -> Report:
    """Run the check of ``kind`` (``"generators"``, ``"losses"``, ...) on ``name``."""
    if kind not in CHECKS:
        raise KeyError(f"unknown component kind {kind!r}; kinds: {', '.join(CHECKS)}")
    return CHECKS[kind](name, options, **kwargs)
