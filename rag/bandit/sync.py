"""One replica's view of a deployment's bandit: the merged state it last read, plus its own updates since.

Every replica answers from its live :class:`~rag.bandit.tenants.TenantBandits` and learns from the
feedback it receives (:meth:`SharedBandit.update`); it also keeps those updates apart, as a
:class:`~rag.bandit.delta.Delta`. :meth:`SharedBandit.sync` adds them to the store's state
(:meth:`BanditStore.merge <rag.bandit.store.BanditStore.merge>`) and takes the merged result — so at each
sync a replica learns every other replica's feedback merged so far — then re-applies the updates it made
while the merge was in flight. With nothing of its own to add, a sync just reads the stored state.
Whoever calls it decides the cadence (the service: every ``RAG_BANDIT_SYNC_S`` and at shutdown).

**A merge is applied once**, even when its outcome is unknown (a Redis timeout after the write landed).
The merged state carries ``"writers"``: per sync object (one per process, a random id) the sequence number
of its last merge that landed. Each batch of updates remembers the first merge that carried it; a batch
is in the stored state exactly when that state's sequence for this writer has reached it, so a retry
after an unknown outcome adds only what is not in yet. Entries of writers silent for
:data:`WRITER_MEMORY_S` are dropped.

**When the store has no state** (first start, Redis restarted empty) or an unusable one (other arms,
another feature dimension, malformed: counted through ``on_invalid``), the first merge seeds it with this
replica's merged state as last read plus its updates, so a Redis restart loses no learnt state.

Not thread-safe: the service calls it from its event loop; the store runs ``combine`` in a worker
thread, which reads only what no one changes during a merge.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rag.bandit.delta import Delta
from rag.bandit.linucb import Vector
from rag.bandit.store import BanditStore, State
from rag.bandit.tenants import TenantBandits

WRITERS = "writers"  # the state's key: writer id → {"seq": its last merge that landed, "ts": when}
WRITER_MEMORY_S = 7 * 86_400.0  # a writer silent this long is forgotten (no process waits that long)

Restore = Callable[[State | None], TenantBandits]  # a state (None: fresh) → the bandit; ValueError if bad


@dataclass(slots=True)
class _Batch:
    delta: Delta
    first_seq: int  # the first merge that carried it


class SharedBandit:
    def __init__(
        self,
        bandits: TenantBandits,
        store: BanditStore | None,
        restore: Restore,
        *,
        on_invalid: Callable[[ValueError], None] = lambda exc: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``bandits``: the live model (kept as the same object: syncs replace its models in place);
        ``restore``: builds a bandit from a state (hyper-parameters included); ``on_invalid``: told of a
        stored state that cannot be used (it is replaced at the next merge)."""
        self.bandits = bandits
        self.store = store
        self._restore = restore
        self._on_invalid = on_invalid
        self._clock = clock
        self.writer = uuid.uuid4().hex
        self._seq = 0
        self._base: State | None = None  # the merged state last read (None: none yet)
        self._delta = Delta()  # updates not yet carried by any merge
        self._unsure: list[_Batch] = []  # carried by a merge that did not land, or whose outcome is unknown
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        """Updates made here that no merge has landed yet."""
        return self._delta.updates + sum(b.delta.updates for b in self._unsure)

    def update(self, tenant: str, arm: str, x: Sequence[float] | Vector, reward: float) -> None:
        """One observation of ``tenant``'s feedback: the live model learns it now, the store at the next
        sync."""
        self.bandits.update(tenant, arm, x, reward)  # validates: a refused update is not kept
        self._delta.add(tenant, arm, x, reward)

    async def load(self) -> None:
        """Take the stored state (nothing when there is none). ValueError: a stored state this service
        cannot use; the store's errors pass through."""
        if self.store is None:
            return
        async with self._lock:
            await self._read(self.store)

    async def sync(self) -> None:
        """Add this replica's updates to the stored state and take the merged result (only read it, with
        no updates to add). The store's errors pass through; the updates are then kept for the next."""
        if self.store is None:
            return
        async with self._lock:
            if not (self._delta or self._unsure):
                await self._read(self.store)
                return
            self._seq += 1
            seq = self._seq
            batches = [*self._unsure]
            if self._delta:
                batches.append(_Batch(self._delta, seq))
            self._delta = Delta()
            built: list[TenantBandits] = []
            try:
                state = await self.store.merge(lambda saved: self._combine(saved, batches, seq, built))
            except BaseException:
                self._unsure = batches
                raise
            self._unsure = []
            self._adopt(built[-1], state)

    # -- inside a merge (a worker thread): reads only the base and the batches, changes neither ---------
    def _combine(
        self, saved: State | None, batches: list[_Batch], seq: int, built: list[TenantBandits]
    ) -> State:
        landed, start = 0, saved
        if saved is not None:
            try:
                merged = self._restore(saved)
                landed = _landed(saved, self.writer)
            except ValueError as exc:
                self._on_invalid(exc)
                start = None
        if start is None:  # nothing usable saved: seed it with what this replica knew
            merged = self._restore(self._base)
        for batch in batches:
            if batch.first_seq > landed:
                merged.absorb(batch.delta)
        state = merged.to_state()
        state[WRITERS] = self._writers(start, seq)
        built.append(merged)
        return state

    def _writers(self, saved: State | None, seq: int) -> dict[str, Any]:
        now = self._clock()
        known = saved.get(WRITERS, {}) if saved is not None else {}
        writers = {
            w: entry
            for w, entry in (known.items() if isinstance(known, dict) else ())
            if isinstance(entry, dict)
            and isinstance(entry.get("ts"), int | float)
            and now - entry["ts"] < WRITER_MEMORY_S
        }
        writers[self.writer] = {"seq": seq, "ts": now}
        return writers

    # -- in the event loop ------------------------------------------------------------------------------
    async def _read(self, store: BanditStore) -> None:
        state = await store.load(if_changed=self._base is not None)
        if state is None or self._unchanged(state):
            return
        fresh = await asyncio.to_thread(self._restore, state)  # CPU: A⁻¹ of every model
        landed = _landed(state, self.writer)
        self._unsure = [b for b in self._unsure if b.first_seq > landed]  # the rest is in ``state``
        for batch in self._unsure:
            fresh.absorb(batch.delta)
        self._adopt(fresh, state)

    def _unchanged(self, state: State) -> bool:
        """Whether ``state`` is the one last read: every merge rewrites ``writers``, so comparing those
        is enough (the whole state only when a writer without them, the old code, saved it)."""
        if self._base is None:
            return False
        writers = state.get(WRITERS)
        if writers is None:
            return state == self._base
        return bool(writers == self._base.get(WRITERS))

    def _adopt(self, merged: TenantBandits, state: State) -> None:
        """Serve ``merged`` plus the updates made since the merge began, with the live exploration (a
        policy applied while the merge ran is kept)."""
        merged.alpha, merged.epsilon = self.bandits.alpha, self.bandits.epsilon
        merged.absorb(self._delta)
        self.bandits.adopt(merged)
        self._base = state


def _landed(state: State, writer: str) -> int:
    """The sequence number of ``writer``'s last merge that landed in ``state`` (0: none). ValueError when
    the bookkeeping is malformed."""
    entry = state.get(WRITERS, {})
    entry = entry.get(writer, {}) if isinstance(entry, dict) else None
    seq = entry.get("seq", 0) if isinstance(entry, dict) else None
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise ValueError(f"bandit state {WRITERS!r} is malformed for writer {writer!r}")
    return seq
