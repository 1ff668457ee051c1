"""An LSTM language model as a transformers model: its own config class, a body that returns `last_hidden_state`
(so `lmtune train` pools it for a classification head like any decoder) and a causal-LM head.

Importing this module registers `lmtune_lstm` with AutoConfig, AutoModel and AutoModelForCausalLM, so a saved
folder loads with `AutoModel.from_pretrained(folder)` — in any process that imported it (lmtune's model loader
does, see docs/pretrain.md).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

MODEL_TYPE = "lmtune_lstm"


class LstmLMConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, vocab_size: int = 8000, hidden_size: int = 512, num_hidden_layers: int = 2, dropout: float = 0.1,
                 pad_token_id: int | None = None, bos_token_id: int | None = None, eos_token_id: int | None = None,
                 tie_word_embeddings: bool = True, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.dropout = dropout
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)


class LstmPreTrainedModel(PreTrainedModel):
    config_class = LstmLMConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LSTM):
            bound = 1 / module.hidden_size ** 0.5
            for name, param in module.named_parameters():
                nn.init.uniform_(param, -bound, bound)
                if name.startswith("bias_ih"):  # forget-gate bias 1: remember by default
                    with torch.no_grad():
                        param[module.hidden_size : 2 * module.hidden_size].fill_(1.0)


class LstmModel(LstmPreTrainedModel):
    """Embeddings → stacked LSTM → hidden states. Causal by construction: right padding never changes the states of
    real tokens (the attention mask is accepted and not needed)."""

    def __init__(self, config: LstmLMConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.hidden_size, config.hidden_size, num_layers=config.num_hidden_layers,
                            dropout=config.dropout if config.num_hidden_layers > 1 else 0.0, batch_first=True)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_hidden_states=None,
                return_dict=None, **kwargs) -> BaseModelOutput:
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        hidden, _ = self.lstm(self.dropout(inputs_embeds))
        hidden = self.dropout(hidden)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=(hidden,) if output_hidden_states else None)


class LstmForCausalLM(LstmPreTrainedModel):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LstmLMConfig):
        super().__init__(config)
        self.model = LstmModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(self, input_ids=None, attention_mask=None, labels=None, inputs_embeds=None, **kwargs) -> CausalLMOutput:
        hidden = self.model(input_ids=input_ids, inputs_embeds=inputs_embeds).last_hidden_state
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return CausalLMOutput(loss=loss, logits=logits)


def register() -> None:
    AutoConfig.register(MODEL_TYPE, LstmLMConfig, exist_ok=True)
    AutoModel.register(LstmLMConfig, LstmModel, exist_ok=True)
    AutoModelForCausalLM.register(LstmLMConfig, LstmForCausalLM, exist_ok=True)


register()
