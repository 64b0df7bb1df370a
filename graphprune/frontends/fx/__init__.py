"""The torch.fx frontend: ``trace`` (symbolic trace, shapes, lowering), ``ops`` (the one op table), ``frontend``
(emit into the module, verify, finish)."""
