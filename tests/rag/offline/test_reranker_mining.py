"""The reranker's training groups take documents judged not relevant (a feedback export's grade 0) as
negatives first, then unjudged hybrid hits."""

import random

from rag.config import Settings
from rag.offline.reranker_training import TrainConfig, mine_groups
from rag.runtime import Runtime
from tests.conftest import ANIMALS, make_ingestor


def test_judged_negatives_come_first(settings: Settings) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(ANIMALS)
    store.close()
    runtime = Runtime.open(settings, load_reranker=False)
    try:
        passage = {d: c.passage for d, c in runtime.snapshot.first_chunks.items()}
        queries = {"q": "which animals hunt mice"}
        config = TrainConfig(negatives=2, mine_depth=4)
        # the bee was shown and judged not relevant: it is a negative, whatever the hybrid ranks
        groups = mine_groups(runtime, queries, {"q": {"cat": 1, "bee": 0}}, ["q"], config, random.Random(0))
        assert len(groups) == 1
        query, positive, *negatives = groups[0]
        assert query == "which animals hunt mice" and positive == passage["cat"]
        assert negatives[0] == passage["bee"] and passage["cat"] not in negatives
        # without judged negatives: unjudged hits only, never a judged document
        plain = mine_groups(runtime, queries, {"q": {"cat": 1, "owl": 1}}, ["q"], config, random.Random(0))
        assert len(plain) == 2
        for _, _, *negs in plain:
            assert len(negs) == 2 and not {passage["cat"], passage["owl"]} & set(negs)
    finally:
        runtime.close()
