"""Training and evaluation: data, training stages and metrics.

``corpus`` writes the synthetic dyadic corpus (our layout, documented there), ``datasets``
reads dyadic conversations in our layout or DualTalk's, ``metrics`` holds the face metrics
(reconstruction error, codebook perplexity, the DualTalk protocol, lip sync). Submodules are
imported on use, so importing ``facebot.train`` pulls in neither espeak-ng nor soundfile.
"""
