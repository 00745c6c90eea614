"""Typed FastAPI dependencies: the part of the service each route needs.

This is the one place that knows where each part lives in :class:`~rag.service.service.RetrievalService`
(the composition root, kept on ``app.state.service``); a route asks for the part by its type alias
(``Queries``, ``Ingest``, ``Breakers``, …) and never reaches through one object into another.
"""

from __future__ import annotations

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
    service: RetrievalService = request.app.state.service
    return service


def settings_of(request: Request) -> Settings:
    return service_of(request).settings


def keys_of(request: Request) -> KeyRing:
    return service_of(request).keys


def lifecycle_of(request: Request) -> Lifecycle:
    return service_of(request).lifecycle


def queries_of(request: Request) -> QueryHandler:
    return service_of(request).queries


def limits_of(request: Request) -> RateLimits:
    return service_of(request).limits


def ingestion_of(request: Request) -> Ingestion:
    return service_of(request).ingestion


def breakers_of(request: Request) -> BreakerBoard:
    return service_of(request).lifecycle.breakers


def feedback_of(request: Request) -> FeedbackLearner:
    """Where feedback on an answered request goes (the bandit and the decisions awaiting feedback)."""
    return service_of(request).routing.learner


def rollout_of(request: Request) -> RolloutAdmin:
    """The rollout config's administration (status, apply)."""
    return service_of(request).routing.rollout


def fallback_of(request: Request) -> RolloutAdmin:
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
