"""HAP-VR model core: frame encoder, similarity network and the AP-oriented losses.

The public surface is small on purpose: the indexer only needs an encoder
(`build_encoder`) and a similarity network (`HAPVRSimilarity`); training needs
`model.losses`.
"""
from model.encoder import FrameEncoder, build_encoder
from model.similarity import HAPVRSimilarity

__all__ = ["FrameEncoder", "build_encoder", "HAPVRSimilarity"]
