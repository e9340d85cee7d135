"""Trained models in formats other runtimes read: a plain Llama folder (llama.py) that transformers, vLLM, TGI and
every Llama tool load without custom code, one GGUF file for llama.cpp (gguf.py), an ONNX decoder for ONNX Runtime
(onnx.py)."""


def load_tiny_decoder(source: str):
    """(model in eval mode, tokenizer) of a saved tiny-decoder folder or Hub name, refused in one line if it is
    missing or another kind of model: the first step of every export."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..cli import check_model_source
    from ..model import TinyDecoderForCausalLM

    check_model_source(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    if not isinstance(model, TinyDecoderForCausalLM):
        raise ValueError(f"{source!r} is a {type(model).__name__}, not a tiny-decoder model; it needs no export.")
    return model.eval(), AutoTokenizer.from_pretrained(source)
