"""The channel rule table, shared by every frontend. Importing this package registers every rule."""

from graphprune.channels.rules import (conv, elementwise, linear, norm, pool, quant, recurrent,  # noqa: F401
                                       reduce, shape, tensor)  # (registration)
from graphprune.channels.rules.base import (IDENTITY, RULES, Block, Coupling, Freeze, Gather, Identity, IndexMap,
                                            NodeChannels, Offset, Renormalised, Rule, RuleContext, RuleError, Space,
                                            rule)

__all__ = ["IDENTITY", "RULES", "Block", "Coupling", "Freeze", "Gather", "Identity", "IndexMap", "NodeChannels",
           "Offset", "Renormalised", "Rule", "RuleContext", "RuleError", "Space", "rule"]
