"""pprof export: a :class:`jitnn.profiler.Profile` as pprof's ``profile.proto``, gzipped, for ``pprof -top``,
``pprof -http`` and every tool that reads that format.

The messages are built with Google's ``protobuf`` runtime from a descriptor declared here, field for
field as https://github.com/google/pprof/blob/main/proto/profile.proto (package
``perftools.profiles``), so no generated code or protoc is needed: protobuf does the encoding.

Each sample is one row (layer, phase) of a profile: a two-frame stack, the phase under its layer
(``Dense[0] 784→512 relu :: forward`` inside ``Dense[0] 784→512 relu``), with the values ``calls``
(count), ``wall`` (nanoseconds, the default) and ``flops`` (count, from shapes), and the label
``profile`` (the profile's title: ``pprof -tagfocus`` picks one batch size of perf/report.py's).
``pprof -top`` then lists the phases by flat time and the layers by cum time, as render_top does.

Requires ``protobuf`` (in the ``profile`` and ``dev`` extras).
"""

from __future__ import annotations

import gzip
import time

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
# (message, [(field, number, type, repeated, message type name)]) as in profile.proto
_SCHEMA = [
    ("Profile", [("sample_type", 1, _F.TYPE_MESSAGE, True, "ValueType"),
                 ("sample", 2, _F.TYPE_MESSAGE, True, "Sample"),
                 ("mapping", 3, _F.TYPE_MESSAGE, True, "Mapping"),
                 ("location", 4, _F.TYPE_MESSAGE, True, "Location"),
                 ("function", 5, _F.TYPE_MESSAGE, True, "Function"),
                 ("string_table", 6, _F.TYPE_STRING, True, None),
                 ("drop_frames", 7, _F.TYPE_INT64, False, None),
                 ("keep_frames", 8, _F.TYPE_INT64, False, None),
                 ("time_nanos", 9, _F.TYPE_INT64, False, None),
                 ("duration_nanos", 10, _F.TYPE_INT64, False, None),
                 ("period_type", 11, _F.TYPE_MESSAGE, False, "ValueType"),
                 ("period", 12, _F.TYPE_INT64, False, None),
                 ("comment", 13, _F.TYPE_INT64, True, None),
                 ("default_sample_type", 14, _F.TYPE_INT64, False, None),
                 ("doc_url", 15, _F.TYPE_INT64, False, None)]),
    ("ValueType", [("type", 1, _F.TYPE_INT64, False, None), ("unit", 2, _F.TYPE_INT64, False, None)]),
    ("Sample", [("location_id", 1, _F.TYPE_UINT64, True, None), ("value", 2, _F.TYPE_INT64, True, None),
                ("label", 3, _F.TYPE_MESSAGE, True, "Label")]),
    ("Label", [("key", 1, _F.TYPE_INT64, False, None), ("str", 2, _F.TYPE_INT64, False, None),
               ("num", 3, _F.TYPE_INT64, False, None), ("num_unit", 4, _F.TYPE_INT64, False, None)]),
    ("Mapping", [("id", 1, _F.TYPE_UINT64, False, None), ("memory_start", 2, _F.TYPE_UINT64, False, None),
                 ("memory_limit", 3, _F.TYPE_UINT64, False, None),
                 ("file_offset", 4, _F.TYPE_UINT64, False, None),
                 ("filename", 5, _F.TYPE_INT64, False, None), ("build_id", 6, _F.TYPE_INT64, False, None),
                 ("has_functions", 7, _F.TYPE_BOOL, False, None),
                 ("has_filenames", 8, _F.TYPE_BOOL, False, None),
                 ("has_line_numbers", 9, _F.TYPE_BOOL, False, None),
                 ("has_inline_frames", 10, _F.TYPE_BOOL, False, None)]),
    ("Location", [("id", 1, _F.TYPE_UINT64, False, None), ("mapping_id", 2, _F.TYPE_UINT64, False, None),
                  ("address", 3, _F.TYPE_UINT64, False, None), ("line", 4, _F.TYPE_MESSAGE, True, "Line"),
                  ("is_folded", 5, _F.TYPE_BOOL, False, None)]),
    ("Line", [("function_id", 1, _F.TYPE_UINT64, False, None), ("line", 2, _F.TYPE_INT64, False, None),
              ("column", 3, _F.TYPE_INT64, False, None)]),
    ("Function", [("id", 1, _F.TYPE_UINT64, False, None), ("name", 2, _F.TYPE_INT64, False, None),
                  ("system_name", 3, _F.TYPE_INT64, False, None), ("filename", 4, _F.TYPE_INT64, False, None),
                  ("start_line", 5, _F.TYPE_INT64, False, None)]),
]
PACKAGE = "perftools.profiles"


