"""Read policy files (YAML) into :class:`~scaler.core.policy.PolicyFile`, reporting every problem by line.

Each problem prints as ``file:line: field: message`` and names the offending value, so an SRE can fix
the file from that line alone. The YAML is composed into a node tree first (safe tags only), which
gives line numbers for pydantic's error locations, catches duplicate keys (YAML would silently keep
the last one) and refuses non-text keys and tags. Plain scalars follow YAML 1.2: ``17:00`` is text
(YAML 1.1 reads the base-60 integer 1020), ``010`` is not octal 8, ``2025-01-01`` is not a date.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from scaler.core.policy import EXTENSION_PREFIX, SERVERLESS_TARGETS, ModelPolicy, PolicyFile
from scaler.files import FileRefusedError, read_regular_file

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # PyYAML built without libyaml: same results, about 5x slower
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

MAX_POLICY_BYTES = 1024 * 1024  # refused before parsing; a policy for 100 models is about 50 KB
MAX_YAML_NODES = 50_000  # values a file may hold (~600 fully written models), aliases counted per use
MAX_PROBLEMS = 50  # per file: past that, one line says how many more


_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_KIND = {
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    _INT: "an integer",
    _FLOAT: "a number",
    _STR: "text",
}
_SHOWN_MAX = 60


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy file: where (source, 1-based line, dotted field) and what."""

    source: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        """Return ``source:line: field: message`` (line and field left out when unknown)."""
        head = f"{self.source}:{self.line}" if self.line is not None else self.source
        return ": ".join([head, *([self.field] if self.field else []), self.message])


class PolicyError(Exception):
    """One or more policy files are invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclasses.dataclass(frozen=True)
class FileResult:
    """The outcome of reading one file: its policy, or the problems that stopped it."""

    source: str
    policy: PolicyFile | None
    problems: list[Problem]
    name_lines: list[int | None] = dataclasses.field(default_factory=list)


class _Loader(_BaseLoader):
    """SafeLoader with YAML 1.2 plain scalars: no base-60 or 0-octal integers, no dates; 1e-5 is a float."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT, _TIMESTAMP)]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def load_policy_file(path: Path) -> PolicyFile:
    """Return the validated policy in ``path``; raise PolicyError listing every problem found."""
    result = read_policy_file(path)
    if result.policy is None:
        raise PolicyError(result.problems)
    return result.policy


def parse_policy_text(text: str, *, source: str) -> PolicyFile:
    """Return the validated policy in ``text`` (``source`` names it in problems); raise PolicyError."""
    result = _parse(text, source=source)
    if result.policy is None:
        raise PolicyError(result.problems)
    return result.policy


def load_policies(paths: Sequence[Path]) -> dict[str, ModelPolicy]:
    """Return every model of every file by name; raise PolicyError for bad files or a name defined twice."""
    results = [read_policy_file(path) for path in paths]
    problems = [p for r in results for p in r.problems] + duplicate_models(results)
    if problems:
        raise PolicyError(problems)
    return {m.name: m for r in results if r.policy is not None for m in r.policy.models}


def duplicate_models(results: Sequence[FileResult]) -> list[Problem]:
    """Return a problem for each model name defined again after its first definition (in any file)."""
    first: dict[str, tuple[str, int | None]] = {}
    problems: list[Problem] = []
    for result in results:
        if result.policy is None:
            continue
        for index, model in enumerate(result.policy.models):
            line = result.name_lines[index] if index < len(result.name_lines) else None
            if model.name in first:
                where, where_line = first[model.name]
                at = f"{where}:{where_line}" if where_line is not None else where
                message = f"model {model.name!r} is already defined in {at}"
                problems.append(Problem(result.source, line, f"models[{index}].name", message))
            else:
                first[model.name] = (result.source, line)
    return problems


def read_policy_file(path: Path) -> FileResult:
    """Return the result of reading ``path``: never raises, never blocks on a bad, missing or odd file.

    Only regular files (or links to one) of at most MAX_POLICY_BYTES are read, without blocking on
    a FIFO or device (see :func:`scaler.files.read_regular_file`).
    """
    source = str(path)

    def fail(message: str, line: int | None = None) -> FileResult:
        return FileResult(source, None, [Problem(source, line, "", message)])

    try:
        data = read_regular_file(path, max_bytes=MAX_POLICY_BYTES, what="policy file")
    except FileRefusedError as exc:
        return fail(str(exc))
    except FileNotFoundError:
        return fail("no such file")
    except PermissionError:
        return fail("cannot read the file: permission denied")
    except OSError as exc:
        return fail(f"cannot read the file: {exc.strerror or exc}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return fail(f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded", line)
    return _parse(text, source=source)


