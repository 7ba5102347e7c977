"""Load scenario YAML with line numbers, safely.

Every problem becomes a :class:`Problem` carrying file, line, column and the
dotted field path, so the validator can print ``FILE:LINE:COL: path: message``.
Hostile input (binary junk, huge files, alias bombs, wrong top-level types)
turns into problems, never exceptions.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from rangectl.scenario.model import Scenario

MAX_BYTES = 1_000_000  # a scenario is a few KB; refuse anything this large (docs/scenario-format.md)
MAX_NODES = 200_000  # YAML values after alias expansion


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "col": self.col, "path": self.path, "message": self.message}


@dataclass
class Loaded:
    """A parsed scenario file: the raw tree (with marks) and, if valid in shape, the model."""

    path: Path
    data: Any = None
    scenario: Scenario | None = None
    problems: list[Problem] = field(default_factory=list)
    digest: str = ""

    def locate(self, loc: tuple[Any, ...]) -> tuple[int, int]:
        return locate(self.data, loc)

    def problem(self, loc: tuple[Any, ...], message: str) -> Problem:
        line, col = self.locate(loc)
        return Problem(str(self.path), line, col, dotted(loc), message)


def dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def locate(data: Any, loc: tuple[Any, ...]) -> tuple[int, int]:
    """Best 1-based (line, col) for a path in a ruamel tree: the deepest part that exists."""
    line, col = 1, 1
    node = data
    if hasattr(node, "lc") and node.lc.line is not None:
        line, col = node.lc.line + 1, node.lc.col + 1
    for part in loc:
        try:
            if isinstance(node, CommentedMap) and part in node:
                ln, cl = node.lc.value(part) if not isinstance(node[part], CommentedMap | CommentedSeq) else node.lc.key(part)
                line, col = ln + 1, cl + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                ln, cl = node.lc.item(part)
                line, col = ln + 1, cl + 1
                node = node[part]
            else:
                break
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    return line, col


def _count(node: Any, budget: list[int], seen_depth: int = 0) -> None:
    """Count values with aliases expanded; raise when over budget (alias bombs)."""
    stack = [(node, 0)]
    while stack:
        cur, depth = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise OverflowError
        if depth > 64:
            raise RecursionError
        if isinstance(cur, dict):
            for _k, v in cur.items():
                stack.append((v, depth + 1))
                budget[0] -= 1
        elif isinstance(cur, list):
            stack.extend((v, depth + 1) for v in cur)


def _plain(node: Any) -> Any:
    """Plain Python values for pydantic (ruamel scalars subclass str/int/float)."""
    if isinstance(node, dict):
        return {(_plain(k) if not isinstance(k, str) else str(k)): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, str):
        return str(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _pydantic_message(err: dict[str, Any]) -> str:
    msg = err.get("msg", "invalid")
    typ = err.get("type", "")
    if typ == "extra_forbidden":
        return "unknown field"
    if typ == "missing":
        return "required field is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if typ == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        if "61" in pattern:
            return "must be a slug: lower-case letters, digits and '-' (max 63)"
        if "30" in pattern:
            return "must be a name: lower-case letters, digits, '-' and '_' (max 32)"
        return f"does not match the pattern {pattern}"
    return msg.replace("Input should be", "must be")


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union/tagged-branch markers from a location."""
    out = []
    for part in loc:
        if isinstance(part, str) and (part.startswith("function-") or part in ("str", "dict[", "json-or-python[")):
            continue
        if isinstance(part, str) and ("[" in part and "]" in part and part not in ("",)) and part.split("[")[0] in (
            "dict",
            "list",
            "function-after",
            "function-before",
            "union",
        ):
            continue
        if isinstance(part, str) and part == "from_":
            part = "from"
        out.append(part)
    return tuple(out)


MAX_FLOW_DEPTH = 64


class TooLarge(ValueError):
    """A file over the size cap (read_regular)."""


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``.

    Raises OSError (missing, unreadable), :class:`TooLarge`, or ValueError("is a FIFO")
    for anything that is not a regular file. Never blocks on a FIFO and never reads an
    endless device: stat first, open with O_NONBLOCK, check again on the open file,
    and read at most ``max_bytes + 1`` bytes.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"is {file_kind(st.st_mode)}")
    if st.st_size > max_bytes:
        raise TooLarge(f"file is {st.st_size:,} bytes")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped between stat and open
            raise ValueError(f"is {file_kind(st.st_mode)}")
        chunks = []
        left = max_bytes + 1
        while left > 0:
            b = os.read(fd, min(left, 65536))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > max_bytes:
        raise TooLarge(f"file is larger than {max_bytes:,} bytes")
    return raw


def file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"



