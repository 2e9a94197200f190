"""Replica choice as plugins: filters, then weighted scorers (see README.md here)."""

from pipeline.router.scoring.base import Filter, PickContext, Scorer, StatsSource
from pipeline.router.scoring.params import AffinityParams, ScrapeParams
from pipeline.router.scoring.picker import ReplicaPicker, build_picker
from pipeline.router.scoring.prefix import PrefixAffinity, prefix_key
from pipeline.router.scoring.registry import FILTERS, SCORERS, UnknownPlugin

__all__ = ["FILTERS", "SCORERS", "AffinityParams", "Filter", "PickContext", "PrefixAffinity",
           "ReplicaPicker", "Scorer", "ScrapeParams", "StatsSource", "UnknownPlugin",
           "build_picker", "prefix_key"]
