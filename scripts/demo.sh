#!/usr/bin/env bash
# The demo, from a fresh Debian 12 machine as root: installs everything
# (scripts/setup.sh), checks the shipped scenarios, then runs the tet-portal
# drill end to end with a live scoreboard: two teams, the attacks for real, the
# reference responder playing team 1, nothing for team 2; then the scores are
# checked, the after-action report is written to out/demo/ and the range is
# taken down.
# Environment: DEMO_SCENARIO (default scenarios/tet-portal.yaml), DEMO_TIME_SCALE
# (default: auto, the drill in about 2.5 minutes), RANGECTL_LANG=vi for Vietnamese.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
RC=.venv/bin/rangectl
SCENARIO=${DEMO_SCENARIO:-scenarios/tet-portal.yaml}
OUT=out/demo

echo "== validate the shipped scenarios"
$RC validate scenarios/
echo "== the range: $SCENARIO"
$RC graph "$SCENARIO"
$RC plan "$SCENARIO" --teams 2
echo "== the drill (self-test: up, attacks, reference responder, scores, down)"
rm -rf "$OUT"
args=(selftest "$SCENARIO" --live --report-dir "$OUT")
[ -n "${DEMO_TIME_SCALE:-}" ] && args+=(--time-scale "$DEMO_TIME_SCALE")
$RC "${args[@]}"
name=$(basename "$SCENARIO" .yaml)
echo "== after-action report: $OUT/$name/report.html (also report.md and timeline-team-K.svg)"
