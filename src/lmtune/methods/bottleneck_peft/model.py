"""The tuner: finds the target modules, wraps them in `BottleneckLayer`, and routes `adapter_names` to them."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

from peft.tuners.tuners_utils import BaseTuner

from lmtune.methods.bottleneck_peft.config import BOTTLENECK_PLACEMENTS, BottleneckConfig, placement_targets
from lmtune.methods.bottleneck_peft.layer import BASE_ROW, BottleneckLayer


def _adapter_names_pre_forward_hook(module, args, kwargs, adapter_names):
    kwargs["adapter_names"] = adapter_names
    return args, kwargs


class BottleneckModel(BaseTuner):
    """Modelled on PEFT's simple tuners (LN tuning, IA3, RoAd); see `bottleneck_peft/__init__.py` for why it exists."""

    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckLayer
    # PEFT's interface wants a per-architecture mapping; ours depends on the placement too (_prepare_adapter_config).
    target_module_mapping = BOTTLENECK_PLACEMENTS

    def _prepare_adapter_config(self, peft_config: BottleneckConfig, model_config: dict) -> BottleneckConfig:
        if peft_config.target_modules is None:
            peft_config.target_modules = placement_targets(model_config["model_type"], peft_config.placement)
        return peft_config

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(target, BottleneckLayer):  # a second adapter on an already wrapped module
            target.update_layer(adapter_name, peft_config)
            return
        new_module = BottleneckLayer(target, adapter_name, peft_config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)  # an added adapter is not trainable until it is set active
        self._replace_module(parent, target_name, new_module, target)

    @contextmanager
    def _enable_peft_forward_hooks(self, *args, **kwargs):
        """`model(..., adapter_names=[...])`: give every bottleneck layer the per-row adapter names for this call.

        PEFT's own tuners (LoRA, RoAd) do the same: PeftModel.forward strips `adapter_names` from the base model's
        arguments and enters this context, whose forward pre-hooks put it back into each tuner layer's kwargs."""
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is None:
            yield
            return
        if self.training:
            raise ValueError("Cannot pass `adapter_names` when the model is in training mode.")
        layers = [m for m in self.modules() if isinstance(m, BottleneckLayer)]
        known = set().union(*(layer.bottleneck_down.keys() for layer in layers))
        unknown = set(adapter_names) - known - {BASE_ROW}
        if unknown:
            raise ValueError(f"Trying to infer with non-existing adapter(s): {', '.join(sorted(unknown))}")
        hook = partial(_adapter_names_pre_forward_hook, adapter_names=adapter_names)
        handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

