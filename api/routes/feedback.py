"""POST /feedback: a user's verdict on an answered query, fed to the router's bandit."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Feedback, Limits
from api.errors import ApiError, declared
from api.schemas import FeedbackBody, FeedbackOut
from api.security import Tenant, take_rate_token

router = APIRouter(tags=["feedback"])

FEEDBACK_BUCKET = "feedback"  # the tenant's rate-limit bucket for feedback, apart from its queries'


@router.post("/feedback", response_model=FeedbackOut, responses=declared(401, 403, 404, 413, 422, 429))
async def feedback(body: FeedbackBody, tenant: Tenant, learner: Feedback, limits: Limits) -> FeedbackOut:
    """Rate the answer of ``request_id`` (one feedback per request, within an hour; on any replica with
    ``RAG_REDIS_URL``, else on any process serving the same data dir on that machine): graded
    ``relevance`` per doc id, else
    ``clicked`` doc ids, else a 1-5 ``rating``. Accepted feedback is also logged with the query and the
    doc ids shown (``RAG_FEEDBACK_LOG_MB``): ``rag feedback export`` turns it into training data.
    Rate-limited per tenant like queries (``RAG_RATE_LIMIT_QPS``/``_BURST``), in a bucket of its own."""
    if body.rating is None and body.clicked is None and body.relevance is None:
        raise ApiError(
            422, "invalid_request", "feedback needs one of rating (1-5), clicked ([doc_id]) or relevance"
        )
    await take_rate_token(limits, tenant, FEEDBACK_BUCKET)
    applied = await learner.feedback(
        tenant, body.request_id, rating=body.rating, clicked=body.clicked, relevance=body.relevance
    )
    if applied is None:
        raise ApiError(
            404,
            "unknown_request",
            f"no routed answer {body.request_id!r} awaits feedback for this tenant: unknown, already rated, "
            "older than an hour, served from the cache, or (without a shared Redis) answered on another "
            "machine",
        )
    return FeedbackOut(request_id=body.request_id, **applied)
