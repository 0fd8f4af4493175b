"""The core's text encoders, registered through the same hook as any plugin's."""

from ..hookspecs import hookimpl
from ..text.bow import BagOfWords, BagOfWordsConfig
from ..text.precomputed import Precomputed, PrecomputedConfig


@hookimpl
def t2i_register_text_encoders(register):
    register("bow", BagOfWords, config=BagOfWordsConfig,
             help="Bag of words over a vocabulary built from the training captions (frozen or trained with D)")
    register("precomputed", Precomputed, config=PrecomputedConfig,
             help="Embeddings read from a file, one row per caption (.pt, .npz, or .npy + captions .txt); frozen")
