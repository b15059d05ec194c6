"""Profiles other tools open: the versioned JSON document, pprof's profile.proto (decoded back by an
independent reader of the protobuf wire format, field numbers straight from profile.proto), and
perf/report.py writing json, pprof and svg files."""

import gzip
import json

import pytest
from test_profiler import load_cli, profiled

from jitnn import pprof, report

# --- a protobuf wire-format reader (https://protobuf.dev/programming-guides/encoding/), no descriptor


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def fields(buf):
    """{field number: [values]}: ints for varints, bytes for length-delimited fields."""
    out, i = {}, 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 2:
            n, i = varint(buf, i)
            value, i = bytes(buf[i:i + n]), i + n
        else:
            raise AssertionError(f"unexpected wire type {wire} for field {number}")
        out.setdefault(number, []).append(value)
    return out


def packed(raw):
    """A packed repeated varint field (how proto3 writes repeated int64/uint64)."""
    values, i = [], 0
    while i < len(raw):
        v, i = varint(raw, i)
        values.append(v)
    return values


def decode_pprof(data):
    """Profile fields by profile.proto's numbers: string_table 6, sample 2 (location_id 1, value 2),
    location 4 (id 1, line 4 -> function_id 1), function 5 (id 1, name 2), sample_type 1."""
    top = fields(gzip.decompress(data))
    strings = [s.decode("utf-8") for s in top[6]]
    functions = {}
    for raw in top[5]:
        f = fields(raw)
        functions[f[1][0]] = strings[f[2][0]]
    locations = {}
    for raw in top[4]:
        loc = fields(raw)
        locations[loc[1][0]] = functions[fields(loc[4][0])[1][0]]
    types = [(strings[fields(t)[1][0]], strings[fields(t)[2][0]]) for t in top[1]]
    samples = []
    for raw in top[2]:
        smp = fields(raw)
        samples.append(([locations[i] for i in packed(smp[1][0])], packed(smp[2][0])))
    return strings, types, samples, top


@pytest.fixture(scope="module")
def two():
    return [profiled(batch=32)[1], profiled(batch=64)[1]]


def test_pprof_decodes_back_to_the_rows(two):
    data = pprof.to_pprof(two, ["b32", "b64"])
    assert data[:2] == b"\x1f\x8b"
    strings, types, samples, top = decode_pprof(data)
    assert strings[0] == "" and types == [("calls", "count"), ("wall", "nanoseconds"), ("flops", "count")]
    assert strings[top[14][0]] == "wall"  # default_sample_type
    expected = sorted((f"{p.label(r.slot, r.layer)} :: {r.phase}", p.label(r.slot, r.layer), r.calls, r.ns,
                       r.flops) for p in two for r in p.table())
    got = sorted((stack[0], stack[1], *values) for stack, values in samples)
    assert got == expected
    assert sum(v[1] for _, v in samples) == sum(p.total_ns() for p in two)
    # the descriptor-built classes read the same bytes the same way
    msg = pprof.message_class("Profile")()
    msg.ParseFromString(gzip.decompress(data))
    assert len(msg.sample) == len(samples) and list(msg.string_table) == strings
    labels = {msg.string_table[lab.str] for s in msg.sample for lab in s.label}
    assert labels == {"b32", "b64"}


def test_pprof_names_must_match(two):
    with pytest.raises(ValueError, match="one entry per profile"):
        pprof.to_pprof(two, ["only one"])


def test_json_document_is_one_schema_for_one_or_many(two):
    one = json.loads(json.dumps(report.to_document(two[0])))
    many = json.loads(json.dumps(report.to_document([report.to_json(p) for p in two])))
    for doc, n in ((one, 1), (many, 2)):
        assert doc["schema"] == "jitnn.profile" and doc["schema_version"] == report.SCHEMA_VERSION == 1
        assert doc["producer"].startswith("jitnn ") and len(doc["profiles"]) == n
        for entry in doc["profiles"]:
            assert {"total_s", "rows", "layers", "batch_sizes", "dtype"} <= set(entry)
    assert many["profiles"][1]["batch_sizes"] == [64]


def test_cli_writes_json_pprof_and_svg(tmp_path):
    cli = load_cli()
    common = ["--dataset", "digits", "--steps", "2", "--warmup", "1", "--batch-size", "32"]
    cli.main(common + ["--format", "json", "--out", str(tmp_path / "r.json")])
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["schema"] == "jitnn.profile" and len(doc["profiles"]) == 1
    assert doc["profiles"][0]["batch_size"] == 32 and doc["profiles"][0]["dataset"] == "digits"
    cli.main(common + ["--batch-size", "16", "--format", "pprof", "--out", str(tmp_path / "p.pb.gz")])
    strings, _, _, _ = decode_pprof((tmp_path / "p.pb.gz").read_bytes())
    assert any(s.startswith("Dense[0]") for s in strings)
    assert any("digits · batch 16" in s for s in strings) and any("digits · batch 32" in s for s in strings)
    svg = tmp_path / "p.svg"
    cli.main(common + ["--format", "svg", "--out", str(svg)])
    text = svg.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<?xml") and "Dense[0]" in text and "GFLOP/s" in text
    with pytest.raises(SystemExit):
        cli.main(common + ["--format", "pprof"])  # needs --out