# --- parsing -------------------------------------------------------------------------------------


def _parse(text: str, *, source: str) -> FileResult:
    if len(text) > MAX_POLICY_BYTES:
        limit = MAX_POLICY_BYTES // 1024
        message = f"text is {len(text)} characters; policy files are limited to {limit} KiB"
        return FileResult(source, None, [Problem(source, None, "", message)])
    composed = _compose(text, source=source)
    if not isinstance(composed, tuple):
        return FileResult(source, None, _capped(composed))
    root, data = composed
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith(EXTENSION_PREFIX))}
    duplicates = _duplicate_names(root, source=source)
    try:
        policy = PolicyFile.model_validate(data)
    except ValidationError as exc:
        # the only top-level check is for duplicate model names, located precisely above
        errors = [e for e in exc.errors() if not (duplicates and e["loc"] == ())]
        problems = duplicates + [_problem(e, root=root, source=source) for e in errors]
        return FileResult(source, None, _capped(problems))
    except RecursionError:
        return FileResult(source, None, [Problem(source, None, "", "YAML is nested too deeply")])
    name_lines: list[int | None] = [_line_at(root, ("models", i, "name")) for i in range(len(policy.models))]
    return FileResult(source, policy, [], name_lines)


def _capped(problems: list[Problem]) -> list[Problem]:
    """Return at most MAX_PROBLEMS problems, the last saying how many more there were."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    more = Problem(problems[0].source, None, "", f"... and {len(problems) - MAX_PROBLEMS + 1} more problems")
    return [*problems[: MAX_PROBLEMS - 1], more]


def _compose(text: str, *, source: str) -> tuple[MappingNode, dict[Any, Any]] | list[Problem]:
    """Return the node tree and plain data of a YAML mapping, or the problems that prevent it."""

    def fail(message: str, line: int | None = None) -> list[Problem]:
        return [Problem(source, line, "", message)]

    loader: _Loader | None = None
    too_many = f"file has more than {MAX_YAML_NODES} YAML values; split it or remove unused ones"
    try:
        if _count_nodes(text, stop_after=MAX_YAML_NODES) > MAX_YAML_NODES:
            return fail(too_many)  # refused before the (costlier) node tree is built
        loader = _Loader(text)
        root = loader.get_single_node()
        if root is None:
            return fail("file is empty; expected a mapping with a 'models' list")
        if not isinstance(root, MappingNode):
            return fail(f"top level must be a mapping with a 'models' list, got {_shown(root)}", _line(root))
        problems = _check_nodes(root, loader=loader, source=source)
        if problems:
            return problems
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ", ".join(str(part) for part in (exc.context, exc.problem) if part) or "invalid YAML"
        label = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
        return fail(f"{label}: {what}", mark.line + 1 if mark is not None else None)
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else 0
        return fail(f"character U+{char:04X} is not allowed in YAML", text[: exc.position].count("\n") + 1)
    except yaml.YAMLError as exc:
        return fail(f"YAML error: {exc}")
    except RecursionError:
        return fail("YAML is nested too deeply")
    except (ValueError, TypeError, OverflowError) as exc:
        return fail(f"YAML value cannot be read: {exc}")
    finally:
        if loader is not None:
            loader.dispose()
    return root, data


_NODE_EVENTS = (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent, yaml.AliasEvent)


def _count_nodes(text: str, *, stop_after: int) -> int:
    """Return how many YAML values ``text`` writes out (aliases once), counting at most ``stop_after + 1``.

    Raises yaml.YAMLError for text that does not parse. Parse events cost a fraction of building nodes.
    """
    loader = _Loader(text)
    count = 0
    try:
        while count <= stop_after and loader.check_event():
            if isinstance(loader.get_event(), _NODE_EVENTS):
                count += 1
    finally:
        loader.dispose()
    return count


def _duplicate_names(root: Node, *, source: str) -> list[Problem]:
    """Return a problem for each model name used again in the same file, at the repeated name."""
    models, _, matched = _walk(root, ("models",))
    if matched != 1 or not isinstance(models, SequenceNode):
        return []
    seen: dict[str, int] = {}
    problems: list[Problem] = []
    for index in range(len(models.value)):
        node, key, matched = _walk(models, (index, "name"))
        if matched != 2 or not isinstance(node, ScalarNode) or node.tag != _STR or key is None:
            continue
        if node.value in seen:
            message = f"model {node.value!r} is already defined on line {seen[node.value]}"
            problems.append(Problem(source, _line(key), f"models[{index}].name", message))
        else:
            seen[node.value] = _line(key)
    return problems


def _check_nodes(root: Node, *, loader: _Loader, source: str) -> list[Problem]:
    """Return problems YAML itself lets through: duplicate keys, non-text keys, tags, alias bombs."""
    problems: list[Problem] = []
    stack: list[tuple[Node, tuple[str | int, ...]]] = [(root, ())]
    count = 0
    while stack:
        node, path = stack.pop()
        count += 1
        if count > MAX_YAML_NODES:
            message = f"file expands to more than {MAX_YAML_NODES} YAML values (check anchors and aliases)"
            return [*problems, Problem(source, None, "", message)]
        tag = _explicit_tag(node, loader)
        if tag is not None:
            message = f"YAML tag {tag} is not allowed in a policy file; write the value without it"
            problems.append(Problem(source, _line(node), _field(path), message))
        elif isinstance(node, SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
        elif isinstance(node, MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.tag == _MERGE:
                    stack.append((value, path))
                    continue
                if not isinstance(key, ScalarNode) or key.tag != _STR:
                    message = f"keys must be text, got {_shown(key)}"
                    if isinstance(key, ScalarNode):
                        message += f' (write "{key.value}" in quotes)'
                    problems.append(Problem(source, _line(key), _field(path), message))
                    continue
                if key.value in seen:
                    message = f"duplicate key {key.value!r} (first on line {seen[key.value]})"
                    problems.append(Problem(source, _line(key), _field((*path, key.value)), message))
                    continue
                seen[key.value] = _line(key)
                stack.append((value, (*path, key.value)))
    return sorted(set(problems), key=lambda p: (p.line or 0, p.field))


def _explicit_tag(node: Node, loader: _Loader) -> str | None:
    """Return the tag written on ``node`` (as !!name) unless it is the plain default or !!str."""
    if isinstance(node, ScalarNode):
        resolve: Callable[[type[Node], str, tuple[bool, bool]], str] = loader.resolve
        default = resolve(ScalarNode, node.value, (not node.style, bool(node.style)))
        allowed = {default, _STR}
    else:
        allowed = {"tag:yaml.org,2002:seq" if isinstance(node, SequenceNode) else "tag:yaml.org,2002:map"}
    return None if node.tag in allowed else str(node.tag).replace("tag:yaml.org,2002:", "!!")


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _field(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _walk(root: Node, loc: Sequence[str | int]) -> tuple[Node, Node | None, int]:
    """Return (deepest node on the path, its key node or None, how many loc parts were matched)."""
    node: Node = root
    key_node: Node | None = None
    for depth, part in enumerate(loc):
        child: tuple[Node | None, Node] | None = None
        if isinstance(node, MappingNode) and isinstance(part, str):
            # after merges the last occurrence of a key is the one in force
            pairs = reversed(node.value)
            child = next(((k, v) for k, v in pairs if isinstance(k, ScalarNode) and k.value == part), None)
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = (None, node.value[part])
        if child is None:
            return node, key_node, depth
        key_node, node = child
    return node, key_node, len(loc)


def _line_at(root: Node, loc: Sequence[str | int]) -> int:
    node, key, _ = _walk(root, loc)
    return _line(key if key is not None else node)


def _shown(node: Node | None, value: object = None) -> str:
    """Return a value as the SRE wrote it: the scalar's source text, or what kind of node it is."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return f"a list of {len(node.value)}"
    if isinstance(node, ScalarNode):
        text = str(node.value)
        if node.style in ("'", '"'):
            text = f"{node.style}{text}{node.style}"
        elif node.value == "":
            text = "nothing (null)"
    else:
        text = repr(value)
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."


