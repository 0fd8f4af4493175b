"""The core's evaluation metrics: numbers about a generator, each returned with the protocol that made it.

- :mod:`.shapes_reader`: the attribute classifier ("reader") of the built-in Shapes data, trained by t2i,
  cached on disk and reused;
- :mod:`.shapes_accuracy`: generated images read back against the attributes their captions asked for;
- :mod:`.diversity`: mode collapse as a number (pairwise distances within and between captions).
"""
