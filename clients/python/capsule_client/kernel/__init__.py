"""The `capsule-python` Jupyter kernel: cells run on a Capsule session (see kernel.py)."""
