"""The model: exactly the files a saved model folder carries as remote code.

configuration_tiny_decoder (every architectural choice, named) -> modeling_tiny_decoder (attention, MLP,
Block, the HF classes) with its pieces: positions, norms, residuals, linear_attention, early_exit. These
files import each other with single-dot imports only, so they work as this package and flat inside a
saved folder (transformers copies a module's same-folder relative imports). This __init__ is not shipped.
"""

from .configuration_tiny_decoder import TinyDecoderConfig
from .modeling_tiny_decoder import (
    AUTO_CLASSES,
    TinyDecoderForCausalLM,
    TinyDecoderForQuestionAnswering,
    TinyDecoderForSequenceClassification,
    TinyDecoderForTokenClassification,
    TinyDecoderModel,
    TinyDecoderPreTrainedModel,
)

__all__ = [
    "AUTO_CLASSES",
    "TinyDecoderConfig",
    "TinyDecoderForCausalLM",
    "TinyDecoderForQuestionAnswering",
    "TinyDecoderForSequenceClassification",
    "TinyDecoderForTokenClassification",
    "TinyDecoderModel",
    "TinyDecoderPreTrainedModel",
]
