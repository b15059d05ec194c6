"""The public API carries type hints (a ``py.typed`` package): every parameter and return of the public
functions and of the public classes' methods is annotated, and every annotation resolves to real
types (a typo or a missing import in a string annotation fails here, not in a user's type checker)."""

import importlib
import inspect
import typing
from pathlib import Path

import pytest

import jitnn
from jitnn.model import Sequential

# every public name (``__all__``, else the public classes and functions defined there) of these
MODULES = ["jitnn", "jitnn.model", "jitnn.layers", "jitnn.callbacks", "jitnn.losses", "jitnn.utils",
           "jitnn.datasets", "jitnn.onnx", "jitnn.plot"]
OPTIONAL = {"jitnn.onnx": "onnx", "jitnn.plot": "matplotlib"}
# the optimizers are checked where users call them: constructors and the module's functions
CONSTRUCTORS_ONLY = ["jitnn.optimizers"]


def public_names(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items() if not n.startswith("_")
                 and (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module.__name__]
    return [n for n in names if not inspect.ismodule(getattr(module, n, None))]


def jitnn_methods(cls, constructors_only=False):
    """(name, function) of each public method ``cls`` has from a jitnn class, ``__init__`` included."""
    for klass in cls.__mro__:
        if not klass.__module__.startswith("jitnn"):
            continue
        for name, attr in vars(klass).items():
            if name != "__init__" and (name.startswith("_") or constructors_only):
                continue
            fn = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
            if inspect.isfunction(fn):  # a decorated method (contextmanager) is checked as written
                yield f"{klass.__name__}.{name}", inspect.unwrap(fn)


def api_functions():
    out = {}
    for modname in MODULES + CONSTRUCTORS_ONLY:
        if modname in OPTIONAL:
            pytest.importorskip(OPTIONAL[modname])
        module = importlib.import_module(modname)
        for name in public_names(module):
            obj = getattr(module, name)
            if inspect.isclass(obj):
                for qual, fn in jitnn_methods(obj, constructors_only=modname in CONSTRUCTORS_ONLY):
                    out.setdefault(fn, f"{modname}.{qual}")
            elif inspect.isfunction(obj):
                out.setdefault(inspect.unwrap(obj), f"{modname}.{name}")
    return out


def missing_annotations(fn):
    sig = inspect.signature(fn)
    missing = [p.name for i, p in enumerate(sig.parameters.values())
               if p.annotation is inspect.Parameter.empty and not (i == 0 and p.name in ("self", "cls"))
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if sig.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
        missing.append("return")
    return missing


def test_every_public_signature_is_annotated():
    functions = api_functions()
    assert len(functions) > 200  # the walk reaches the API (layers, model, callbacks, losses, ...)
    unannotated = {qual: m for fn, qual in functions.items() if (m := missing_annotations(fn))}
    assert unannotated == {}


def test_every_annotation_resolves():
    # names imported for type checkers only (``if TYPE_CHECKING``) resolve against the public ones
    extra = {"Sequential": Sequential}
    failures = {}
    for fn, qual in api_functions().items():
        try:
            typing.get_type_hints(fn, globalns={**extra, **fn.__globals__})
        except Exception as e:  # noqa: BLE001 - report every unresolvable annotation at once
            failures[qual] = f"{type(e).__name__}: {e}"
    assert failures == {}


def test_the_package_is_marked_typed():
    assert (Path(jitnn.__file__).parent / "py.typed").is_file()
