"""The queries a load test sends: popular ones (repeated: the cache path), paraphrases of the popular
ones (the L2 semantic path) and novel ones (computed). Pure Python, no locust import, so tests can use it.

From a BEIR folder (``LOAD_QUERIES=path``): the first ``popular`` queries of a seeded shuffle are the
popular ones, the rest are novel, and each popular query gets mechanical paraphrases that only *add*
common words (the cache guard refuses a hit when each side has a specific term the other lacks, so a
superset of the original's terms keeps the pair eligible; whether it is close enough is the embedder's
call). Without a folder: a built-in set about the demo corpus (Python's standard library docs), with
hand-written paraphrases.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

# the demo corpus (data/demo): popular questions and one light rewording of each
DEMO_POPULAR: tuple[tuple[str, str], ...] = (
    ("How do I parse a JSON string into a Python dict?", "How can I parse a JSON string into a Python dict?"),
    ("Run a shell command and capture its output", "run a shell command and capture what it prints"),
    ("Compute the median of a list of numbers", "compute the median value of a list of numbers"),
    (
        "Create a temporary directory that is deleted automatically",
        "make a temporary directory deleted automatically",
    ),
    ("Count how many times each item appears in a list", "count how often each item appears in a list"),
    ("Get the current local date and time", "get the current date and time in the local timezone"),
    ("Run a function in a background thread", "run a function in a thread in the background"),
    ("Cache the results of an expensive function", "cache the result of an expensive function call"),
    ("Encode binary data as a base64 string", "encode binary data to a base64 string"),
    (
        "Extract all files from a zip archive into a folder",
        "extract every file of a zip archive into a folder",
    ),
    ("Open an in-memory SQLite database", "open a SQLite database in memory"),
    ("Configure logging to write messages to a file", "configure logging so messages are written to a file"),
)
DEMO_NOVEL: tuple[str, ...] = (
    "Pretty-print a Python object as an indented JSON string",
    "Recursively delete a directory and everything inside it",
    "Find the full path of an executable program on the PATH",
    "Replace every match of a regular expression in a string",
    "Split a filename into its base name and its extension",
    "Recursively find all files matching a pattern under a directory",
    "Run several coroutines concurrently and collect their results",
    "Cancel an async operation if it takes too long",
    "Keep the original function name and docstring in a decorator",
    "Parse the query string parameters out of a URL",
    "Generate every combination of one item from each of several lists",
    "Pick k random elements from a list without repetition",
    "Suggest the closest matching word for a misspelled input",
    "Show a unified diff between two versions of a text file",
    "Check whether two floating point numbers are approximately equal",
    "Assert that a function raises an exception in a unit test",
    "Read a CSV file row by row",
    "Compute the SHA-256 hash of a file",
    "Sort with an old-style comparison function",
    "Copy an entire directory tree",
    "Generate a random UUID",
    "Make a dataclass immutable",
    "Keep a list sorted while inserting items",
    "Get the n smallest items from a list efficiently",
    "Compress a file with gzip",
    "Measure how long a piece of code takes to run",
    "Wrap long text to a fixed width",
    "URL-encode query parameters",
    "Pack an integer into bytes in little-endian order",
    "Read environment variables with a default value",
)
# added around a BEIR query to make a paraphrase; only common words, no negation, no numbers
TEMPLATES: tuple[str, ...] = (
    "is it true that {lower}",
    "what is known about: {text}",
    "{text} — what does the evidence say",
    "evidence for the claim that {lower}",
)


@dataclass(frozen=True, slots=True)
class QuerySet:
    """``popular[i]`` has paraphrases ``paraphrases[i]``; ``novel`` are asked (mostly) once."""

    popular: tuple[str, ...]
    paraphrases: tuple[tuple[str, ...], ...]
    novel: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if not self.popular or not self.novel:
            raise ValueError(f"a query set needs popular and novel queries (source {self.source!r})")
        if len(self.paraphrases) != len(self.popular):
            raise ValueError("one tuple of paraphrases per popular query")

    def popularity(self) -> list[float]:
        """Zipf weights (1/rank): a few queries take most of the repeats, as in real traffic."""
        return [1.0 / (rank + 1) for rank in range(len(self.popular))]


def paraphrase(text: str) -> tuple[str, ...]:
    text = text.strip().rstrip(".?!")
    lower = text[:1].lower() + text[1:]
    return tuple(t.format(text=text, lower=lower) for t in TEMPLATES)


def demo_queries() -> QuerySet:
    return QuerySet(
        popular=tuple(p for p, _ in DEMO_POPULAR),
        paraphrases=tuple((q,) for _, q in DEMO_POPULAR),
        novel=DEMO_NOVEL,
        source="built-in (demo corpus)",
    )


def beir_queries(folder: Path, *, popular: int = 30, seed: int = 13) -> QuerySet:
    """All of ``folder/queries.jsonl`` (every split: more distinct novel queries), shuffled with ``seed``."""
    path = folder / "queries.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"LOAD_QUERIES={str(folder)!r}: no queries.jsonl there (a BEIR folder)")
    texts = list(
        dict.fromkeys(
            t
            for line in path.read_text().splitlines()
            if line.strip() and (t := json.loads(line)["text"].strip())
        )
    )
    if len(texts) <= popular:
        raise ValueError(f"{path} has {len(texts)} distinct queries; need more than popular={popular}")
    random.Random(seed).shuffle(texts)
    head = tuple(texts[:popular])
    return QuerySet(head, tuple(paraphrase(t) for t in head), tuple(texts[popular:]), str(folder))


def load_queries(folder: str | None, *, popular: int = 30) -> QuerySet:
    """The BEIR folder's queries when ``folder`` is given, else the built-in demo set."""
    return beir_queries(Path(folder), popular=popular) if folder else demo_queries()
