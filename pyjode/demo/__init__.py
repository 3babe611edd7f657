"""``make demo``: train small continuous-time models with every pyjode gradient method.

Run ``python -m pyjode.demo [--quick] [--out DIR] [--only SECTION ...]``.
"""
