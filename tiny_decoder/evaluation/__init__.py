"""Measuring models: perplexity with sliding windows (perplexity.py), loss over token blocks (loss.py),
sampling (sampling.py), generation speed and memory (speed.py), FLOPs and matmul rates (throughput.py), early-exit decoding (early_exit.py),
introspection (introspection.py) and gradient checks by finite differences (finite_difference.py).
Each works on any causal LM of transformers unless its docstring says otherwise."""
