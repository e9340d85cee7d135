"""Studies as library code the scripts call: architecture switches one at a time (architecture.py) and
zeroth-order against backprop (zeroth_order.py), and the peak memory of a training step by mode (memory.py)."""
