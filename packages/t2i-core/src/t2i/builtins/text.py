"""The core's text encoders, registered through the same hook as any plugin's.

Any of them takes a trainable head between it and the networks with ``-T head=mlp`` (or ``linear``;
``head_dim``, ``head_dropout``): the engine adds it (:mod:`t2i.text.head`).

Factories and configs are named by reference (``"module:Name"``) so that listing them imports nothing heavy.
"""

from ..hookspecs import hookimpl


@hookimpl
def t2i_register_text_encoders(register):
    register("bow", "t2i.text.bow:BagOfWords", config="t2i.text.bow:BagOfWordsConfig",
             help="Bag of words over a vocabulary built from the training captions (frozen or trained with D); "
                  "optional GloVe initialisation (glove=PATH)")
    register("gru", "t2i.text.gru:GRUEncoder", config="t2i.text.gru:GRUConfig",
             help="Bidirectional GRU over a vocabulary built from the training captions, trained with D "
                  "(AttnGAN's sentence encoder); <unk> for unseen words; optional GloVe initialisation (glove=PATH)",
             test_options={"dim": 16, "word_dim": 8})
    register("precomputed", "t2i.text.precomputed:Precomputed",
             config="t2i.text.precomputed:PrecomputedConfig",
             help="Embeddings read from a file, one row per caption (.pt, .npz, or .npy + captions .txt); frozen")
    register("clip", "t2i.text.clip_encoder:ClipTextEncoder", config="t2i.text.clip_encoder:ClipTextConfig",
             help="Frozen open-clip text tower (any model name or JSON config; weights=PATH, $T2I_CLIP_WEIGHTS or a "
                  "pretrained tag; OpenAI weights need a -quickgelu model or quick_gelu=true); embeddings cached")
