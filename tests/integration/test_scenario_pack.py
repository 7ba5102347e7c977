"""Every shipped scenario proves itself end to end: `rangectl selftest` (up for two teams, the
drill at speed with real traffic, the reference solution for team 1, nothing for team 2,
scores, verify, down). The district-portal and ward-portal-probe examples have no solution
and are not part of the pack."""

from __future__ import annotations

import json

import pytest

from tests.conftest import NINE, ROOT, leftovers, pack_names, run_cli

pytestmark = pytest.mark.docker

PACK = [ROOT / "scenarios" / f"{name}.yaml" for name in pack_names()]


def test_the_pack_is_shipped():
    names = {p.stem for p in PACK}
    assert names >= NINE


@pytest.mark.parametrize("scenario", PACK, ids=[p.stem for p in PACK])
def test_selftest(scenario, docker_engine, built_images, tmp_path):
    out = tmp_path / "result.json"
    p = run_cli("selftest", str(scenario), "--format", "json", "--output", str(out), "--no-live", timeout=900)
    assert out.exists(), p.stderr[-3000:]
    res = json.loads(out.read_text())[0]
    failed = [f"{a['name']}: {a['detail']}" for a in res["assertions"] if not a["ok"]]
    assert p.returncode == 0 and res["ok"], "\n".join(failed) + (f"\nerror: {res['error']}" if res["error"] else "")
    assert res["scores"]["1"] >= res["expected_score"] and res["scores"]["1"] > res["scores"]["2"]
    assert [a["ok"] for a in res["assertions"] if a["name"] == "played-as-trainee"] == [True]
    cs, ns = leftovers(docker_engine, f"selftest-{scenario.stem}")
    assert not cs and not ns