_EXPECTED = {
    "float_type": "a number",
    "int_type": "a whole number",
    "string_type": "text",
    "bool_type": "true or false",
    "list_type": "a list",
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "finite_number": "a finite number",
}
_COMPARE = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _problem(err: Any, *, root: Node, source: str) -> Problem:
    """Return the Problem for one pydantic error, located in the YAML and naming the value."""
    tagged: tuple[str | int, ...] = tuple(err["loc"])
    kind: str = err["type"]
    loc = _untagged(tagged) + (("backend",) if kind == "union_tag_invalid" else ())
    ctx: dict[str, Any] = err.get("ctx") or {}
    node, key, matched = _walk(root, loc)
    line = _line(key if key is not None and matched == len(loc) else node)
    exact = node if matched == len(loc) else None
    got = _shown(exact, err.get("input"))
    if kind == "missing":
        message = "required, but missing"
    elif kind == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}" + _suggest(tagged)
    elif kind in _EXPECTED:
        message = f"must be {_EXPECTED[kind]}, got {got}" + _hint(kind, exact)
    elif kind in _COMPARE:
        limit = next(iter(ctx.values()))
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        message = f"must be {_COMPARE[kind]} {limit}, got {got}"
    elif kind in ("too_short", "too_long"):
        message = f"must have {_length_bound(kind, ctx)} items, got {ctx.get('actual_length')}"
    elif kind in ("string_too_short", "string_too_long"):
        message = f"must be {_length_bound(kind, ctx)} characters long, got {got}"
    elif kind == "literal_error":
        message = f"must be {ctx.get('expected')}, got {got}"
    elif kind == "string_pattern_mismatch":
        message = f"must match {ctx.get('pattern')}, got {got}"
        if loc[-1] == "name":
            rule = "letters, digits and . _ : / -, starting with a letter or digit"
            message = f"must be a name of {rule}, got {got}"
    elif kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", err["msg"]))
    else:
        message = _backend_tag(kind, ctx) or f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got}"
    return Problem(source, line, _field(loc), message)


