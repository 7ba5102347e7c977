#!/usr/bin/env bash
# Mutation testing with mutmut (docs/testing.md, "Mutation testing").
#
#   scripts/mutation.sh [--check] [--keep] [--jobs N] [MODULE...]
#
# MODULE is a key of tests/mutation.json (engine, policy, store, service, validate, plan) or the
# path of its file; the default is every module there. For each module the script copies the
# working tree's package, tests and project files into .mutation/MODULE/ (a snapshot: edits made
# while it runs do not leak in), has mutmut mutate that one file and run the module's unit tests
# (tests/mutation.json) against each mutant, then prints the score (killed/total) and every
# surviving mutant with the line it changed. Exit 1 when a module scores below its threshold.
#
#   --check   only the modules listed under "check" (the scoring engine and the event store): what
#             CI runs on every commit, without each module's "check_deselect" tests (slow ones whose
#             mutants faster tests kill too); a warning when it takes over MUTATION_CHECK_TIMEOUT s (600)
#   --keep    reuse .mutation/MODULE/ from the last run: mutants of changed functions rerun, and so
#             do the last run's survivors (against the current tests); the other verdicts stand
#   --jobs N  parallel mutants (default: the number of CPUs)
#
# Results stay in .mutation/MODULE/ (git-ignored): `cd .mutation/store && ../../.venv/bin/mutmut
# show NAME` shows one mutant's diff, `mutmut browse` all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY="$ROOT/.venv/bin/python"
MUTMUT="$ROOT/.venv/bin/mutmut"
CONFIG=tests/mutation.json

die() {
    printf 'mutation.sh: error: %s\n' "$*" >&2
    exit 2
}

check=0
keep=0
jobs=$(nproc 2>/dev/null || echo 2)
mods=()
while [ $# -gt 0 ]; do
    case "$1" in
    --check) check=1 ;;
    --keep) keep=1 ;;
    --jobs)
        [ $# -ge 2 ] || die "--jobs needs a number"
        jobs=$2
        shift
        ;;
    -h | --help)
        awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) mods+=("$1") ;;
    esac
    shift
done
[ -x "$MUTMUT" ] || die "mutmut is not installed in .venv (run scripts/setup.sh: it installs the dev dependencies)"
[ -f "$CONFIG" ] || die "$CONFIG is missing"

