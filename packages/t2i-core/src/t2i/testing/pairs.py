"""The G x D pair check: a generator trains with a discriminator, unless the pair is one the engine must
refuse, and then the engine refuses it.

Which pairs must be refused is read from what the two networks declare (their registered classes'
``progressive`` and ``resolutions``), so a newly installed network is covered with no new test code:

- a progressively grown network with a fixed-resolution one, either way round (the grown network works
  at a resolution the other does not follow);
- two networks that declare no resolution in common.

Every other pair must train. A refusal of such a pair is a failure, not a skip: a network that refuses
a partner it should work with is a bug, whatever its one-line message says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import UsageError
from ._common import _declared_resolutions, _one_line, _progressive
from .toys import _toys_registered
from .training import check_training_step

__all__ = ["refusal_expected", "check_pair"]


def refusal_expected(generator: str, discriminator: str) -> str | None:
    """Why the engine must refuse to train registered ``generator`` with ``discriminator``, or ``None``."""
    g_grows, d_grows = _progressive("generators", generator), _progressive("discriminators", discriminator)
    if g_grows and not d_grows:
        return f"generator '{generator}' grows progressively and discriminator '{discriminator}' does not"
    if d_grows and not g_grows:
        return f"discriminator '{discriminator}' grows progressively and generator '{generator}' does not"
    g_res = _declared_resolutions("generators", generator)
    d_res = _declared_resolutions("discriminators", discriminator)
    if not set(g_res) & set(d_res):
        return (
            f"generator '{generator}' ({', '.join(map(str, g_res))} px) and discriminator '{discriminator}' "
            f"({', '.join(map(str, d_res))} px) share no resolution"
        )
    return None


def check_pair(
    generator: str,
    discriminator: str,
    *,
    generator_options: Mapping[str, Any] | None = None,
    discriminator_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Train ``generator`` against ``discriminator`` with the engine, or check that the engine refuses them.

    A pair that :func:`refusal_expected` names must be refused before step 1 with a one-line
    :class:`~t2i.errors.UsageError`; then it returns ``None``. Any other pair goes through
    :func:`~t2i.testing.check_training_step` (``kwargs`` are passed on) and its ``RunResult`` is
    returned; if the engine refuses it, that is an :class:`AssertionError` naming the pair and the refusal.
    """
    label = f"generator '{generator}' with discriminator '{discriminator}'"
    options = {"generator_options": generator_options, "discriminator_options": discriminator_options}
    with _toys_registered():
        reason = refusal_expected(generator, discriminator)
        try:
            result = check_training_step(generator, discriminator, **options, **kwargs)
        except UsageError as exc:
            message = _one_line(exc)
            if reason is None:
                raise AssertionError(
                    f"{label}: the engine refuses a pair that should train ({message}); the only pairs to "
                    f"refuse are a progressive network with a fixed-resolution one, and networks that share "
                    f"no resolution"
                ) from None
            assert "\n" not in str(exc), f"{label}: the refusal is not one line: {exc}"
            return None
    assert reason is None, f"{label}: trained, but the engine must refuse it: {reason}"
    return result
