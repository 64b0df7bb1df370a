"""Frontends lower a source model into :mod:`graphprune.ir`."""
