"""Rollout: the hot-reloadable rollout config (:mod:`~rag.rollout.config`, its sections are the runtime
policies), the routing policy built from it (:mod:`~rag.rollout.policy`) and its watcher
(:mod:`~rag.rollout.watcher`), feature flags with percentage rollout and A/B variants, auto-fallback of a
candidate path to the baseline, and shadow-traffic comparison. Import from the modules."""
