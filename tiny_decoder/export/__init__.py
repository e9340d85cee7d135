"""Trained models in formats other runtimes read: a plain Llama folder (llama.py) that transformers, vLLM, TGI
and every Llama tool load without custom code."""
