"""The hostile corpus generator (tests/corpus): deterministic, big enough, every category; the spec never raises on it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from jobs.produce import produce_lines
from schemas.validate import validate_line
from tests.corpus.generate import (
    CATEGORIES,
    DEFAULT_LINES,
    HOSTILE,
    REPEATS,
    CorpusLine,
    find_jsontestsuite,
    generate,
    jsontestsuite_documents,
    main,
    write,
)


@pytest.fixture(scope="module")
def corpus() -> list[CorpusLine]:
    """The default corpus, with JSONTestSuite when its folder is available (tests/corpus/README.md)."""
    return generate(jsontestsuite=find_jsontestsuite())


def test_deterministic(corpus: list[CorpusLine]) -> None:
    assert generate(jsontestsuite=find_jsontestsuite()) == corpus
    assert generate(seed=1, lines=3000) == generate(seed=1, lines=3000)
    assert [line.data for line in generate(seed=2, lines=3000)] != [line.data for line in generate(seed=1, lines=3000)]


def test_size_and_lines(corpus: list[CorpusLine], tmp_path: Path) -> None:
    assert len(corpus) >= DEFAULT_LINES
    assert all(b"\n" not in line.data for line in corpus)
    path = tmp_path / "corpus.jsonl"
    write(path, corpus)
    assert path.read_bytes().split(b"\n")[:-1] == [line.data for line in corpus]
    huge = [line for line in corpus if len(line.data) >= 10_000_000]
    assert 1 <= len(huge) <= 2, "10 MB lines: the size cap, a couple at most"


def test_every_category_several_times(corpus: list[CorpusLine]) -> None:
    counts = Counter(line.category for line in corpus)
    assert set(CATEGORIES) <= set(counts)
    assert all(counts[category] >= 3 for category in CATEGORIES), counts
    valid = Counter(line.variant for line in corpus if line.category == "valid")
    assert valid["event"] >= DEFAULT_LINES // 2
    assert valid["exact_retry"] >= 50 and valid["changed_retry"] >= 10 and valid["late_beyond_grace"] >= 10
    # each hostile case appears REPEATS times, in different events (the big ones once)
    for category in HOSTILE:
        cases = Counter(line.variant.split("#")[0] for line in corpus if line.category == category)
        assert set(cases.values()) == {REPEATS[category]}, (category, cases)


def test_named_hostile_cases_are_there(corpus: list[CorpusLine]) -> None:
    data = [line.data for line in corpus]

    def some(predicate: Any) -> bool:
        return any(predicate(d) for d in data)

    assert some(lambda d: b'"customer_id":"acme\\n"' in d)
    assert some(lambda d: b'"timestamp":"0001-01-01T00:00:00Z"' in d)
    assert some(lambda d: b'"timestamp":"2016-12-31T23:59:60Z"' in d)
    assert some(lambda d: b'"timestamp":"9999-12-31T23:59:59Z"' in d)
    assert some(lambda d: b"+14:00" in d and b"-14:00" not in d)
    assert some(lambda d: b'"quantity":1e9' in d)
    assert some(lambda d: b'"quantity":' + b"9" * 2000 in d)
    assert some(lambda d: b'"quantity":1234567890123456789012345678901234567890' in d)
    assert some(lambda d: b"\\u0001" * 30_000 in d)
    assert some(lambda d: b"\\ud800" in d and b'"customer_id":"a\\ud800' in d)
    assert some(lambda d: d.startswith(b"\xef\xbb\xbf{"))
    assert some(lambda d: b"\x00" in d)
    assert some(lambda d: d == b"")
    assert some(lambda d: d.startswith(b"[" * 100_000))
    assert some(lambda d: b'"quantity":NaN' in d)
    timestamps = [d for d in data if b'"timestamp":"' in d and d.startswith(b'{"event_id":"0')]
    assert len({d.split(b'"timestamp":"')[1][:7] for d in timestamps}) >= 13, "valid events over 400 days (13+ months)"


def test_jsontestsuite_files_become_lines(tmp_path: Path) -> None:
    """Files with raw newlines: trailing one dropped, inner ones as CR (verdict-preserving)."""
    folder = tmp_path / "test_parsing"
    folder.mkdir()
    (folder / "y_array_with_newline.json").write_bytes(b"[1\n]\n")
    (folder / "n_string_unescaped_newline.json").write_bytes(b'["new\nline"]')
    (folder / "i_string_invalid_utf8.json").write_bytes(b'["\xff"]')
    assert jsontestsuite_documents(folder) == [
        ("i_string_invalid_utf8.json", b'["\xff"]'),
        ("n_string_unescaped_newline.json", b'["new\rline"]'),
        ("y_array_with_newline.json", b"[1\r]"),
    ]
    corpus = generate(lines=100, jsontestsuite=folder)
    whole = [line for line in corpus if line.category == "jsontestsuite"]
    assert sorted(line.variant for line in whole) == sorted(p.name for p in folder.iterdir())
    embedded = {line.variant for line in corpus if line.category == "jsontestsuite_embedded"}
    assert "property:y_array_with_newline.json" in embedded
    assert "customer_id:i_string_invalid_utf8.json" in embedded
    assert find_jsontestsuite(folder) == folder
    with pytest.raises(FileNotFoundError):
        find_jsontestsuite(tmp_path / "missing")


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.jsonl"
    main(["--out", str(out), "--lines", "500", "--seed", "3", "--labels", str(tmp_path / "labels.jsonl")])
    assert out.read_bytes().count(b"\n") == len(generate(seed=3, lines=500, jsontestsuite=find_jsontestsuite()))
    assert '"lines"' in capsys.readouterr().out


def test_spec_never_raises(corpus: list[CorpusLine]) -> None:
    """``validate_line`` answers every line with a verdict (valid, or problems with reasons), never an exception."""
    raised: Counter[tuple[str, str, str]] = Counter()
    for line in corpus:
        try:
            validation = validate_line(line.data)
        except Exception as exc:
            raised[(line.category, line.variant.split("#")[0], type(exc).__name__)] += 1
            continue
        assert validation.ok or all(problem.reason for problem in validation.problems)
    assert not raised, sorted(raised.items())


class _RefusingProducer:
    """A Kafka producer double: refuses records over ``limit`` bytes at send(), as kafka-python does."""

    def __init__(self, limit: int = 1 << 20) -> None:
        self.limit = limit
        self.sent: list[tuple[bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> Any:
        from kafka.errors import MessageSizeTooLargeError

        if len(value) > self.limit:
            raise MessageSizeTooLargeError(f"{len(value)} bytes")
        self.sent.append((key, value))
        producer = self

        class Delivered:
            def add_callback(self, callback: Any) -> None:
                callback(None)

            def add_errback(self, _: Any) -> None:
                return None

        assert producer is self
        return Delivered()

    def flush(self) -> None:
        return None


def test_produce_unvalidated_survives_the_corpus(corpus: list[CorpusLine]) -> None:
    """`metering produce --no-validate` never stops for a line: too large ones are delivery failures."""
    producer = _RefusingProducer()
    summary = produce_lines((line.data + b"\n" for line in corpus), producer=producer, topic="t", validate=False)
    too_large = sum(1 for line in corpus if len(line.data.rstrip(b"\r\n")) > producer.limit)
    assert summary.failed == too_large >= 3
    assert summary.sent == len(producer.sent) == summary.read - too_large
    assert summary.read + summary.blank == len(corpus)
    assert all("MessageSizeTooLargeError" in error for error in summary.errors)