def _message_classes() -> dict:
    """The profile.proto message classes, made once from the descriptor above in a private pool."""
    fd = descriptor_pb2.FileDescriptorProto(name="jitnn_pprof_profile.proto", package=PACKAGE,
                                            syntax="proto3")
    for msg_name, fields in _SCHEMA:
        msg = fd.message_type.add(name=msg_name)
        for name, number, ftype, repeated, type_name in fields:
            f = msg.field.add(name=name, number=number, type=ftype,
                              label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = f".{PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name, _ in _SCHEMA}


_CLASSES: dict = {}


def message_class(name: str = "Profile"):
    """The protobuf class of a profile.proto message (``Profile``, ``Sample``, ...), to build or parse."""
    if not _CLASSES:
        _CLASSES.update(_message_classes())
    return _CLASSES[name]


class _Strings:
    """pprof's string table: index 0 is the empty string."""

    def __init__(self):
        self.table, self.index = [""], {"": 0}

    def __call__(self, s: str) -> int:
        if s not in self.index:
            self.index[s] = len(self.table)
            self.table.append(s)
        return self.index[s]


def to_profile(profiles, names=None):
    """A ``perftools.profiles.Profile`` message of one or several jitnn profiles (module docstring)."""
    profiles = profiles if isinstance(profiles, (list, tuple)) else [profiles]
    names = names or [f"jitnn profile {i}" for i in range(len(profiles))]
    if len(names) != len(profiles):
        raise ValueError(f"names must have one entry per profile ({len(profiles)}), received: {len(names)}")
    msg = message_class("Profile")()
    s = _Strings()
    for kind, unit in (("calls", "count"), ("wall", "nanoseconds"), ("flops", "count")):
        msg.sample_type.add(type=s(kind), unit=s(unit))
    msg.default_sample_type = s("wall")
    msg.period_type.type, msg.period_type.unit = s("wall"), s("nanoseconds")
    msg.period = 1
    # One mapping that says the functions are already symbolized: pprof then looks for no binary.
    msg.mapping.add(id=1, filename=s("jitnn"), has_functions=True)
    locations: dict[str, int] = {}

    def location(name):
        if name not in locations:
            lid = len(locations) + 1
            locations[name] = lid
            msg.function.add(id=lid, name=s(name), system_name=s(name), filename=s("jitnn"))
            loc = msg.location.add(id=lid, mapping_id=1)
            loc.line.add(function_id=lid)
        return locations[name]

    start, duration = None, 0
    for p, pname in zip(profiles, names):
        start = p.t_start if start is None else min(start, p.t_start)
        duration += max(0, p.wall_ns - p.compile_ns)
        for r in sorted(p.table(), key=lambda r: -r.ns):
            label = p.label(r.slot, r.layer)
            sample = msg.sample.add(location_id=[location(f"{label} :: {r.phase}"), location(label)],
                                    value=[r.calls, r.ns, r.flops])
            sample.label.add(key=s("profile"), str=s(pname))
    msg.time_nanos = time.time_ns() - (time.perf_counter_ns() - start if start is not None else 0)
    msg.duration_nanos = duration
    msg.comment.append(s("jitnn per-layer wall time; compile time excluded"))
    msg.string_table.extend(s.table)
    return msg


def to_pprof(profiles, names=None) -> bytes:
    """The gzipped profile.proto bytes that ``pprof`` opens (``to_profile`` serialized)."""
    return gzip.compress(to_profile(profiles, names).SerializeToString(), mtime=0)


def write_pprof(profiles, path, names=None) -> None:
    """Write ``to_pprof(profiles, names)`` to ``path`` (conventionally ``*.pb.gz``)."""
    with open(path, "wb") as f:
        f.write(to_pprof(profiles, names))


__all__ = ["message_class", "to_pprof", "to_profile", "write_pprof"]
