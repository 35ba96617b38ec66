"""The job's SQL parsing agrees with the Python validator (the spec), on Flink itself.

Runs jobs/sql.parse_view on hand-made rows in a batch TableEnvironment (no Kafka): the same
valid/invalid verdict on the schema corpus, the SQL reason among the Python reasons, and the
same event time for generated RFC 3339 strings. The job's Java functions (udfs/jvm) are checked
against what they replace: ``metering_json_fields`` against Flink's own ``IS JSON`` / ``IS JSON
OBJECT`` / ``JSON_VALUE`` on awkward documents, the rowtime column against the Python rules.
"""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from jobs import sql
from jobs.config import load_config
from jobs.heartbeat import heartbeat_record, is_heartbeat
from schemas.validate import SCHEMA_DIR, parse_timestamp, validate_line
from udfs.meters import Aggregation, Meter
from udfs.periods import epoch_millis

CONFIG = load_config(Path(__file__).resolve().parents[2] / "config" / "metering.example.yaml", env={})
#: Checks the job deliberately leaves to the producer (they cannot change a bill): see docs/semantics.md.
PRODUCER_ONLY = {"unknown_field", "bad_properties"}


@pytest.fixture(scope="module")
def t_env() -> Any:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from infra.udf_jar import udf_jar

    env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    env.get_config().set("parallelism.default", "1")
    env.get_config().set("table.local-time-zone", "UTC")
    env.get_config().set("pipeline.jars", udf_jar().as_uri())
    for statement in sql.function_ddl():
        env.execute_sql(statement)
    return env


def query_parsed(t_env: Any, docs: list[str], query: str, meters: tuple[Meter, ...] = CONFIG.meters) -> list[Any]:
    """Rows of ``query`` over the view ``parsed``: ``parse_view`` of ``docs`` as if read from Kafka at 2027-01-01."""
    from pyflink.table import DataTypes

    table = t_env.from_elements([(d,) for d in docs], DataTypes.ROW([DataTypes.FIELD("doc_text", DataTypes.STRING())]))
    t_env.create_temporary_view("docs", table)
    source = """SELECT CAST(doc_text AS BYTES) AS payload, 0 AS kafka_partition, CAST(0 AS BIGINT) AS kafka_offset,
       TO_TIMESTAMP_LTZ(1798761600000, 3) AS kafka_ts,
       TO_TIMESTAMP_LTZ(0, 3) AS rowtime FROM docs"""
    t_env.create_temporary_view("src", t_env.sql_query(source))
    t_env.create_temporary_view("parsed", t_env.sql_query(sql.parse_view("src", meters, timedelta(minutes=5))))
    rows = list(t_env.sql_query(query).execute().collect())
    for name in ("parsed", "src", "docs"):
        t_env.drop_temporary_view(name)
    return rows


def parse_rows(t_env: Any, docs: list[str]) -> list[Any]:
    return query_parsed(t_env, docs, "SELECT doc, reason, event_ms FROM parsed")


def test_corpus_verdicts_agree(t_env: Any) -> None:
    examples = sorted((SCHEMA_DIR / "examples" / "v1").glob("*/*.json"))
    docs = [p.read_text().strip() for p in examples]
    # Event types must be configured meters for the SQL side; map the corpus's types onto one.
    docs = [d.replace('"credits"', '"api_call"').replace('"bytes"', '"api_call"') for d in docs]
    by_doc = {row[0]: row for row in parse_rows(t_env, docs)}
    for path, doc in zip(examples, docs, strict=True):
        python = validate_line(doc)
        python_reasons = {p.reason for p in python.problems}
        sql_reason = by_doc[doc][1]
        if python.ok or python_reasons <= PRODUCER_ONLY:
            assert sql_reason is None, (path.name, sql_reason)
            if python.ok:
                assert by_doc[doc][2] == epoch_millis(python.event.timestamp), path.name  # type: ignore[union-attr]
        else:
            assert sql_reason is not None, (path.name, python_reasons)
            assert sql_reason in python_reasons | {"missing_field"}, (path.name, sql_reason, python_reasons)


