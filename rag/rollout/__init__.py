"""Rollout building blocks: feature flags with percentage rollout and A/B variants, auto-fallback of a
candidate path to the baseline, shadow-traffic comparison, and the hot-reloadable rollout config."""

from rag.rollout.config import ConfigError, ProfileOverride, RolloutConfig
from rag.rollout.fallback import AutoFallback, FallbackEvent, FallbackPolicy, SlidingWindow, WindowStats
from rag.rollout.flags import CONTROL, Assignment, Flag, assign, assign_all, bucket
from rag.rollout.shadow import ShadowComparison, ShadowSampler, compare, overlap_at_k, rank_correlation
from rag.rollout.watcher import REDIS_KEY, ConfigWatcher

__all__ = [
    "CONTROL",
    "REDIS_KEY",
    "Assignment",
    "AutoFallback",
    "ConfigError",
    "ConfigWatcher",
    "FallbackEvent",
    "FallbackPolicy",
    "Flag",
    "ProfileOverride",
    "RolloutConfig",
    "ShadowComparison",
    "ShadowSampler",
    "SlidingWindow",
    "WindowStats",
    "assign",
    "assign_all",
    "bucket",
    "compare",
    "overlap_at_k",
    "rank_correlation",
]
