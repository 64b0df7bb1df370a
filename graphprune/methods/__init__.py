"""The math the passes call, numpy only: cost (params, MACs), budget (cost of kept counts), calibration data and
activations, PFP / SiPP sensitivity, low rank (ranks, factors, which layers), weight edits."""