def random_timestamps(count: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        moment = datetime(1971, 1, 1, tzinfo=UTC) + timedelta(
            seconds=rng.randrange(0, 2_000_000_000), microseconds=rng.randrange(10**6)
        )
        offset = timedelta(minutes=15 * rng.randrange(-48, 57))
        local = moment.astimezone(timezone(offset))
        text = local.isoformat(timespec=rng.choice(["seconds", "milliseconds", "microseconds"]))
        out.append(text.replace("+00:00", "Z") if rng.random() < 0.3 else text)
    out += [
        "2024-02-29T12:00:00Z",
        "2025-02-29T12:00:00Z",
        "2026-04-31T00:00:00+02:00",
        "2026-13-01T00:00:00Z",
        "2026-03-01T24:00:00Z",
        "2026-03-01T12:00:00.123456789-09:30",
        "2000-02-29T23:59:59.999+14:00",
        "1900-02-29T00:00:00Z",
    ]
    return out


#: The schema's timestamp pattern (schemas/usage_event.v1.json), with ASCII digits only.
TIMESTAMP_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def mutated_timestamps(count: int, seed: int = 7) -> list[str]:
    """Near misses of valid timestamps: a character dropped, doubled or replaced, or text appended."""
    rng = random.Random(seed)
    bases = random_timestamps(50, seed)
    out = ["2026-03-01T12:00:00+24:00", "2026-03-01T12:00:00-23:59", "2026-03-01T12:00:00.1234567890Z", "0000-01-01T00:00:00Z"]
    for _ in range(count):
        text = rng.choice(bases)
        i = rng.randrange(len(text))
        kind = rng.randrange(4)
        if kind == 0:
            text = text[:i] + text[i + 1 :]
        elif kind == 1:
            text = text[:i] + text[i] + text[i:]
        elif kind == 2:
            text = text[:i] + rng.choice("0959:-+.TtZz x\u0663\n") + text[i + 1 :]
        else:
            text += rng.choice(["\n", " ", "Z", "0", ":00"])
        out.append(text)
    return out


def test_event_time_matches_python_for_generated_timestamps(t_env: Any) -> None:
    texts = random_timestamps(400) + mutated_timestamps(400)
    docs = [
        json.dumps({"event_id": f"e{i}", "customer_id": "c", "event_type": "api_call", "timestamp": t, "quantity": 1})
        for i, t in enumerate(texts)
    ]
    rows = {row[0]: row for row in parse_rows(t_env, docs)}
    for text, doc in zip(texts, docs, strict=True):
        try:
            expected: int | None = epoch_millis(parse_timestamp(text)) if TIMESTAMP_SHAPE.fullmatch(text) else None
        except ValueError:
            expected = None
        _, reason, event_ms = rows[doc]
        if expected is None:
            assert reason == "bad_timestamp", text
        else:
            assert event_ms == expected, (text, event_ms, expected)


#: Documents where a hand-written JSON reader could differ from Flink's: number spellings, nesting,
#: nulls, duplicate keys, non-object roots, trailing text, escapes, invalid JSON.
AWKWARD_DOCS = [
    '{"quantity": 1, "event_id": "a"}',
    '{"quantity": 1.50, "event_id": "b"}',
    '{"quantity": -0, "event_id": "c"}',
    '{"quantity": 1e9, "event_id": "d"}',
    '{"quantity": 1E-3, "event_id": "e"}',
    '{"quantity": 12345678901234567890123, "event_id": "f"}',
    '{"quantity": 0.1000000000000000055511151231257827, "event_id": "g"}',
    '{"quantity": "7.25", "event_id": 42}',
    '{"quantity": true, "event_id": false}',
    '{"quantity": null, "event_id": "h"}',
    '{"quantity": [1, 2], "event_id": {"x": 1}}',
    '{"event_id": "dup", "event_id": "dup2", "quantity": 3}',
    '{"properties": {"model": "small-1", "user": "u1", "nested": {"a": 1}}, "event_id": "i"}',
    '{"properties": {"model": null}, "event_id": "j"}',
    '{"properties": "not an object", "event_id": "k"}',
    '{"event_id": "caf\\u00e9 \\"quoted\\" \\n", "quantity": 1}',
    '  {"event_id": "spaces", "quantity": 2}  ',
    '{"event_id": "trailing", "quantity": 2} x',
    '{"event_id": "two"} {"event_id": "docs"}',
    '{"properties": {"model": "first", "user": "u"}, "properties": {"model": "second"}, "event_id": "dup object"}',
    '{"properties": {"model": "first"}, "properties": "scalar", "event_id": "dup to scalar"}',
    '{"properties": {"nested": {"a": 1}, "model": "m"}, "event_id": "nested wins"}',
    '{"properties": {"zeta": 1, "alpha": {"b": 2.50, "a": [3, {"y": 1, "x": null}]}}, "event_id": "key order"}',
    '{"properties": [1, 2], "event_id": "array properties"}',
    '{"event_id": "l", "other": [[[[{"deep": [1e400, -0.0, 123456789012345678901234567890]}]]]]}',
    '{"event_id": "m", "skipped": "bad escape \\q here"}',
    '{"event_id": "n", "skipped": [1, 2,]}',
    '{"event_id": "o", "skipped": {"a": 1} "quantity": 2}',
    '{"event_id": "p", "skipped": 01}',
    '{"event_id": "q", "quantity": 2, "skipped": "tab\there"}',
    '{"properties": {"gpu.type": "flat", "gpu": {"type": "nested"}}, "event_id": "r"}',
    '{"properties": {"gpu": {"type": "nested only"}}, "event_id": "s"}',
    '{"event_id": "unterminated"',
    "{'event_id': 'single quotes'}",
    '[{"event_id": "array root"}]',
    '"just a string"',
    "42",
    "null",
    "",
    "not json at all",
]
PATHS = [
    "$.event_id",
    "$.quantity",
    "$.properties.model",
    "$.properties.nested",
    "$.missing",
    "$.properties.user",
    "$.properties.nested.a",
    "$.event_id.x",
    "$.properties['gpu.type']",
    "$.properties.gpu.type",
    "$['event_id']",
]
#: Paths read as ``JSON_QUERY`` (``json:`` in ``metering_json_fields``).
QUERY_PATHS = ["$.properties", "$.properties.nested", "$.event_id", "$.properties.alpha"]


def compare_json_fields(t_env: Any, docs: list[str], paths: list[str], query_paths: list[str]) -> tuple[int, int]:
    """``metering_json_fields`` against ``IS JSON`` / ``IS JSON OBJECT`` / ``JSON_VALUE`` (``paths``) and
    ``JSON_QUERY`` (``query_paths``, as ``json:`` paths) on every document; returns (JSON documents, values found).
    """
    from pyflink.table import DataTypes

    table = t_env.from_elements([(d,) for d in docs], DataTypes.ROW([DataTypes.FIELD("doc", DataTypes.STRING())]))
    t_env.create_temporary_view("json_docs", table)
    builtin = [*(f"JSON_VALUE(doc, {sql.lit(p)})" for p in paths), *(f"JSON_QUERY(doc, {sql.lit(p)})" for p in query_paths)]
    ours = [*paths, *(f"json:{p}" for p in query_paths)]
    width = len(ours)
    elements = ", ".join(f"j[{i}]" for i in range(1, width + 2))  # collect() cannot carry NULL array elements
    query = f"""SELECT doc, doc IS JSON, doc IS JSON OBJECT, {", ".join(builtin)}, j IS NOT NULL, {elements}
FROM (SELECT *, metering_json_fields(doc, {", ".join(sql.lit(p) for p in ours)}) AS j FROM json_docs)"""
    rows = list(t_env.sql_query(query).execute().collect())
    t_env.drop_temporary_view("json_docs")
    assert len(rows) == len(docs)
    parsed_count = found = 0
    for row in rows:
        doc, is_json, is_object, values = row[0], row[1], row[2], list(row[3 : 3 + width])
        parsed, kind, fields = row[3 + width], row[4 + width], list(row[5 + width :])
        assert parsed == is_json, doc
        if parsed:
            parsed_count += 1
            assert (kind == "object") == is_object, doc
            assert fields == values, (doc, fields, values)
            found += sum(v is not None for v in values)
    return parsed_count, found


def test_json_fields_agree_with_flinks_json_functions(t_env: Any) -> None:
    compare_json_fields(t_env, AWKWARD_DOCS, PATHS, QUERY_PATHS)


def test_meters_read_a_dotted_property_as_one_key(t_env: Any) -> None:
    """``gpu.type`` is a property's key (the schema allows dots), as replay and the checks read it, not a path."""
    meters = (
        Meter("gpu_seconds", "gpu_seconds", Aggregation.SUM, group_by=("gpu.type",)),
        Meter("gpu_max", "gpu_seconds", Aggregation.MAX, value="properties.gpu.load"),
    )
    event = {"event_id": "e", "customer_id": "c", "event_type": "gpu_seconds", "timestamp": "2026-12-31T10:00:00Z"}
    docs = [
        json.dumps({**event, "quantity": "1", "properties": {"gpu.type": "a100", "gpu.load": "0.5", "gpu": {"type": "x"}}}),
        json.dumps({**event, "quantity": "2", "properties": {"gpu": {"type": "h100", "load": "1"}}}),  # nested: not the key
    ]
    rows = query_parsed(t_env, docs, "SELECT q_text, reason, props[1], props[2] FROM parsed", meters)
    assert sorted(tuple(r) for r in rows) == [("1", None, "0.5", "a100"), ("2", None, None, None)]


KEYS = ["a", "b", "gpu.type", "gpu", "type", "properties", "timestamp"]
NUMBERS = ["0", "-0", "7", "-12", "2147483648", "9223372036854775808", "1.50", "-0.0", "1e9", "2.5E-3", "1E+2"]
NUMBERS += ["0.1000000000000000055511151231257827"]
STRINGS = ['""', '"x"', '"caf\\u00e9"', '"tab\\t"', '"q\\"uote"', '"\\ud83d\\ude00"', '"2026-03-01T12:00:00Z"', '"a.b"']


def random_json(rng: random.Random, depth: int = 0) -> str:
    """A random JSON text, written by hand so that it can repeat keys and spell numbers any way."""
    kind = rng.randrange(6 if depth < 3 else 3)
    if kind == 0:
        return rng.choice(NUMBERS)
    if kind == 1:
        return rng.choice(STRINGS)
    if kind == 2:
        return rng.choice(["true", "false", "null"])
    if kind == 3:
        return "[" + ", ".join(random_json(rng, depth + 1) for _ in range(rng.randrange(3))) + "]"
    members = [f'"{rng.choice(KEYS)}": {random_json(rng, depth + 1)}' for _ in range(rng.randrange(5))]
    return "{" + ", ".join(members) + "}"


def test_json_fields_agree_with_flinks_json_functions_on_random_documents(t_env: Any) -> None:
    """Random documents (repeated keys, nesting, number spellings, escapes) and broken copies of them."""
    rng = random.Random(11)
    docs = []
    for _ in range(400):
        doc = "{" + ", ".join(f'"{rng.choice(KEYS)}": {random_json(rng, 1)}' for _ in range(rng.randrange(1, 6))) + "}"
        if rng.random() < 0.15:  # cut short or with a stray character: mostly not JSON any more
            cut = rng.randrange(1, len(doc))
            doc = doc[:cut] if rng.random() < 0.5 else doc[:cut] + rng.choice(",:}]x\"'") + doc[cut:]
        docs.append(doc)
    paths = ["$.a", "$.a.b", "$.gpu.type", "$['gpu.type']", "$.properties['gpu.type']", "$.properties.a", "$.timestamp"]
    parsed_count, found = compare_json_fields(t_env, docs, paths, ["$.a", "$.properties", "$.gpu"])
    assert parsed_count > 300  # most documents are JSON; the broken ones test the refusals
    assert found > 300  # and the paths find values in them


def test_rowtime_column_is_the_event_time_or_the_epoch(t_env: Any) -> None:
    from pyflink.table import DataTypes

    (rowtime_expr,) = (expr for name, expr in sql.source_schema_columns(timedelta(minutes=5)) if name == "rowtime")
    received = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    cases = {
        "2026-03-01T11:59:59.250Z": epoch_millis(datetime(2026, 3, 1, 11, 59, 59, 250000, tzinfo=UTC)),
        "2026-03-01T14:05:00+02:00": epoch_millis(datetime(2026, 3, 1, 12, 5, tzinfo=UTC)),  # exactly received + skew
        "2026-03-01T12:05:00.001Z": 0,  # beyond the allowed skew: never advances the watermark
        "2026-02-30T12:00:00Z": 0,  # not a real date
        "yesterday": 0,
    }
    docs = [json.dumps({"timestamp": text}) for text in cases] + ['{"no": "timestamp"}']
    table = t_env.from_elements(
        [(bytearray(d.encode()), received) for d in docs],
        DataTypes.ROW([DataTypes.FIELD("payload", DataTypes.BYTES()), DataTypes.FIELD("kafka_ts", DataTypes.TIMESTAMP_LTZ(3))]),
    )
    t_env.create_temporary_view("received", table)
    as_text = f"DATE_FORMAT({rowtime_expr}, 'yyyy-MM-dd''T''HH:mm:ss.SSS')"  # collect() cannot return TIMESTAMP_LTZ
    rows = list(t_env.sql_query(f"SELECT CAST(payload AS STRING), {as_text} FROM received").execute().collect())
    t_env.drop_temporary_view("received")
    got = {json.loads(doc).get("timestamp"): epoch_millis(datetime.fromisoformat(text + "+00:00")) for doc, text in rows}
    assert got == {**cases, None: 0}


def test_rowtime_reads_the_timestamp_as_json_value_does(t_env: Any) -> None:
    """``metering_rowtime_millis`` reads ``$.timestamp`` itself: the same as ``JSON_VALUE`` on awkward documents."""
    from pyflink.table import DataTypes

    ts = "2026-03-01T11:59:59.250Z"
    docs = [
        *AWKWARD_DOCS,
        f'{{"timestamp": "{ts}"}}',
        f'{{"timestamp": "{ts}", "timestamp": 5}}',  # the last one wins
        f'{{"timestamp": 5, "timestamp": "{ts}"}}',
        '{"timestamp": null}',
        f'{{"nested": {{"timestamp": "{ts}"}}}}',  # not the top-level field
        f'[{{"timestamp": "{ts}"}}]',
        f'{{"timestamp": "{ts}"}} trailing text',
        f'{{"timestamp": "{ts}", "after": [1, }}',  # not JSON: the epoch
        f'{{"timestamp": {{"value": "{ts}"}}}}',
        f'{{"timestamp": "{ts}", "skipped": {{"deep": [[["\\u00e9", 1e400, true, null]]]}}}}',
    ]
    table = t_env.from_elements([(d,) for d in docs], DataTypes.ROW([DataTypes.FIELD("doc", DataTypes.STRING())]))
    t_env.create_temporary_view("stamped", table)
    received = "TO_TIMESTAMP_LTZ(4102444800000, 3)"  # 2100: no timestamp here is in the future
    query = f"""SELECT doc, metering_rowtime_millis(doc, {received}, CAST(0 AS BIGINT)),
       COALESCE(metering_event_millis(JSON_VALUE(doc, '$.timestamp')), 0)
FROM stamped"""
    rows = list(t_env.sql_query(query).execute().collect())
    t_env.drop_temporary_view("stamped")
    assert len(rows) == len(docs)
    for doc, ours, builtin in rows:
        assert ours == builtin, doc
    assert sum(1 for _, ours, _ in rows if ours != 0) == 4  # the plain one, "5 then text", trailing text, deep skip


def test_heartbeats_are_neither_events_nor_dead_letters(t_env: Any) -> None:
    """A heartbeat gets the internal reason ``heartbeat`` (dropped), unless its timestamp is bad or future."""
    received = datetime.fromtimestamp(1798761600, UTC)  # parse_rows' kafka_ts
    event = json.loads(next(iter(sorted((SCHEMA_DIR / "examples" / "v1" / "valid").glob("*.json")))).read_text())
    cases = {
        heartbeat_record(received - timedelta(seconds=1)).decode(): sql.HEARTBEAT,
        heartbeat_record(received + timedelta(minutes=5)).decode(): sql.HEARTBEAT,  # exactly the allowed skew
        heartbeat_record(received + timedelta(minutes=5, milliseconds=1)).decode(): "future_timestamp",
        '{"heartbeat": true, "timestamp": "2026-02-30T00:00:00Z"}': "bad_timestamp",
        '{"heartbeat": true}': "missing_field",
        '{"heartbeat": false, "timestamp": "2026-03-01T00:00:00Z"}': "missing_field",  # not a heartbeat
        '{"heartbeat": 1, "timestamp": "2026-03-01T00:00:00Z"}': "missing_field",
        json.dumps({**event, "heartbeat": True}): None,  # an event id makes it an event
    }
    rows = parse_rows(t_env, list(cases))
    assert {doc: reason for doc, reason, _ in rows} == cases
    # The loader's rule (jobs/heartbeat.py) picks the same records; a bad heartbeat is a dead letter.
    heartbeats = {doc for doc in cases if is_heartbeat(json.loads(doc))}
    assert {doc for doc, reason in cases.items() if reason == sql.HEARTBEAT} <= heartbeats
    assert {cases[doc] for doc in heartbeats} == {sql.HEARTBEAT, "future_timestamp", "bad_timestamp", "missing_field"}


def test_the_dead_letter_view_leaves_heartbeats_out(t_env: Any) -> None:
    docs = [heartbeat_record(datetime(2026, 12, 31, tzinfo=UTC)).decode(), "not json", '{"heartbeat": true}']
    rows = query_parsed(t_env, docs, f"SELECT reason, payload FROM ({sql.dead_letters_view('parsed')})")
    assert sorted((reason, payload) for reason, payload in rows) == [
        ("malformed_json", "not json"),
        ("missing_field", '{"heartbeat": true}'),
    ]
