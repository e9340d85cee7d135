"""Studies as library code the scripts call: architecture switches one at a time (architecture.py) and
zeroth-order against backprop (zeroth_order.py)."""
