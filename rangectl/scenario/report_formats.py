"""Validation results as text, JSON, JUnit XML and GitHub Actions annotations."""

from __future__ import annotations

import json
from xml.sax.saxutils import escape, quoteattr

from rangectl.scenario.loader import Problem
from rangectl.scenario.validate import FileResult


def as_json(results: list[FileResult], extra: list[Problem]) -> str:
    files = [
        {"file": str(r.path), "valid": r.ok, "problems": [p.as_dict() for p in r.problems]} for r in results
    ]
    return json.dumps(
        {
            "valid": all(r.ok for r in results) and not extra,
            "files": files,
            "errors": [p.as_dict() for p in extra],
        },
        indent=2,
    )


def as_junit(results: list[FileResult], extra: list[Problem]) -> str:
    failures = sum(1 for r in results if not r.ok) + len(extra)
    total = len(results) + len(extra)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<testsuites name="rangectl validate" tests="{total}" failures="{failures}">',
        f'  <testsuite name="scenarios" tests="{total}" failures="{failures}">',
    ]
    for r in results:
        name = quoteattr(str(r.path))
        if r.ok:
            out.append(f'    <testcase classname="rangectl.validate" name={name}/>')
        else:
            body = escape("\n".join(str(p) for p in r.problems))
            msg = quoteattr(f"{len(r.problems)} problem(s): {r.problems[0].path}: {r.problems[0].message}")
            out.append(f'    <testcase classname="rangectl.validate" name={name}>')
            out.append(f"      <failure message={msg}>{body}</failure>")
            out.append("    </testcase>")
    for p in extra:
        out.append(f'    <testcase classname="rangectl.validate" name={quoteattr(p.file)}>')
        out.append(f"      <failure message={quoteattr(p.message)}>{escape(str(p))}</failure>")
        out.append("    </testcase>")
    out += ["  </testsuite>", "</testsuites>"]
    return "\n".join(out)


def _gh_escape(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(s: str) -> str:
    return _gh_escape(s).replace(":", "%3A").replace(",", "%2C")


def as_github(results: list[FileResult], extra: list[Problem]) -> str:
    lines = []
    for p in [p for r in results for p in r.problems] + extra:
        title = f"rangectl: {p.path}" if p.path else "rangectl"
        lines.append(
            f"::error file={_gh_prop(p.file)},line={p.line},col={p.col},title={_gh_prop(title)}::{_gh_escape(p.message)}"
        )
    return "\n".join(lines)
