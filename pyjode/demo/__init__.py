"""``make demo``: train small continuous-time models with the main pyjode gradient methods.

Run ``python -m pyjode.demo [--quick] [--out DIR] [--only SECTION ...]``.
"""
