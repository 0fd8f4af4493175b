"""t2i-minilm: the ``minilm`` text encoder, a frozen sentence-transformers model (all-MiniLM-L6-v2 by default)."""

from .encoder import MiniLMConfig, MiniLMEncoder

__all__ = ["MiniLMConfig", "MiniLMEncoder"]
