"""Emitters apply a plan back to a source representation."""
