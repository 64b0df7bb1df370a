"""Frontends: a model in, the IR out, and how to emit into and verify that kind of model.

``base`` is the interface; ``onnx/`` and ``fx/`` each hold the lowering (``load`` / ``lower``, ``trace`` / ``ops``,
used by every layer below) and the implementation of the interface (``frontend``, which calls its emitter and its
oracles); ``registry`` picks one for a model. This package's ``__init__`` imports nothing, so the low modules can be
imported from anywhere without pulling in the frontends.
"""
