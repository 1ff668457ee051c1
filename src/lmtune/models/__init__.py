"""Backbones: bundled pretrained models, local folders, GGUF files, hub ids; tiny random models for tests."""

from lmtune.models.loading import Backbone, load_backbone, resolve_model_path

__all__ = ["Backbone", "load_backbone", "resolve_model_path"]
