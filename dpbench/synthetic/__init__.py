"""Synthetic text shared by the methods that generate it: prompts from public seed texts,
the generator options, monitoring and similarity on embeddings. Plugins import these names
from ``dpbench.toolkit``."""