# module keys: from the arguments (keys or paths), --check's list, or all of them
mapfile -t keys < <("$PY" - "$check" "${mods[@]}" <<'PY'
import json, sys
cfg = json.load(open("tests/mutation.json"))
check, args = sys.argv[1] == "1", sys.argv[2:]
by_path = {m["path"]: k for k, m in cfg["modules"].items()}
if check:
    args = args or cfg["check"]
for a in args or list(cfg["modules"]):
    k = a if a in cfg["modules"] else by_path.get(a.lstrip("./"))
    if k is None:
        sys.exit(f"mutation.sh: error: unknown module {a!r} (one of: {', '.join(cfg['modules'])})")
    print(k)
PY
)
[ ${#keys[@]} -gt 0 ] || exit 2

run_module() {
    local key=$1 wd="$ROOT/.mutation/$1"
    [ "$keep" = 1 ] || rm -rf "$wd"
    mkdir -p "$wd/mutants"
    # the snapshot: package, tests and the project files the tests read
    tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - \
        rangectl tests scenarios scoring playbooks images pyproject.toml | tar -C "$wd" -xf -
    # this module's file and tests replace [tool.mutmut]'s lists
    "$PY" - "$key" "$wd" "$check" <<'PY'
import glob, json, re, sys
key, wd, check = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
mod = json.load(open("tests/mutation.json"))["modules"][key]
tests = sorted({t for pat in mod["tests"] for t in glob.glob(pat)})
if not tests:
    sys.exit(f"mutation.sh: error: no test file of {mod['tests']} exists")
path = f"{wd}/pyproject.toml"
text = open(path).read()
def setting(name, value):
    global text
    line = f"{name} = {json.dumps(value)}\n"
    text, n = re.subn(rf"(?ms)^{name} = \[.*?\]\n", lambda m: line, text)
    if n != 1:
        sys.exit(f"mutation.sh: error: pyproject.toml [tool.mutmut] has no single {name} list")
setting("only_mutate", [mod["path"]])
setting("pytest_add_cli_args_test_selection", tests)
# tests known to fail on the current tree for reasons outside this module (tests/mutation.json),
# and under --check the slow tests the check leaves out ("check_deselect")
nodes = mod.get("deselect", []) + (mod.get("check_deselect", []) if check else [])
extra = [a for node in nodes for a in ("--deselect", node)]
# each mutant's tests fastest first (mutmut's fork server passes them in no order, and -x stops at
# the first failure); no unraisable-exception plugin: its gc passes over the forked server's heap
# cost ~0.1 s a mutant and change no verdict
extra += ["-p", "mutation_order", "-p", "no:unraisableexception"]
m = re.search(r"(?ms)^pytest_add_cli_args = \[(.*?)\]\n", text)
if m is None:
    sys.exit("mutation.sh: error: pyproject.toml [tool.mutmut] has no pytest_add_cli_args list")
old_args = json.loads("[" + re.sub(r",\s*$", "", m.group(1).strip()) + "]")
setting("pytest_add_cli_args", old_args + extra)
# a mutant that hangs is killed after (its tests' clean-run time + 1 s) x 8 of wall time (mutmut's
# default, 15, let two hanging store mutants hold both workers for 106 s)
if not re.search(r"(?m)^timeout_multiplier = ", text):
    text = text.replace("[tool.mutmut]\n", "[tool.mutmut]\ntimeout_multiplier = 8.0\n", 1)
open(path, "w").write(text)
PY
    # the pytest plugin that orders each mutant's tests by the durations of mutmut's clean run
    mkdir -p "$wd/plugins"
    cat >"$wd/plugins/mutation_order.py" <<'PY'
"""Written by scripts/mutation.sh: run a mutant's tests fastest first (durations of mutmut's clean run)."""
import json


def pytest_collection_modifyitems(items):
    try:
        with open("mutmut-stats.json") as f:
            took = json.load(f)["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return  # the clean run itself: no durations yet
    items.sort(key=lambda item: took.get(item.nodeid, 0.0))
PY
    echo "== mutation: $key (${jobs} jobs; log: .mutation/$key/mutmut.log)"
    local t0=$SECONDS rc=0
    # PYTHONPATH: tests that start `rangectl` as a subprocess run the mutant too; plugins/ holds
    # mutation_order
    local -x PYTHONPATH="$wd/mutants:$wd/plugins"
    # the tests' files (tmp_path, RANGECTL_HOME) in memory: the event store fsyncs every commit, and
    # on disk those waits doubled the store tests' time
    [ -z "$shm" ] || local -x TMPDIR="$shm"
    (cd "$wd" && CI=true nice -n 5 "$MUTMUT" run --max-children "$jobs" \
        </dev/null >"$wd/mutmut.log" 2>&1) || rc=$?
    if [ "$rc" = 0 ] && [ "$keep" = 1 ]; then
        # mutmut keeps the verdicts of unchanged functions; mutants that survived last time are
        # tried again, since tests may have been added since
        mapfile -t again < <(cd "$wd" && "$MUTMUT" results </dev/null 2>/dev/null |
            sed -n 's/^ *\([^ ]*\): \(survived\|no tests\|suspicious\|timeout\)$/\1/p')
        if [ ${#again[@]} -gt 0 ]; then
            echo "   retrying ${#again[@]} surviving mutant(s) against the current tests"
            (cd "$wd" && CI=true nice -n 5 "$MUTMUT" run --max-children "$jobs" \
                "${again[@]}" </dev/null >>"$wd/mutmut.log" 2>&1) || rc=$?
        fi
    fi
    if [ "$rc" != 0 ]; then
        tr '\r' '\n' <"$wd/mutmut.log" | grep -v -e '^.\{0,3\}\(Generating mutants\|Running\)' | tail -n 40 >&2
        echo "mutation.sh: mutmut failed on $key (exit $rc); full log: .mutation/$key/mutmut.log" >&2
        return 1
    fi
    echo "   $((SECONDS - t0)) s"
}

shm=""
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    shm=$(mktemp -d /dev/shm/rangectl-mutation.XXXXXX)
    trap 'rm -rf "$shm"' EXIT
fi

deadline=""
if [ "$check" = 1 ]; then
    deadline=$((SECONDS + ${MUTATION_CHECK_TIMEOUT:-600}))
fi
failed=0
for key in "${keys[@]}"; do
    run_module "$key" || failed=1
    if [ -n "$deadline" ] && [ "$SECONDS" -gt "$deadline" ]; then
        # a slow machine is not a weaker test suite: say so, but let the scores decide
        echo "mutation.sh: warning: the check took more than ${MUTATION_CHECK_TIMEOUT:-600} s" >&2
    fi
done

# the report: score per module and the surviving mutants with the line each one changed
"$PY" - "$MUTMUT" "${keys[@]}" <<'PY' || failed=1
import json, subprocess, sys
mutmut, keys = sys.argv[1], sys.argv[2:]
cfg = json.load(open("tests/mutation.json"))["modules"]
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
NOT_COUNTED = {"skipped", "not checked"}
summary, bad = {}, []
SHOW = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
out = {}
for n in sys.argv[1:]:
    try:
        out[n] = get_diff_for_mutant(n)
    except Exception:  # noqa: BLE001 - shown without its diff
        out[n] = ""
print(json.dumps(out))
"""


def _diffs(wd, names):
    """Each mutant's diff, in one process (mutmut's own code); `mutmut show` one by one if that fails."""
    if not names:
        return {}
    p = subprocess.run([sys.executable, "-c", SHOW, *names], cwd=wd, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    try:
        return json.loads(p.stdout)
    except ValueError:
        return {n: subprocess.run([mutmut, "show", n], cwd=wd, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL).stdout for n in names}
for key in keys:
    wd = f".mutation/{key}"
    try:
        out = subprocess.run([mutmut, "results", "--all", "true"], cwd=wd, capture_output=True, text=True,
                             check=True, stdin=subprocess.DEVNULL).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        print(f"{cfg[key]['path']}: no results ({exc})")
        bad.append(key)
        continue
    status = {}
    for line in out.splitlines():
        name, _, st = line.strip().rpartition(": ")
        if name:
            status[name] = st
    counted = {n: s for n, s in status.items() if s not in NOT_COUNTED}
    killed = sum(1 for s in counted.values() if s in DETECTED)
    total = len(counted)
    score = 100.0 * killed / total if total else 0.0
    need = cfg[key]["threshold"]
    ok = total > 0 and score >= need
    survivors = sorted((n for n, s in counted.items() if s not in DETECTED), key=lambda n: (n.rsplit("_", 1)[0], int(n.rsplit("_", 1)[1]) if n.rsplit("_", 1)[1].isdigit() else 0))
    summary[key] = {"path": cfg[key]["path"], "killed": killed, "total": total, "score": round(score, 1),
                    "threshold": need, "ok": ok, "survivors": {n: counted[n] for n in survivors}}
    print(f"\n{cfg[key]['path']}: {killed}/{total} killed = {score:.1f}% "
          f"(threshold {need}%: {'ok' if ok else 'BELOW'})")
    diffs = _diffs(wd, survivors)
    for n in survivors:
        diff = diffs.get(n, "").splitlines()
        minus = next((d[1:].strip() for d in diff if d.startswith("-") and not d.startswith("---")), "")
        plus = next((d[1:].strip() for d in diff if d.startswith("+") and not d.startswith("+++")), "")
        print(f"  {counted[n]:<9} {n}\n              - {minus[:140]}\n              + {plus[:140]}")
    if not ok:
        bad.append(key)
json.dump(summary, open(".mutation/summary.json", "w"), indent=2)
print("\nscores: " + ", ".join(f"{k} {v['score']}%" for k, v in summary.items()) + " (.mutation/summary.json)")
sys.exit(1 if bad else 0)
PY
exit "$failed"
