"""The core's text encoders, registered through the same hook as any plugin's.

Any of them takes a trainable head between it and the networks with ``-T head=mlp`` (or ``linear``;
``head_dim``, ``head_dropout``): the engine adds it (:mod:`t2i.text.head`).
"""

from ..hookspecs import hookimpl
from ..text.bow import BagOfWords, BagOfWordsConfig
from ..text.clip_encoder import ClipTextConfig, ClipTextEncoder
from ..text.gru import GRUConfig, GRUEncoder
from ..text.precomputed import Precomputed, PrecomputedConfig


@hookimpl
def t2i_register_text_encoders(register):
    register("bow", BagOfWords, config=BagOfWordsConfig,
             help="Bag of words over a vocabulary built from the training captions (frozen or trained with D); "
                  "optional GloVe initialisation (glove=PATH)")
    register("gru", GRUEncoder, config=GRUConfig,
             help="Bidirectional GRU over a vocabulary built from the training captions, trained with D "
                  "(AttnGAN's sentence encoder); <unk> for unseen words; optional GloVe initialisation (glove=PATH)",
             test_options={"dim": 16, "word_dim": 8})
    register("precomputed", Precomputed, config=PrecomputedConfig,
             help="Embeddings read from a file, one row per caption (.pt, .npz, or .npy + captions .txt); frozen")
    register("clip", ClipTextEncoder, config=ClipTextConfig,
             help="Frozen open-clip text tower (any model name or JSON config; weights=PATH, $T2I_CLIP_WEIGHTS or a "
                  "pretrained tag; OpenAI weights need a -quickgelu model or quick_gelu=true); embeddings cached")
