"""One config system end to end: YAML files loaded into typed, nested dataclasses.

* Every field is typed and carries a docstring (the string literal right after it, as in LitGPT);
  :func:`field_docs` reads them so the CLI and the dumped YAML can explain each key.
* Dotted overrides (``train.lr=2e-4``) use the same key paths that Tune search spaces use.
* Unknown keys, wrong types and out-of-range values raise one :class:`ConfigError` whose message
  names the key and the file, e.g. ``configs/tiny.yaml: train.lr: must be > 0, got -1.0``.
* A section validates itself in ``__post_init__`` with :func:`~asva_model.errors.require` (so a config
  built in Python is checked too), raising ``ConfigError("<field>: <why>")``; the loader prefixes the
  section's key path and the file.
* ``base:`` names another YAML file (or a list of them, merged in order) that this one extends.
* A class may declare switches (``SWITCHES``): a top-level key such as ``protocol: authors`` that sets a
  group of fields at once, except those the files or overrides set themselves.
* A class may declare moved keys (``MOVED``): a file, an override or a sweep's search space that still names
  an old key fails in one line naming the new one (``eval.seed: moved to generate.seed``).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from asva_model.errors import ConfigError, require

__all__ = [
    "ConfigError",
    "require",
    "from_dict",
    "to_dict",
    "load",
    "load_raw",
    "replace_dotted",
    "dump_yaml",
    "flatten",
    "field_docs",
    "parse_override",
    "set_dotted",
    "check_key_path",
    "read_yaml",
    "switches_of",
]

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Field docs


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring of each field of dataclass ``cls`` (string literal after the field)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for stmt, nxt in zip(body, body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


# ---------------------------------------------------------------------------------------------
# Type checking and coercion


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp``; return it converted (dicts to dataclasses, ints to floats)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{key}: must be one of {choices}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, vt = get_args(tp) or (str, Any)
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping (section), got {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _build(cls: type[T], data: dict[str, Any], prefix: str) -> T:
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            hint = _closest(k, names)
            raise ConfigError(f"{where}: unknown key{hint}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    try:
        return cls(**kwargs)  # nested sections are built (and their errors prefixed) above
    except ConfigError as err:
        raise ConfigError(f"{prefix}.{err}" if prefix else str(err)) from None


def _closest(name: str, names: set[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, sorted(names), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


# ---------------------------------------------------------------------------------------------
# Public API


def from_dict(cls: type[T], data: dict[str, Any] | None, source: str = "<dict>") -> T:
    """Build dataclass ``cls`` from a plain mapping; errors name ``source`` and the key."""
    _check_not_moved(cls, dict(data or {}), source)
    try:
        return _build(cls, dict(data or {}), "")
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=2e-4"`` -> ``("train.lr", 2e-4)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: bad key path")
    value = yaml.safe_load(raw) if raw.strip() else ""
    # YAML reads 2e-4 as a string (no dot in the mantissa); numbers are what users mean.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            pass
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"]["c"] = value`` for key ``"a.b.c"``, creating sections as needed."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def moved_of(cls: type) -> dict[str, str]:
    """A config class's moved keys (class attribute ``MOVED``): ``{old dotted key: new dotted key}``."""
    return getattr(cls, "MOVED", {})


def _check_not_moved(cls: type, data: dict[str, Any], source: str) -> None:
    for old, new in moved_of(cls).items():
        if _has_dotted(data, old):
            raise ConfigError(f"{source}: {old}: moved to {new}")


def check_key_path(cls: type, key: str) -> Any:
    """Return the type at dotted ``key`` of dataclass ``cls`` (``str`` for one of its switches); ConfigError
    if no such key (naming the new key of one that moved)."""
    if key in moved_of(cls):
        raise ConfigError(f"{key}: moved to {moved_of(cls)[key]}")
    if key in switches_of(cls):
        return str
    tp: Any = cls
    walked = []
    for part in key.split("."):
        if not dataclasses.is_dataclass(tp):
            if get_origin(tp) is dict:
                tp = get_args(tp)[1] if get_args(tp) else Any
                walked.append(part)
                continue
            raise ConfigError(f"{key}: {'.'.join(walked) or '<root>'} has no sub-keys")
        hints = _hints(tp)
        if part not in hints:
            names = {f.name for f in dataclasses.fields(tp)}
            where = ".".join([*walked, part])
            raise ConfigError(f"{where}: unknown key{_closest(part, names)}")
        tp = hints[part]
        walked.append(part)
        # Optional[Section] -> Section
        if get_origin(tp) in (Union, types.UnionType):
            non_none = [a for a in get_args(tp) if a is not type(None)]
            if len(non_none) == 1:
                tp = non_none[0]
    return tp


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_raw(path: str | Path) -> dict[str, Any]:
    """Read a YAML config, following ``base: other.yaml`` or ``base: [a.yaml, b.yaml]`` (relative to the file,
    merged in order, later files winning, this file last) recursively."""
    path = Path(path)
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: base: expected a file path or a list of them, got {base!r}")
    merged: dict[str, Any] = {}
    for name in bases:
        merged = _merge(merged, load_raw(path.parent / name))
    return _merge(merged, data)


