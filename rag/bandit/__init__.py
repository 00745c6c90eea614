"""Contextual bandit over query plans: LinUCB (:mod:`.linucb`), its persistence (:mod:`.store`), the
pending decisions and propensity log (:mod:`.decisions`) and feedback → reward (:mod:`.reward`)."""

from rag.bandit.decisions import Decision, DecisionLog, ips_estimate
from rag.bandit.linucb import Choice, LinUCB
from rag.bandit.reward import feedback_reward, net_reward
from rag.bandit.store import BanditStore, FileStore, MemoryStore, RedisStore

__all__ = [
    "BanditStore",
    "Choice",
    "Decision",
    "DecisionLog",
    "FileStore",
    "LinUCB",
    "MemoryStore",
    "RedisStore",
    "feedback_reward",
    "ips_estimate",
    "net_reward",
]
