"""tiny-decoder: a from-scratch decoder-only transformer that behaves like any Hub causal LM.

Importing the package registers the classes with transformers' Auto* factories, and marks
them for `register_for_auto_class`, so `save_pretrained` also writes the modeling source and
`auto_map` (the folder then loads with `trust_remote_code=True` where this package is absent).
"""

import transformers
from transformers import AutoConfig

from .model import (
    AUTO_CLASSES,
    TinyDecoderConfig,
    TinyDecoderForCausalLM,
    TinyDecoderForQuestionAnswering,
    TinyDecoderForSequenceClassification,
    TinyDecoderForTokenClassification,
    TinyDecoderModel,
    TinyDecoderPreTrainedModel,
)

AutoConfig.register(TinyDecoderConfig.model_type, TinyDecoderConfig, exist_ok=True)
TinyDecoderConfig.register_for_auto_class()
for _auto, _cls in AUTO_CLASSES.items():
    getattr(transformers, _auto).register(TinyDecoderConfig, _cls, exist_ok=True)
    _cls.register_for_auto_class(_auto)

__all__ = [
    "TinyDecoderConfig",
    "TinyDecoderModel",
    "TinyDecoderForCausalLM",
    "TinyDecoderForSequenceClassification",
    "TinyDecoderForTokenClassification",
    "TinyDecoderForQuestionAnswering",
    "TinyDecoderPreTrainedModel",
]
__version__ = "0.1.0"