def switches_of(cls: type) -> dict[str, dict[str, dict[str, Any]]]:
    """A config class's switches (class attribute ``SWITCHES``): top-level keys that are not fields but set
    several fields at once, ``{switch: {choice: {dotted key: value}}}``."""
    return getattr(cls, "SWITCHES", {})


def _has_dotted(data: dict[str, Any], key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _apply_switches(
    cls: type, data: dict[str, Any], chosen: dict[str, Any], explicit: dict[str, Any], source: str
) -> None:
    """Set every key of each chosen switch setting that ``explicit`` does not set itself."""
    for name, choice in chosen.items():
        table = switches_of(cls)[name]
        if choice not in table:
            raise ConfigError(f"{source}: {name}: must be one of {', '.join(table)}, got {choice!r}")
        for key, value in table[choice].items():
            if not _has_dotted(explicit, key):
                set_dotted(data, key, value)


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Load ``path`` (may be ``None`` for defaults) into ``cls`` and apply dotted ``overrides``. A switch
    (see :func:`switches_of`) sets its keys wherever the files and overrides do not set them."""
    data = load_raw(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    chosen = {name: data.pop(name) for name in list(data) if name in switches_of(cls)}
    for text in overrides:
        key, value = parse_override(text)
        try:
            tp = check_key_path(cls, key)
        except ConfigError as err:
            raise ConfigError(f"override {text!r}: {err}") from None
        if tp is str:  # a string key keeps the text as typed (a run id like 1e5a... is not a number)
            value = text.split("=", 1)[1].strip()
        if key in switches_of(cls):
            chosen[key] = value
        else:
            set_dotted(data, key, value)
    if overrides:
        source += " + overrides"
    _apply_switches(cls, data, chosen, data, source)
    return from_dict(cls, data, source)


def replace_dotted(obj: T, values: dict[str, Any], source: str = "<overrides>") -> T:
    """A copy of config ``obj`` with dotted-key ``values`` applied and re-validated; a switch among them sets
    its keys except those ``values`` sets itself."""
    data = to_dict(obj)
    chosen, explicit = {}, {}
    for key, value in values.items():
        try:
            check_key_path(type(obj), key)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        if key in switches_of(type(obj)):
            chosen[key] = value
        else:
            set_dotted(data, key, value)
            set_dotted(explicit, key, value)
    _apply_switches(type(obj), data, chosen, explicit, source)
    return from_dict(type(obj), data, source)


def dump_yaml(obj: Any, with_docs: bool = False) -> str:
    """The resolved config as YAML; with ``with_docs`` each key gets its docstring as a comment."""
    if not with_docs:
        return yaml.safe_dump(to_dict(obj), sort_keys=False)
    lines: list[str] = []
    _dump_commented(obj, 0, lines)
    return "\n".join(lines) + "\n"


def _dump_commented(obj: Any, indent: int, lines: list[str]) -> None:
    docs = field_docs(type(obj))
    pad = " " * indent
    for f in dataclasses.fields(obj):
        doc = docs.get(f.name)
        if doc:
            for line in doc.splitlines():
                lines.append(f"{pad}# {line}")
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:")
            _dump_commented(value, indent + 2, lines)
        else:
            text = yaml.safe_dump(to_dict(value), default_flow_style=True, width=10_000).strip()
            text = text.removesuffix("...").strip()  # PyYAML ends a bare scalar document with "..."
            lines.append(f"{pad}{f.name}: {text}")


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train.lr": 1e-4, ...}``: the dotted view logged as MLflow params."""
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
