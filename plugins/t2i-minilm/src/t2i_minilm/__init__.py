"""t2i-minilm: the ``minilm`` text encoder, a frozen sentence-transformers model (all-MiniLM-L6-v2 by default).

The names below are imported on first use, so loading the plugin (``t2i --help``, ``t2i list``) does
not import the networks.
"""

from t2i.lazy import lazy_exports

# name -> the submodule that defines it
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "MiniLMConfig": "encoder",
    "MiniLMEncoder": "encoder",
})
