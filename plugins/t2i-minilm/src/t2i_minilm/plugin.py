"""t2i hooks: registers the ``minilm`` text encoder.

The classes are named by reference (``"module:Name"``): t2i imports them when a component is first
built or described, so ``t2i --help`` and ``t2i list`` do not load the networks.
"""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_text_encoders(register):
    register(
        "minilm",
        "t2i_minilm.encoder:MiniLMEncoder",
        config="t2i_minilm.encoder:MiniLMConfig",
        help="Frozen sentence-transformers embeddings: all-MiniLM-L6-v2 (384-d, bundled, offline) or any local model",
    )
