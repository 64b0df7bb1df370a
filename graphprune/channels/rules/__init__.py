"""The channel rule table, shared by every frontend. Importing this package registers every rule."""

from graphprune.channels.rules import conv, elementwise, linear, norm, pool, quant, recurrent, reduce, shape, tensor  # noqa: F401  (registration)
from graphprune.channels.rules.base import (IDENTITY, RULES, Block, Coupling, Freeze, Gather, Identity, IndexMap, NodeChannels, Offset, Rule,
                   RuleContext, RuleError, Space, rule)

__all__ = ["IDENTITY", "RULES", "Block", "Coupling", "Freeze", "Gather", "Identity", "IndexMap", "NodeChannels",
           "Offset", "Rule", "RuleContext", "RuleError", "Space", "rule"]
