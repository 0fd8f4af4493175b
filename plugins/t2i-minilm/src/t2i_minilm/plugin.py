"""t2i hooks: registers the ``minilm`` text encoder."""

from __future__ import annotations

from t2i.hookspecs import hookimpl

from .encoder import MiniLMConfig, MiniLMEncoder


@hookimpl
def t2i_register_text_encoders(register):
    register(
        "minilm",
        MiniLMEncoder,
        config=MiniLMConfig,
        help="Frozen sentence-transformers embeddings: all-MiniLM-L6-v2 (384-d, bundled, offline) or any local model",
    )
