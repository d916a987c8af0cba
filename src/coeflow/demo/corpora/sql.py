"""`sql` expert text: generated schemas (CREATE TABLE) followed by commented queries over
them: selections, joins, aggregates, subqueries, CTEs, window functions and DML. The
schemas are in `data/corpora/sql.json`."""

from __future__ import annotations

import random

from coeflow.demo.datafiles import read_json

_DATA = read_json("corpora/sql.json")
# table -> [[column, type], ...]; foreign keys are the columns named <other>_id.
SCHEMAS: dict[str, list[list[str]]] = _DATA["schemas"]
GROUPS: list[list[str]] = _DATA["groups"]  # tables that a document's queries share
TEXT_VALUES: list[str] = _DATA["text_values"]  # SQL literals for WHERE and INSERT


def sql_corpus(seed: int, n_chars: int, split: str = "train") -> list[str]:
    rng = random.Random(f"sql-{seed}-{split}")
    docs, total = [], 0
    while total < n_chars:
        tables = rng.choice(GROUPS)
        parts = [_create(t) for t in tables if rng.random() < 0.6]
        parts += [_query(rng, tables) for _ in range(rng.randint(4, 8))]
        doc = "\n\n".join(parts)
        docs.append(doc)
        total += len(doc)
    return docs


def _create(table: str) -> str:
    cols = ",\n".join(f"    {c} {t}" for c, t in SCHEMAS[table])
    return f"CREATE TABLE {table} (\n{cols}\n);"


def _cols(table: str, kind: str | None = None) -> list[str]:
    out = []
    for c, t in SCHEMAS[table]:
        numeric = t.startswith(("INTEGER", "NUMERIC")) and not c.endswith("id")
        if kind is None or (kind == "num" and numeric) or (kind == "text" and t.startswith("TEXT")):
            out.append(c)
    return out or [SCHEMAS[table][0][0]]


def _join_pair(rng: random.Random, tables: list[str]) -> tuple[str, str, str] | None:
    pairs = [(a, b, f"{b}_id") for a in tables for b in tables if a != b and f"{b}_id" in _cols(a)]
    return rng.choice(pairs) if pairs else None


def _query(rng: random.Random, tables: list[str]) -> str:
    t = rng.choice(tables)
    num, text = rng.choice(_cols(t, "num")), rng.choice(_cols(t, "text"))
    n = rng.randint(1, 500)
    kind = rng.randrange(10)
    if kind == 0:
        return f"-- {t} with {num} above {n}\nSELECT {', '.join(_cols(t)[:3])}\nFROM {t}\nWHERE {num} > {n}\nORDER BY {num} DESC;"
    if kind == 1:
        return f"-- how many {t} per {text}\nSELECT {text}, COUNT(*) AS n\nFROM {t}\nGROUP BY {text}\nHAVING COUNT(*) > {n % 20 + 1}\nORDER BY n DESC;"
    if kind == 2:
        j = _join_pair(rng, tables)
        if j:
            a, b, fk = j
            return (f"-- {a} with their {b}\nSELECT a.id, b.{_cols(b, 'text')[0]}, a.{_cols(a, 'num')[0]}\n"
                    f"FROM {a} AS a\n{rng.choice(['JOIN', 'LEFT JOIN', 'INNER JOIN'])} {b} AS b ON b.id = a.{fk}\n"
                    f"LIMIT {n % 50 + 5};")
    if kind == 3:
        return f"-- average and maximum {num}\nSELECT AVG({num}) AS avg_{num}, MAX({num}) AS max_{num}, MIN({num}) AS min_{num}\nFROM {t};"
    if kind == 4:
        return f"-- {t} above the average {num}\nSELECT *\nFROM {t}\nWHERE {num} > (SELECT AVG({num}) FROM {t});"
    if kind == 5:
        return (f"-- rank {t} by {num} within each {text}\nSELECT {text}, {num},\n       "
                f"{rng.choice(['ROW_NUMBER()', 'RANK()', 'DENSE_RANK()'])} OVER (PARTITION BY {text} ORDER BY {num} DESC) AS rnk\nFROM {t};")
    if kind == 6:
        return (f"-- running total of {num}\nWITH ordered AS (\n    SELECT id, {num} FROM {t}\n)\n"
                f"SELECT id, SUM({num}) OVER (ORDER BY id) AS running_{num}\nFROM ordered;")
    if kind == 7:
        return f"UPDATE {t}\nSET {num} = {num} * {1 + (n % 20) / 100:.2f}\nWHERE {text} = {rng.choice(TEXT_VALUES)};"
    if kind == 8:
        vals = ", ".join(str(rng.randint(1, 99)) if c in _cols(t, "num") or c.endswith("id") else rng.choice(TEXT_VALUES)
                         for c in _cols(t))
        return f"INSERT INTO {t} ({', '.join(_cols(t))})\nVALUES ({vals});"
    return f"DELETE FROM {t}\nWHERE {num} < {n % 10};"
