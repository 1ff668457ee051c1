"""The networks `lmtune pretrain model` builds from random weights, one registered class each: a new architecture
is one class here with `@register_architecture`, nothing else changes."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from lmtune.config.schema import StrictModel
from lmtune.registry import Registry


class ArchConfig(StrictModel):
    # It lives beside the registry it validates against (the way a strategy's config lives in its file), so the
    # pretrain configs import the architectures and never the other way round.
    arch: str = "llama"
    """The network: `llama` or `gpt2` (decoder, causal LM), `bert` (encoder, masked LM), `lstm` (recurrent LM)."""
    layers: int = Field(4, gt=0)
    """Transformer blocks or LSTM layers."""
    hidden: int = Field(256, gt=0)
    """Hidden size (also the embedding size)."""
    heads: int = Field(4, gt=0)
    """Attention heads (transformers only)."""
    kv_heads: int | None = Field(None, gt=0)
    """Llama only: key/value heads (grouped-query attention); none uses `heads`."""
    intermediate: int | None = Field(None, gt=0)
    """Feed-forward width; none takes 4 × hidden (GPT-2, BERT) or about 8/3 × hidden (Llama)."""
    max_positions: int = Field(512, gt=0)
    """Longest sequence the model can take (position embeddings, RoPE cache); fine-tuning inputs too."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout (GPT-2, BERT, LSTM; Llama has none)."""
    tie_embeddings: bool = True
    """Share the input embedding and the output layer's weights."""

    @field_validator("arch")
    @classmethod
    def _registered(cls, value: str) -> str:
        _ARCHITECTURES.get(value)  # unknown names: "did you mean", and the known ones
        return value


class Architecture:
    name: ClassVar[str]
    objective: ClassVar[Literal["causal", "masked"]] = "causal"
    """`causal`: predict the next token; `masked`: predict masked tokens (BERT)."""
    tokenizer_style: ClassVar[Literal["decoder", "encoder"]] = "decoder"
    """The special tokens the architecture needs (encoders want [CLS]/[SEP]/[MASK])."""
    summary: ClassVar[str] = ""

    def __init__(self, cfg: ArchConfig):
        self.cfg = cfg

    def config(self, tokenizer):
        raise NotImplementedError

    def model_class(self):
        raise NotImplementedError

    def build(self, tokenizer):
        """A randomly initialised model with its LM head, sized by the config, for this tokenizer."""
        return self.model_class()(self.config(tokenizer))


_ARCHITECTURES: Registry[Architecture] = Registry("architecture")


def register_architecture(cls: type[Architecture]) -> type[Architecture]:
    return _ARCHITECTURES.register(cls)


def build_architecture(cfg: ArchConfig) -> Architecture:
    return _ARCHITECTURES.get(cfg.arch)(cfg)


def registered_architectures() -> dict[str, type[Architecture]]:
    return _ARCHITECTURES.all()


def _ids(tokenizer) -> dict:
    return {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}


@register_architecture
class Llama(Architecture):
    name = "llama"
    summary = "Llama-style decoder: RMSNorm, RoPE, SwiGLU, grouped-query attention; causal LM"

    def config(self, tokenizer):
        from transformers import LlamaConfig

        c = self.cfg
        intermediate = c.intermediate or 64 * round(8 * c.hidden / 3 / 64) or 2 * c.hidden
        return LlamaConfig(
            hidden_size=c.hidden, intermediate_size=intermediate, num_hidden_layers=c.layers, num_attention_heads=c.heads,
            num_key_value_heads=c.kv_heads or c.heads, max_position_embeddings=c.max_positions,
            tie_word_embeddings=c.tie_embeddings, architectures=["LlamaForCausalLM"], **_ids(tokenizer),
        )

    def model_class(self):
        from transformers import LlamaForCausalLM

        return LlamaForCausalLM


@register_architecture
class Gpt2(Architecture):
    name = "gpt2"
    summary = "GPT-2-style decoder: LayerNorm, learned positions, GELU MLP; causal LM"

    def config(self, tokenizer):
        from transformers import GPT2Config

        c = self.cfg
        return GPT2Config(
            n_embd=c.hidden, n_layer=c.layers, n_head=c.heads, n_inner=c.intermediate, n_positions=c.max_positions,
            resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout, tie_word_embeddings=c.tie_embeddings,
            architectures=["GPT2LMHeadModel"], **_ids(tokenizer),
        )

    def model_class(self):
        from transformers import GPT2LMHeadModel

        return GPT2LMHeadModel


@register_architecture
class Bert(Architecture):
    name = "bert"
    objective = "masked"
    tokenizer_style = "encoder"
    summary = "BERT-style encoder; masked-LM objective"

    def config(self, tokenizer):
        from transformers import BertConfig

        c = self.cfg
        return BertConfig(
            vocab_size=len(tokenizer), hidden_size=c.hidden, num_hidden_layers=c.layers, num_attention_heads=c.heads,
            intermediate_size=c.intermediate or 4 * c.hidden, max_position_embeddings=c.max_positions,
            hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.dropout, pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=c.tie_embeddings, architectures=["BertForMaskedLM"],
        )

    def model_class(self):
        from transformers import BertForMaskedLM

        return BertForMaskedLM


@register_architecture
class Lstm(Architecture):
    name = "lstm"
    summary = "stacked LSTM language model (the recurrent alternative); causal LM"

    def config(self, tokenizer):
        from lmtune.models.lstm import LstmLMConfig

        c = self.cfg
        return LstmLMConfig(
            hidden_size=c.hidden, num_hidden_layers=c.layers, dropout=c.dropout, tie_word_embeddings=c.tie_embeddings,
            architectures=["LstmForCausalLM"], **_ids(tokenizer),
        )

    def model_class(self):
        from lmtune.models.lstm import LstmForCausalLM

        return LstmForCausalLM
