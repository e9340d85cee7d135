"""tiny-decoder: a from-scratch decoder-only transformer that behaves like any Hub causal LM.

Importing the package registers the classes with transformers' Auto* factories, and marks
them for `register_for_auto_class`, so `save_pretrained` also writes the modeling source and
`auto_map` (the folder then loads with `trust_remote_code=True` where this package is absent).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_tiny_decoder import TinyDecoderConfig
from .modeling_tiny_decoder import TinyDecoderForCausalLM, TinyDecoderModel, TinyDecoderPreTrainedModel

AutoConfig.register(TinyDecoderConfig.model_type, TinyDecoderConfig, exist_ok=True)
AutoModel.register(TinyDecoderConfig, TinyDecoderModel, exist_ok=True)
AutoModelForCausalLM.register(TinyDecoderConfig, TinyDecoderForCausalLM, exist_ok=True)

TinyDecoderConfig.register_for_auto_class()
TinyDecoderModel.register_for_auto_class("AutoModel")
TinyDecoderForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["TinyDecoderConfig", "TinyDecoderModel", "TinyDecoderForCausalLM", "TinyDecoderPreTrainedModel"]
__version__ = "0.1.0"
