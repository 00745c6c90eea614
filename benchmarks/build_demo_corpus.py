"""Build the redistributable demo corpus from Python standard-library docstrings.

The corpus is made of the docstrings of well-known standard-library modules of the
*running* interpreter (CPython 3.11 for this project). Those docstrings are covered by the
Python Software Foundation License Version 2, which permits redistribution with the PSF
notice (see ``data/demo/README.md``).

Usage::

    python benchmarks/build_demo_corpus.py                 # writes data/demo/corpus.jsonl
    python benchmarks/build_demo_corpus.py --output DIR    # writes DIR/corpus.jsonl
    python benchmarks/build_demo_corpus.py --check         # validate queries/qrels against the corpus

The output is deterministic for a given interpreter version: passages are sorted by ``_id``
and memory addresses in signatures are stripped.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "data" / "demo"
SOURCE = "python-stdlib-docstrings"

MODULES: tuple[str, ...] = (
    "argparse", "asyncio", "base64", "bisect", "collections", "contextlib", "csv",
    "dataclasses", "datetime", "difflib", "enum", "functools", "gzip", "hashlib",
    "heapq", "http.client", "itertools", "json", "logging", "math", "os.path", "pathlib",
    "random", "re", "shutil", "socket", "sqlite3", "statistics", "string", "struct",
    "subprocess", "tempfile", "textwrap", "threading", "time", "typing", "unittest",
    "urllib.parse", "uuid", "zipfile",
)  # fmt: skip

# Well-known names selected first (in this order) when a module has more candidates than
# MAX_PER_MODULE; remaining slots are filled by rank (functions, classes, methods) then name.
PREFERRED: dict[str, tuple[str, ...]] = {
    "argparse": ("ArgumentParser", "Namespace", "FileType", "ArgumentParser.error"),
    "asyncio": (
        "run", "gather", "create_task", "wait_for", "to_thread", "timeout", "as_completed", "Queue",
        "Lock", "Event", "Semaphore", "Task.cancel", "start_server", "open_connection",
    ),
    "base64": ("b64encode", "b64decode", "urlsafe_b64encode", "urlsafe_b64decode"),
    "collections": (
        "Counter", "Counter.most_common", "defaultdict", "deque", "namedtuple", "OrderedDict.move_to_end",
        "ChainMap", "deque.rotate",
    ),
    "difflib": (
        "unified_diff", "get_close_matches", "SequenceMatcher", "SequenceMatcher.ratio", "ndiff",
        "context_diff", "Differ", "HtmlDiff.make_file",
    ),
    "itertools": (
        "chain", "groupby", "islice", "product", "permutations", "combinations", "zip_longest",
        "pairwise", "count", "takewhile", "dropwhile", "starmap", "repeat",
    ),
    "logging": (
        "basicConfig", "getLogger", "Logger.setLevel", "Formatter", "StreamHandler", "Handler",
        "LoggerAdapter", "exception", "warning", "Logger.getChild", "Formatter.formatTime", "NullHandler",
    ),
    "math": (
        "isclose", "fsum", "prod", "comb", "perm", "dist", "hypot", "log", "ceil", "floor", "trunc",
        "modf", "remainder",
    ),
    "pathlib": (
        "Path", "PurePath", "Path.glob", "Path.rglob", "Path.iterdir", "Path.open", "PurePath.with_suffix",
        "PurePath.relative_to", "PurePath.joinpath", "Path.rename", "Path.replace", "Path.symlink_to",
        "Path.is_file",
    ),
    "random": (
        "choices", "sample", "seed", "randrange", "uniform", "gauss", "Random", "SystemRandom",
        "triangular", "expovariate",
    ),
    "re": (
        "search", "match", "fullmatch", "findall", "finditer", "sub", "subn", "split", "Match.group",
        "Match.groupdict", "Match.groups", "error",
    ),
    "shutil": (
        "rmtree", "copytree", "move", "which", "copy", "copy2", "copyfile", "make_archive",
        "unpack_archive", "disk_usage", "ignore_patterns", "get_terminal_size",
    ),
    "socket": (
        "create_connection", "create_server", "getaddrinfo", "SocketType.sendall", "SocketType.recv",
        "SocketType.settimeout", "SocketType.bind", "SocketType.listen", "socket.accept",
        "SocketType.connect", "gethostbyname", "setdefaulttimeout", "socketpair",
    ),
    "statistics": (
        "mean", "median", "mode", "stdev", "variance", "quantiles", "fmean", "multimode", "correlation",
        "linear_regression", "pstdev", "geometric_mean", "harmonic_mean",
    ),
    "threading": (
        "Thread", "Thread.start", "Thread.join", "Lock", "RLock", "Event", "Condition", "Semaphore",
        "Timer", "Barrier", "current_thread", "Event.wait", "Thread.is_alive",
    ),
    "time": (
        "time", "sleep", "strftime", "strptime", "localtime", "gmtime", "mktime", "ctime",
        "process_time", "struct_time", "asctime",
    ),
    "typing": (
        "TypeVar", "Generic", "Protocol", "NamedTuple", "TypedDict", "cast", "overload", "get_type_hints",
        "Annotated", "NewType", "Any", "final", "runtime_checkable",
    ),
    "unittest": (
        "TestCase", "main", "TestCase.assertRaises", "TestCase.assertAlmostEqual",
        "TestCase.assertCountEqual", "TestCase.subTest", "TestCase.addCleanup", "TestLoader.discover",
        "TestSuite", "TextTestRunner", "SkipTest", "TestCase.assertLogs",
    ),
    "urllib.parse": (
        "urlparse", "urlsplit", "urlunparse", "urljoin", "urlencode", "parse_qs", "parse_qsl", "quote",
        "quote_plus", "unquote", "unquote_plus", "urldefrag",
    ),
}  # fmt: skip

MIN_WORDS = 15  # docstrings shorter than this are too thin to be useful passages
MAX_WORDS = 350  # longer docstrings are cut at a paragraph/sentence boundary
MAX_PER_MODULE = 14  # keeps any single module from dominating the corpus

_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]+")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+")
_BOUND_PARAM_NAMES = frozenset({"self", "cls", "type"})


@dataclass(frozen=True)
class Candidate:
    """A documented object found in a module, before capping."""

    name: str  # dotted name relative to the module, e.g. "Path.glob" ("" for the module itself)
    rank: int  # 0 = module docstring, 1 = function, 2 = class, 3 = method
    signature: str
    doc: str


def word_count(text: str) -> int:
    return len(text.split())


def truncate_words(text: str, max_words: int = MAX_WORDS) -> str:
    """Cut ``text`` to at most ``max_words`` words, preferring paragraph then sentence boundaries."""
    if word_count(text) <= max_words:
        return text
    kept: list[str] = []
    used = 0
    for paragraph in text.split("\n\n"):
        n = word_count(paragraph)
        if used + n > max_words:
            break
        kept.append(paragraph)
        used += n
    if kept:
        return "\n\n".join(kept)
    # The first paragraph alone is too long: fall back to whole sentences, then to words.
    sentences: list[str] = []
    used = 0
    for sentence in _SENTENCE_END_RE.split(text.split("\n\n")[0]):
        n = word_count(sentence)
        if used + n > max_words:
            break
        sentences.append(sentence)
        used += n
    if sentences:
        return " ".join(sentences)
    return " ".join(text.split()[:max_words]) + " ..."


def clean_doc(raw: str | None) -> str:
    """Normalise a raw docstring: dedent, strip trailing spaces, collapse blank lines, truncate."""
    if not raw:
        return ""
    text = inspect.cleandoc(raw)
    text = "\n".join(line.rstrip() for line in text.splitlines())
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return truncate_words(text)


def signature_line(name: str, obj: Any, *, is_method: bool = False) -> str:
    """Return ``name(params)`` when the signature is introspectable, else an empty string.

    For methods the bound parameter (``self``/``cls``/``type``) is dropped; memory addresses
    in default-value reprs are removed so the output is reproducible.
    """
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    params = list(sig.parameters.values())
    if is_method and params and params[0].name in _BOUND_PARAM_NAMES:
        sig = sig.replace(parameters=params[1:])
    return f"{name}{_ADDRESS_RE.sub('', str(sig))}"


def doc_has_signature(doc: str, name: str) -> bool:
    """True if the docstring already opens with its own call signature, e.g. ``sleep(seconds)``."""
    short = re.escape(name.rsplit(".", 1)[-1])
    first_line = doc.split("\n", 1)[0]
    return re.match(rf"^(\w+\s*=\s*)?[\w.]*\b{short}\s*\(", first_line) is not None


def belongs_to(obj: Any, module: ModuleType) -> bool:
    """True if ``obj`` is defined by ``module`` (or its C accelerator / package submodules)."""
    owner = getattr(obj, "__module__", None)
    if not isinstance(owner, str):
        return False
    top = module.__name__.lstrip("_").split(".")[0]
    return owner.lstrip("_").split(".")[0] == top


def public_names(module: ModuleType) -> list[str]:
    """Public top-level names: ``__all__`` when defined, else non-underscore names owned by the module."""
    declared = getattr(module, "__all__", None)
    if declared is not None:
        return sorted(n for n in declared if not n.startswith("_") and hasattr(module, n))
    return sorted(n for n, obj in vars(module).items() if not n.startswith("_") and belongs_to(obj, module))


def unwrap_member(value: Any) -> Any:
    """Unwrap ``staticmethod``/``classmethod`` so the underlying routine can be inspected."""
    if isinstance(value, (staticmethod, classmethod)):
        return value.__func__
    return value


def iter_methods(cls: type, class_name: str) -> Iterator[Candidate]:
    """Public methods defined directly on ``cls`` (not inherited) with their own docstring."""
    for attr, value in sorted(vars(cls).items()):
        if attr.startswith("_"):
            continue
        member = unwrap_member(value)
        if not inspect.isroutine(member):
            continue
        yield Candidate(
            name=f"{class_name}.{attr}",
            rank=3,
            signature=signature_line(f"{class_name}.{attr}", member, is_method=True),
            doc=clean_doc(getattr(member, "__doc__", None)),
        )


def iter_candidates(module: ModuleType) -> Iterator[Candidate]:
    """Every documented object of ``module``: the module itself, functions, classes, methods."""
    yield Candidate(name="", rank=0, signature="", doc=clean_doc(module.__doc__))
    for name in public_names(module):
        obj = getattr(module, name)
        if inspect.isclass(obj):
            # A class's own __doc__ (never inherited from a base class).
            if not belongs_to(obj, module):
                continue  # re-exported alias of a foreign class, e.g. typing.Text is str
            yield Candidate(name, 2, signature_line(name, obj), clean_doc(vars(obj).get("__doc__")))
            yield from iter_methods(obj, name)
        elif inspect.isroutine(obj):
            yield Candidate(name, 1, signature_line(name, obj), clean_doc(obj.__doc__))


def selection_key(cand: Candidate, preferred: tuple[str, ...]) -> tuple[int, int, str]:
    """Order: module docstring, PREFERRED names (listed order), then functions, classes, methods by name."""
    if cand.rank == 0:
        return (0, 0, "")
    if cand.name in preferred:
        return (1, preferred.index(cand.name), cand.name)
    return (2, cand.rank, cand.name)


def select_candidates(module_name: str, module: ModuleType) -> list[Candidate]:
    """Keep documented, non-duplicate candidates, capped at MAX_PER_MODULE (see ``selection_key``)."""
    preferred = PREFERRED.get(module_name, ())
    seen_docs: set[str] = set()
    kept: list[Candidate] = []
    for cand in sorted(iter_candidates(module), key=lambda c: selection_key(c, preferred)):
        if word_count(cand.doc) < MIN_WORDS or cand.doc in seen_docs:
            continue
        seen_docs.add(cand.doc)
        kept.append(cand)
        if len(kept) >= MAX_PER_MODULE:
            break
    return kept


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def to_passage(module_name: str, cand: Candidate) -> dict[str, Any]:
    pid = f"{module_name}.{cand.name}" if cand.name else module_name
    use_signature = cand.signature and not doc_has_signature(cand.doc, cand.name)
    text = f"{cand.signature}\n{cand.doc}" if use_signature else cand.doc
    return {
        "_id": pid,
        "title": pid,
        "text": text,
        "metadata": {"source": SOURCE, "module": module_name, "python_version": python_version()},
    }


def build_corpus(modules: tuple[str, ...] = MODULES) -> list[dict[str, Any]]:
    """Build all passages, sorted by ``_id``; raises if two passages share an id."""
    passages: dict[str, dict[str, Any]] = {}
    for module_name in modules:
        module = importlib.import_module(module_name)
        for cand in select_candidates(module_name, module):
            passage = to_passage(module_name, cand)
            if passage["_id"] in passages:
                raise ValueError(f"duplicate passage id {passage['_id']!r}")
            passages[passage["_id"]] = passage
    return [passages[pid] for pid in sorted(passages)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_ids(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line)["_id"] for line in fh if line.strip()]


def check_dataset(directory: Path) -> list[str]:
    """Validate ``corpus.jsonl``/``queries.jsonl``/``qrels/test.tsv`` in ``directory``.

    Returns a list of problems (empty when the dataset is consistent): duplicate ids, qrels
    rows pointing at unknown queries or passages, queries without judgements, bad scores.
    """
    problems: list[str] = []
    corpus_ids = read_ids(directory / "corpus.jsonl")
    query_ids = read_ids(directory / "queries.jsonl")
    for label, ids in (("corpus", corpus_ids), ("queries", query_ids)):
        if len(ids) != len(set(ids)):
            problems.append(f"{label}: duplicate ids")
    corpus_set, query_set = set(corpus_ids), set(query_ids)
    judged: set[str] = set()
    with (directory / "qrels" / "test.tsv").open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        if next(reader, None) != ["query-id", "corpus-id", "score"]:
            problems.append("qrels: missing or wrong header")
        for lineno, row in enumerate(reader, start=2):
            if len(row) != 3:
                problems.append(f"qrels line {lineno}: expected 3 columns, got {len(row)}")
                continue
            qid, pid, score = row
            if qid not in query_set:
                problems.append(f"qrels line {lineno}: unknown query-id {qid!r}")
            if pid not in corpus_set:
                problems.append(f"qrels line {lineno}: unknown corpus-id {pid!r}")
            if score not in {"1", "2"}:
                problems.append(f"qrels line {lineno}: score must be 1 or 2, got {score!r}")
            judged.add(qid)
    problems.extend(f"query {qid!r} has no qrels rows" for qid in sorted(query_set - judged))
    return problems


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="directory for corpus.jsonl (default: data/demo)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not build; validate that every qrels id exists in corpus.jsonl/queries.jsonl in --output",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check:
        problems = check_dataset(args.output)
        for problem in problems:
            print(problem, file=sys.stderr)
        print("OK" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    if python_version() != "3.11":
        print(f"warning: building from Python {python_version()}, not 3.11", file=sys.stderr)
    passages = build_corpus()
    out = args.output / "corpus.jsonl"
    write_jsonl(out, passages)
    modules = {p["metadata"]["module"] for p in passages}
    print(f"wrote {len(passages)} passages from {len(modules)} modules to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
