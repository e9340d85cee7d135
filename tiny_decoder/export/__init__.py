"""Trained models in formats other runtimes read: a plain Llama folder (llama.py) that transformers, vLLM, TGI and
every Llama tool load without custom code, one GGUF file for llama.cpp (gguf.py), an ONNX decoder for ONNX Runtime
(onnx.py)."""

from .source import check_finite_weights, load_tiny_decoder

__all__ = ["check_finite_weights", "load_tiny_decoder"]
