"""The channel rule table, shared by every frontend. Importing this package registers every rule."""

from . import conv, elementwise, linear, norm, pool, quant, recurrent, reduce, shape, tensor  # noqa: F401  (registration)
from .base import (IDENTITY, RULES, Block, Coupling, Freeze, Gather, Identity, IndexMap, NodeChannels, Offset, Rule,
                   RuleContext, RuleError, Space, rule)

__all__ = ["IDENTITY", "RULES", "Block", "Coupling", "Freeze", "Gather", "Identity", "IndexMap", "NodeChannels",
           "Offset", "Rule", "RuleContext", "RuleError", "Space", "rule"]
