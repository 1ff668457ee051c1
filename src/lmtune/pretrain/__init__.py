"""The first stage of transfer learning: tokenizers, pre-training from scratch, continued pre-training."""
