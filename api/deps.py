"""Typed FastAPI dependencies: the part of the service each route needs.

This is the one place that knows where each part lives in :class:`~rag.service.service.RetrievalService`
(the composition root, kept on ``app.state.service``); a route asks for the part by its type alias
(``Queries``, ``Ingest``, ``Breakers``, …) and never reaches through one object into another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from rag.config import Settings
from rag.resilience.board import BreakerBoard
from rag.service.auth import KeyRing
from rag.service.feedback import FeedbackLearner
from rag.service.jobs import Ingestion
from rag.service.lifecycle import Lifecycle
from rag.service.limits import RateLimits
from rag.service.queries import QueryHandler
from rag.service.rollout_admin import RolloutAdmin
from rag.service.service import RetrievalService


def service_of(request: Request) -> RetrievalService:
    """The service behind the app (a plain function: the dependencies below call it)."""
    service: RetrievalService = request.app.state.service
    return service


# The dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its thread
# pool, one thread hand-off per dependency per request (tests/api/test_deps.py).


@dataclass(frozen=True, slots=True)
class QueryParts:
    """What ``POST /query`` needs besides its tenant, in one lookup: the hot route resolves no FastAPI
    dependency tree (a tree of five nodes cost about a quarter of a cache hit's server CPU)."""

    queries: QueryHandler
    limits: RateLimits


def query_parts(request: Request) -> QueryParts:
    service = service_of(request)
    return QueryParts(service.queries, service.limits)


async def settings_of(request: Request) -> Settings:
    return service_of(request).settings


async def keys_of(request: Request) -> KeyRing:
    return service_of(request).keys


async def lifecycle_of(request: Request) -> Lifecycle:
    return service_of(request).lifecycle


async def queries_of(request: Request) -> QueryHandler:
    return service_of(request).queries


async def limits_of(request: Request) -> RateLimits:
    return service_of(request).limits


async def ingestion_of(request: Request) -> Ingestion:
    return service_of(request).ingestion


async def breakers_of(request: Request) -> BreakerBoard:
    return service_of(request).lifecycle.breakers


async def feedback_of(request: Request) -> FeedbackLearner:
    """Where feedback on an answered request goes (the bandit and the decisions awaiting feedback)."""
    return service_of(request).routing.learner


async def rollout_of(request: Request) -> RolloutAdmin:
    """The rollout config's administration (status, apply)."""
    return service_of(request).routing.rollout


async def fallback_of(request: Request) -> RolloutAdmin:
    """The auto-fallback administration (status, reset)."""
    return service_of(request).routing.rollout


AppSettings = Annotated[Settings, Depends(settings_of)]
Keys = Annotated[KeyRing, Depends(keys_of)]
Readiness = Annotated[Lifecycle, Depends(lifecycle_of)]
Queries = Annotated[QueryHandler, Depends(queries_of)]
Limits = Annotated[RateLimits, Depends(limits_of)]
Ingest = Annotated[Ingestion, Depends(ingestion_of)]
Breakers = Annotated[BreakerBoard, Depends(breakers_of)]
Feedback = Annotated[FeedbackLearner, Depends(feedback_of)]
Rollout = Annotated[RolloutAdmin, Depends(rollout_of)]
Fallback = Annotated[RolloutAdmin, Depends(fallback_of)]
