"""The channel-dependency graph: the rule table (``rules/``), the analysis that runs it (``analysis``), and the
plan that says which units go (``plan``)."""

from graphprune.channels.analysis import ChannelGraph, Group, analyse
from graphprune.channels.plan import Plan
from graphprune.channels.rules import Space

__all__ = ["ChannelGraph", "Group", "Plan", "Space", "analyse"]
