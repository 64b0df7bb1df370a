"""Verification: every oracle, dynamic dimensions, and re-verification of a stored file, in one place.

``claims`` (what a pass says its output equals) · ``result`` (Verification, the comparison, combining stages) ·
``compare`` (checker + interface + onnxruntime against an oracle model) · ``masked`` (channel removal: the masked
original) · ``edits`` (weight edits) · ``lowrank`` (the truncated original) · ``torch`` (a pruned ``nn.Module``) ·
``dynamic`` (the original's dynamic dimensions, checked at a second size) · ``metadata`` (the only reader and
writer of graphprune's keys in a file) · ``stored`` (``graphprune verify``). Verifiers never run a pass.
"""
