"""Tools built on the API: ``bench`` (onnxruntime latency side by side) and ``prunability`` (Kuhn et al.)."""
