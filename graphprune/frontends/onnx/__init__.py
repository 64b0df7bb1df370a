"""The ONNX frontend: ``load`` (safe read, checks, shapes), ``fold``, ``lower`` (proto → IR), ``proto`` (helpers),
``frontend`` (emit, verify, finish)."""
