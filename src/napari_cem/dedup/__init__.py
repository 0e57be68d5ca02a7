"""Near-duplicate detection: dHash (imagehash-compatible), Hamming distances, grouping."""

from ._dhash import dhash, hamming, hash_to_hex, hashes_to_hex, hex_to_hash
from ._grouping import METHODS, Grouping, group_components, group_greedy, group_hashes

__all__ = [
    "METHODS",
    "Grouping",
    "dhash",
    "group_components",
    "group_greedy",
    "group_hashes",
    "hamming",
    "hash_to_hex",
    "hashes_to_hex",
    "hex_to_hash",
]
