"""Completion distances and the salvage / stop modes of the matcher.

The reference for a distance is a breadth-first search over the automaton's
bytes; jsonschema is the oracle for salvaged outputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from enforcer_oracle import load_schema_file, schema_files, shortest_completion, validator_for

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import default_vocabulary

FILES = schema_files()


@pytest.fixture(scope="module")
def vocab():
    return default_vocabulary()


def _random_prefix(m: Matcher, rng: np.random.Generator, steps: int, ends: set[int]) -> None:
    for _ in range(steps):
        allowed = [int(t) for t in m.allowed_ids() if int(t) not in ends]
        if not allowed:
            return
        m.accept_token(int(rng.choice(allowed)))


@pytest.mark.parametrize("path", FILES[:12], ids=lambda p: p.stem)
def test_distance_equals_breadth_first_shortest_completion(vocab, path):
    schema, _valid, _invalid = load_schema_file(path)
    g = compile_json_schema(schema, vocab)
    rng = np.random.default_rng(11)
    ends = set(int(e) for e in vocab.end_ids)
    checked = 0
    for walk in range(4):
        m = Matcher(g)
        _random_prefix(m, rng, int(rng.integers(0, 30)), ends)
        path_bytes = shortest_completion(g.automaton, m.state)
        if path_bytes is None:
            continue  # the BFS gave up (too many states); nothing to compare
        assert m.distance() == len(path_bytes), (walk, m.state)
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_salvaged_outputs_validate(vocab, path):
    schema, _valid, _invalid = load_schema_file(path)
    try:
        g = compile_json_schema(schema, vocab)
    except Exception as e:  # noqa: BLE001 - files that are error cases are not for this test
        pytest.skip(f"schema does not compile: {e}")
    validator = validator_for(schema)
    rng = np.random.default_rng(5)
    ends = set(int(e) for e in vocab.end_ids)
    for trial in range(6):
        m = Matcher(g)
        _random_prefix(m, rng, int(rng.integers(0, 60)), ends)
        if m.ended:
            continue
        m.salvage()
        budget = m.distance()
        steps = 0
        while not m.ended:
            allowed = m.allowed_ids()
            assert allowed.size, "salvage mask is empty"
            before = m.distance()
            tok = int(rng.choice(allowed))
            m.accept_token(tok)
            if not m.ended:
                assert m.distance() < before, "a salvage step must bring the value closer"
            steps += 1
            assert steps <= budget + 1, "salvage must end within distance + 1 tokens"
        text = m.text_bytes().decode("utf-8")
        assert validator.is_valid(json.loads(text)), (trial, text)


def test_stop_mode_allows_only_end_ids(vocab):
    g = compile_json_schema({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, vocab)
    m = Matcher(g)
    m.accept_token(_id(vocab, b'{"'))
    m.stop()
    assert set(m.allowed_ids().tolist()) == set(vocab.end_ids)
    end = min(vocab.end_ids)
    m.accept_token(end)
    assert m.ended and not m.complete_value


def test_salvage_when_accepting_allows_only_end_ids(vocab):
    g = compile_json_schema({"type": "integer"}, vocab, SchemaOptions())
    m = Matcher(g)
    m.accept_token(_id(vocab, b"7"))
    m.salvage()
    assert set(m.allowed_ids().tolist()) == set(vocab.end_ids)


def _id(vocab, data: bytes) -> int:
    return next(i for i, b in enumerate(vocab.token_bytes) if b == data and i not in vocab.special_ids)