def _backend_tag(kind: str, ctx: dict[str, Any]) -> str:
    """Return the message for a missing or unknown serverless ``backend`` ('' for other errors)."""
    if kind == "union_tag_not_found":
        return f"required, but missing: backend, one of {', '.join(map(repr, SERVERLESS_TARGETS))}"
    if kind == "union_tag_invalid":
        return f"must be one of {ctx.get('expected_tags')}, got {ctx.get('tag')!r}"
    return ""


def _length_bound(kind: str, ctx: dict[str, Any]) -> str:
    return f"at least {ctx.get('min_length')}" if "short" in kind else f"at most {ctx.get('max_length')}"


def _hint(kind: str, node: Node | None) -> str:
    """Return a hint for the usual YAML typing mistakes (quoted numbers, unquoted yes/no, 17:00)."""
    if not isinstance(node, ScalarNode):
        return ""
    if node.tag == "tag:yaml.org,2002:null":
        return ""
    if kind == "int_type" and node.tag == _FLOAT:
        return " (write it without a decimal point)"
    if kind in ("float_type", "int_type") and not node.style and node.value[:1] == "0":
        return " (text: a number must not start with 0)"
    if kind in ("float_type", "int_type") and node.style in ("'", '"'):
        return " (quoted, so it is text: remove the quotes)"
    if kind == "string_type" and node.tag in _KIND:
        return f" (YAML reads it as {_KIND[node.tag]}; put it in quotes)"
    if node.tag in _KIND and node.tag != _STR:
        return f" ({_KIND[node.tag]})"
    return ""


def _suggest(loc: Sequence[str | int]) -> str:
    """Return "; did you mean 'x'?" for an unknown key, or the list of valid keys."""
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    valid = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return "; valid keys: " + ", ".join(valid)


def _untagged(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """Return ``loc`` without the backend tag pydantic puts after ``serverless`` (not a YAML key)."""
    out: list[str | int] = []
    for part in loc:
        if not (out and out[-1] == "serverless" and part in SERVERLESS_TARGETS):
            out.append(part)
    return tuple(out)


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = PolicyFile
    previous: str | int | None = None
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        if previous == "serverless" and part in SERVERLESS_TARGETS:  # the backend's own model
            model = SERVERLESS_TARGETS[str(part)]
        else:
            info = model.model_fields.get(part)
            model = _find_model(info.annotation) if info is not None else None
        previous = part
    return model


def _find_model(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _find_model(arg)
            if found is not None:
                return found
    return None
