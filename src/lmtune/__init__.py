"""lmtune: transfer learning with language models."""

__version__ = "0.1.0"
