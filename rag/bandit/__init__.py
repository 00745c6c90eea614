"""Contextual bandit over query plans: LinUCB (:mod:`.linucb`) per tenant plus a shared model
(:mod:`.tenants`), its persistence (:mod:`.store`) and the merging of replicas' updates (:mod:`.delta`,
:mod:`.sync`), the pending decisions and propensity log (:mod:`.decisions`, shared by the processes
through Redis or a SQLite file by :mod:`.pending` and :mod:`.pending_sqlite`) and feedback → reward
(:mod:`.reward`)."""

from rag.bandit.decisions import Decision, DecisionLog, ips_estimate
from rag.bandit.delta import Delta
from rag.bandit.linucb import Choice, LinUCB
from rag.bandit.pending import PendingDecisions, RedisDecisions, SharedDecisions, SharedUnavailable
from rag.bandit.pending_sqlite import SqliteDecisions
from rag.bandit.reward import feedback_reward, net_reward
from rag.bandit.store import BanditStore, FileStore, MemoryStore, RedisStore
from rag.bandit.sync import SharedBandit

__all__ = [
    "BanditStore",
    "Choice",
    "Decision",
    "DecisionLog",
    "Delta",
    "FileStore",
    "LinUCB",
    "MemoryStore",
    "PendingDecisions",
    "RedisDecisions",
    "RedisStore",
    "SharedBandit",
    "SharedDecisions",
    "SharedUnavailable",
    "SqliteDecisions",
    "feedback_reward",
    "ips_estimate",
    "net_reward",
]
