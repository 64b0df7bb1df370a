"""Surgery: a plan applied to an ONNX model (``onnx``, ``onnx_fixes``) or to a torch module (``torch``,
``torch_fixes``), and the value-preserving or low-rank rewrites (``fold``, ``lowrank``)."""
