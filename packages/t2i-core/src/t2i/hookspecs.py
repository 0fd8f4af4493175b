"""The hooks a t2i plugin can implement. One hook per component kind, each given a ``register`` callback.

A plugin is a module with ``@t2i.hookimpl`` functions, named by an entry point in the ``t2i`` group::

    @t2i.hookimpl
    def t2i_register_generators(register):
        register("sagan", "t2i_sagan.models:SAGANGenerator", config="t2i_sagan.models:SAGANGeneratorConfig",
                 help="Self-attention generator")

``register(name, factory, *, config=None, help="", **metadata)``: ``factory(cfg, **context)`` builds the
component from an instance of the ``config`` dataclass (or with no config argument when there is none).
``factory`` and ``config`` are the objects or, better, ``"package.module:Name"`` references: t2i imports
them when the component is first built or described, so ``t2i --help`` and ``t2i list`` load no network.
Keep the plugin module (and its package's ``__init__``) free of heavy imports for the same reason.

``register`` refuses (:class:`t2i.errors.RegistrationError`) a name that is not lowercase letters, digits,
``_`` and ``-``; an instance where a class or function is expected; a config that is not a dataclass
class, or whose defaults contradict their annotations (``ngf: int = 16.0``, a ``Literal`` default outside
its choices). References are checked the same way when they are imported. A refused registration, or any
exception raised by a hook, unloads that plugin alone: what it registered is taken back and ``t2i plugins``
shows why. A misspelled hook name is skipped with a warning; the plugin's other hooks load.

A loss's role comes from its class (:func:`t2i.interfaces.loss_role`): an ``AdversarialLoss`` is chosen
with ``--loss``, any other ``LossTerm`` is added with ``--term``.

Metadata keys t2i reads (all optional):

- ``test_options``: small options for the conformance kit (:mod:`t2i.testing`), e.g. ``{"ngf": 8}``;
- ``test_evaluate``: for metrics, ``True`` when evaluating is cheap enough for the kit to run it;
- ``test_generator``, ``test_discriminator``, ``test_generator_options``: for losses that need particular
  networks (e.g. ``ca_kl`` needs a generator with conditioning augmentation), what the kit trains them with.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("t2i")
hookimpl = pluggy.HookimplMarker("t2i")


@hookspec
def t2i_register_text_encoders(register):
    """Register text encoders: captions -> embeddings (see :class:`t2i.interfaces.TextEncoder`)."""


@hookspec
def t2i_register_generators(register):
    """Register generators: noise + text embedding -> image (see :class:`t2i.interfaces.Generator`)."""


@hookspec
def t2i_register_discriminators(register):
    """Register discriminators: image + text embedding -> :class:`t2i.interfaces.DiscOutput`."""


@hookspec
def t2i_register_losses(register):
    """Register adversarial losses and weighted loss terms (see :class:`t2i.interfaces.LossTerm`)."""


@hookspec
def t2i_register_metrics(register):
    """Register evaluation metrics (see :class:`t2i.interfaces.Metric`)."""


@hookspec
def t2i_register_datasets(register):
    """Register captioned-image data sets (see :class:`t2i.interfaces.Dataset`)."""


@hookspec
def t2i_register_loggers(register):
    """Register experiment trackers a run reports to (see :class:`t2i.loggers.Logger`; ``t2i run --logger``)."""


@hookspec
def t2i_register_commands(app):
    """Add commands to the ``t2i`` Typer app (``app.command()(fn)`` or ``app.add_typer(sub, name=...)``)."""