def read_small_yaml(path: Path, max_bytes: int, what: str, error: type[Exception]) -> Any:
    """Read a small YAML file (a policy, a report, a solution) keeping line marks.

    Raises ``error("FILE:LINE:COL: message")`` for an unreadable, oversized,
    non-UTF-8 or malformed file (with ``.problem``, the same as a :class:`Problem`);
    returns the round-trip data (None when empty).
    """
    name = str(path)

    def fail(msg: str, line: int = 1, col: int = 1) -> Exception:
        exc = error(f"{name}:{line}:{col}: {msg}")
        exc.problem = Problem(name, line, col, "", msg)  # type: ignore[attr-defined]
        return exc

    try:
        raw = read_regular(path, max_bytes)
    except FileNotFoundError:
        raise fail("file not found") from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    except TooLarge:
        raise fail(f"{what} may be at most {max_bytes:,} bytes") from None
    except ValueError as exc:
        raise fail(f"{exc}; a {what} is a regular file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("not UTF-8 text") from None
    deep = _flow_depth_exceeded(text)
    if deep is not None:
        raise fail("document is nested too deeply", deep)
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise fail(f"invalid YAML: {msg}", (mark.line + 1) if mark else 1, (mark.column + 1) if mark else 1) from None
    except (YAMLError, ValueError, TypeError, RecursionError) as exc:
        raise fail(f"invalid YAML: {' '.join(str(exc).split())[:200]}") from None


def _flow_depth_exceeded(text: str) -> int | None:
    """Line where flow-collection nesting passes MAX_FLOW_DEPTH, else None.

    A cheap scan before the YAML parser, which takes seconds on a megabyte of
    ``[[[[``. Brackets inside quotes and comments are skipped.
    """
    if text.count("[") + text.count("{") <= MAX_FLOW_DEPTH:
        return None
    depth = 0
    quote = ""
    line = 1
    comment = False
    for ch in text:
        if ch == "\n":
            line += 1
            comment = False
            continue
        if comment:
            continue
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "#":
            comment = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_FLOW_DEPTH:
                return line
        elif ch in "]}":
            depth = max(0, depth - 1)
    return None


def load_file(path: Path | str) -> Loaded:
    path = Path(path)
    loaded = Loaded(path=path)
    name = str(path)

    def fail(message: str, line: int = 1, col: int = 1, fpath: str = "") -> Loaded:
        loaded.problems.append(Problem(name, line, col, fpath, message))
        return loaded

    # stat before open: a FIFO is never opened for reading (it would block), a device
    # such as /dev/zero never read (it never ends), and no read goes past MAX_BYTES.
    try:
        raw = read_regular(path, MAX_BYTES)
    except FileNotFoundError:
        return fail("file not found")
    except OSError as exc:
        return fail(f"cannot read: {exc.strerror or exc}")
    except TooLarge as exc:
        return fail(f"{exc}; a scenario file may be at most {MAX_BYTES:,} bytes")
    except ValueError as exc:
        return fail(f"{exc}, not a scenario file (a regular file)")
    loaded.digest = hashlib.sha256(raw).hexdigest()
    if b"\x00" in raw:
        return fail("not a text file (contains NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return fail("not UTF-8 text", line=line)
    if not text.strip():
        return fail("empty file; a scenario starts with 'rangectl: 1'")

    deep = _flow_depth_exceeded(text)
    if deep is not None:
        return fail(f"document is nested too deeply (more than {MAX_FLOW_DEPTH} levels of [ ] or {{ }})", deep)

    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        docs = list(yaml.load_all(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        col = mark.column + 1 if mark else 1
        msg = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        return fail(f"invalid YAML: {msg}", line, col)
    except (YAMLError, RecursionError, ValueError, TypeError) as exc:
        return fail(f"invalid YAML: {' '.join(str(exc).split())[:200]}")
    docs = [d for d in docs if d is not None]
    if not docs:
        return fail("empty file; a scenario starts with 'rangectl: 1'")
    if len(docs) > 1:
        return fail("one scenario per file: found several YAML documents")
    data = docs[0]
    loaded.data = data
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        return fail(f"a scenario is a mapping (rangectl: 1, name: ..., nodes: ...), not {kind}")
    try:
        _count(data, [MAX_NODES])
    except OverflowError:
        return fail(f"document expands to more than {MAX_NODES:,} values (YAML alias bomb?)")
    except RecursionError:
        return fail("document is nested too deeply")
    if "rangectl" in data and data.get("rangectl") != 1:
        line, col = locate(data, ("rangectl",))
        return fail(f"unsupported format version {data.get('rangectl')!r}; this rangectl reads version 1", line, col, "rangectl")

    try:
        loaded.scenario = Scenario.model_validate(_plain(data))
    except ValidationError as exc:
        seen: set[tuple[str, str]] = set()
        for err in exc.errors(include_url=False):
            loc = _clean_loc(tuple(err.get("loc", ())))
            msg = _pydantic_message(err)
            key = (dotted(loc), msg)
            if key in seen:
                continue
            seen.add(key)
            loaded.problems.append(loaded.problem(loc, msg))
    except RecursionError:
        return fail("document is nested too deeply")
    return loaded


def scenario_hash(scenario: Scenario) -> str:
    """A stable digest of a scenario's meaning (not its formatting)."""
    canon = json.dumps(scenario.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]
