"""Per-team variation end to end (no Docker): seeded values in the plan, answers right for one team
only, a passed-on answer flagged, the team's own values in its texts and playbook variables, and
validation of every {var:NAME} with file, line and field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rangectl.answers import check_answer
from rangectl.backend.provision import build_inventory
from rangectl.drill.wiring import for_team, record_message
from rangectl.plan import plan
from rangectl.scenario.model import Scenario
from rangectl.scenario.variables import draw
from rangectl.scoring.actions import board, submit
from rangectl.solution import fill
from rangectl.state import RangeState
from rangectl.store import EventStore
from tests.unit.test_scoring import POLICY, SCENARIO

T0 = 4_000_000.0


def varied() -> dict:
    sc = copy.deepcopy(SCENARIO)
    sc["name"] = "varied"
    sc["variables"] = {
        "shell": {"pattern": r"[a-z]{6}\.php"},
        "exfil": {"choices": ["cdn-sync.net", "img-cache.org", "static-hub.com"]},
    }
    sc["injects"][0]["message"] = {"en": "Uploads to {var:exfil} seen.", "vi": "Thấy tải lên {var:exfil}."}
    sc["objectives"].append(
        {"id": "shell-file", "category": "analysis", "after": "recon", "points": 80,
         "prompt": "Which file under /uploads is the shell?", "answer": {"value": "{var:shell}"}}
    )
    sc["objectives"].append(
        {"id": "shell-path", "category": "analysis", "after": "recon", "points": 10,
         "answer": {"regex": "(/var/www/html)?/uploads/{var:shell}"}}
    )
    sc["objectives"].append(
        {"id": "gone", "category": "eradication", "after": "recon", "points": 50,
         "check": {"command": {"node": "portal", "run": "test ! -e /var/www/html/uploads/{var:shell}"}}}
    )
    sc["nodes"]["portal"]["vars"] = {"shell_path": "/var/www/html/uploads/{var:shell}"}
    return sc


@pytest.fixture
def rng(tmp_path, monkeypatch):
    monkeypatch.setenv("RANGECTL_HOME", str(tmp_path / "home"))
    src = tmp_path / "project" / "varied.yaml"
    (src.parent / "scoring").mkdir(parents=True)
    src.write_text(json.dumps(varied()))
    (src.parent / "scoring" / "test.yaml").write_text(json.dumps({**POLICY, "max_attempts": None}))
    st = RangeState.create("varied", src, {"teams": 3, "scenario_path": str(src), "seed": "drill-42"})
    s = EventStore(st.db_path)
    s.append("drill.start", {"wall_start": T0, "time_scale": 1.0}, actor="runner", ts=T0)
    for k in (1, 2, 3):
        s.append("inject.start", {"inject": "recon", "drill_t": 60.0}, team=k, actor="runner", ts=T0 + 60)
    s.close()
    return st


def test_the_range_seed_draws_each_teams_values_and_they_differ(rng):
    p = rng.plan()
    assert p.seed == "drill-42"
    sc = Scenario.model_validate(varied())
    assert {t.team: t.values for t in p.teams} == draw(sc.variables, "drill-42", [1, 2, 3])
    for name in ("shell", "exfil"):
        assert len({t.values[name] for t in p.teams}) == 3
    other = plan(sc, 3, "another-seed")
    assert [t.values for t in other.teams] != [t.values for t in p.teams]


def test_an_answer_is_right_for_its_own_team_only(rng):
    p = rng.plan()
    sc = rng.scenario()
    spec = sc.objective("shell-file").answer
    v1, v2 = p.team(1).values["shell"], p.team(2).values["shell"]
    assert check_answer(spec, v1, p.team(1)) and check_answer(spec, v1.upper(), p.team(1))
    assert not check_answer(spec, v1, p.team(2)) and check_answer(spec, v2, p.team(2))
    regex = sc.objective("shell-path").answer
    assert check_answer(regex, f"/var/www/html/uploads/{v1}", p.team(1))
    assert check_answer(regex, f"/uploads/{v1}", p.team(1))
    assert not check_answer(regex, f"/uploads/{v2}", p.team(1))
    # the value is a literal inside the regex: its '.' matches only a dot
    assert not check_answer(regex, "/uploads/" + v1.replace(".", "x"), p.team(1))


def test_another_teams_value_is_wrong_and_flagged_naming_both_teams(rng):
    p = rng.plan()
    v1 = p.team(1).values["shell"]
    assert submit(rng, 1, "shell-file", v1, now=T0 + 300).correct
    r = submit(rng, 2, "shell-file", v1, now=T0 + 320)
    assert not r.correct
    s = EventStore(rng.db_path)
    flags = s.events(kind="submission.flagged")
    s.close()
    assert [(e.team, e.data["other_team"], e.data["reason"], e.data["objective"]) for e in flags] == [
        (2, 1, "another-team", "shell-file")
    ]
    assert flags[0].data["submission"] == r.seq
    b = board(rng)
    assert [f["other_team"] for f in b.team(2).flags] == [1] and b.team(1).flags == []
    assert b.team(2).detail["shell-file"].wrong == 1 and not b.team(2).detail["shell-file"].solved
    # a plain wrong answer is not flagged
    submit(rng, 3, "shell-file", "nothing.php", now=T0 + 330)
    assert board(rng).team(3).flags == []


def test_a_shared_address_answer_is_flagged_too(rng):
    p = rng.plan()
    submit(rng, 3, "scanner-ip", str(p.team(1).ip_of("scanner")), now=T0 + 200)
    assert [(f["reason"], f["other_team"]) for f in board(rng).team(3).flags] == [("another-team", 1)]


def test_an_implausibly_fast_answer_is_flagged_and_keeps_its_points(rng, tmp_path):
    pol = Path(rng.get("scenario_path")).parent / "scoring" / "test.yaml"
    pol.write_text(json.dumps({**POLICY, "max_attempts": None, "flag_fast_seconds": 30}))
    p = rng.plan()
    assert submit(rng, 1, "shell-file", p.team(1).values["shell"], now=T0 + 70).correct  # 10 s after recon
    assert submit(rng, 2, "shell-file", p.team(2).values["shell"], now=T0 + 200).correct  # 140 s after
    b = board(rng)
    assert [(f["reason"], f["objective"]) for f in b.team(1).flags] == [("fast", "shell-file")]
    assert b.team(2).flags == [] and b.team(1).detail["shell-file"].solved


def test_flags_reach_the_board_command_and_the_report(rng, tmp_path):
    from rangectl.cli import app
    from rangectl.report import write_report

    submit(rng, 2, "shell-file", rng.plan().team(1).values["shell"], now=T0 + 320)
    out = CliRunner().invoke(app, ["board", "varied", "--json"])
    assert out.exit_code == 0, out.output
    flags = {t["team"]: t["flags"] for t in json.loads(out.output)["teams"]}
    assert [(f["reason"], f["other_team"]) for f in flags[2]] == [("another-team", 1)]
    assert flags[1] == [] and flags[3] == []
    text = CliRunner().invoke(app, ["board", "varied"], env={"COLUMNS": "200"}).output
    assert "gave team 1's answer to shell-file" in text
    write_report(rng, tmp_path / "aar")
    page = (tmp_path / "aar" / "report.html").read_text()
    assert "Flagged: gave team 1&#x27;s answer to shell-file" in page
    assert "FLAG: gave team 1's answer to shell-file" in (tmp_path / "aar" / "report.md").read_text()


def test_texts_checks_solutions_and_playbook_vars_get_the_teams_own_values(rng, tmp_path):
    p = rng.plan()
    sc = rng.scenario()
    s = EventStore(rng.db_path)
    for k in (1, 2):
        record_message(s, sc.inject("recon"), k, 61.0, values=p.team(k).values)
    msgs = {e.team: e.data["text"] for e in s.events(kind="message")}
    s.close()
    for k in (1, 2):
        ex = p.team(k).values["exfil"]
        assert msgs[k] == {"en": f"Uploads to {ex} seen.", "vi": f"Thấy tải lên {ex}."}
    gone = sc.objective("gone").check
    spec1 = for_team(gone, p.team(1).values)
    assert spec1.command.run == f"test ! -e /var/www/html/uploads/{p.team(1).values['shell']}"
    assert gone.command.run.endswith("{var:shell}")  # the scenario's own spec is untouched
    assert fill("rm /uploads/{var:shell} # {ip:scanner}", p.team(2)) == (
        f"rm /uploads/{p.team(2).values['shell']} # {p.team(2).ip_of('scanner')}"
    )
    inv, _plays = build_inventory("varied", sc, p, Path(rng.get("scenario_path")))
    hosts = inv["all"]["hosts"]
    for k in (1, 2, 3):
        h = next(v for n, v in hosts.items() if v["rangectl_team"] == k and v["rangectl_node"] == "portal")
        assert h["rangectl_vars"] == p.team(k).values
        assert h["shell_path"] == f"/var/www/html/uploads/{p.team(k).values['shell']}"


def test_plan_json_shows_the_values_for_a_seed(tmp_path):
    from rangectl.cli import app

    src = tmp_path / "varied.yaml"
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "test.yaml").write_text(json.dumps(POLICY))
    src.write_text(json.dumps(varied()))
    out = CliRunner().invoke(app, ["plan", str(src), "--teams", "2", "--seed", "s1", "--json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    want = draw(Scenario.model_validate(varied()).variables, "s1", [1, 2])
    assert d["seed"] == "s1" and [t["values"] for t in d["teams"]] == [want[1], want[2]]
    text = CliRunner().invoke(app, ["plan", str(src), "--teams", "2", "--seed", "s1"]).output
    assert f"shell={want[2]['shell']}" in text


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda sc: sc["objectives"][-1]["check"]["command"].update(run="rm /x/{var:shel}"),
         "objectives[8].check.command.run"),
        (lambda sc: sc["injects"][0].update(message="see {var:nope}"), "injects[0].message"),
        (lambda sc: sc["nodes"]["portal"]["vars"].update(x="{var:missing}"), "nodes.portal.vars.x"),
    ],
)
def test_an_unknown_variable_is_a_validation_error_with_file_line_and_field(tmp_path, mutate, where):
    from rangectl.cli import app

    sc = varied()
    mutate(sc)
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "test.yaml").write_text(json.dumps(POLICY))
    f = tmp_path / "bad.yaml"
    f.write_text(json.dumps(sc, indent=1))
    out = CliRunner().invoke(app, ["validate", str(f)])
    assert out.exit_code == 1
    line = next(ln for ln in out.output.splitlines() if "unknown variable" in ln)
    assert line.startswith(f"{f}:") and f" {where}: unknown variable" in line, line
    assert "Traceback" not in out.output


def test_bad_variable_declarations_are_validation_errors(tmp_path):
    from rangectl.cli import app

    sc = varied()
    sc["variables"]["Bad-Name"] = {"choices": ["a", "b"]}
    sc["variables"]["loose"] = {"pattern": "[a-z]+"}
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "test.yaml").write_text(json.dumps(POLICY))
    f = tmp_path / "bad.yaml"
    f.write_text(json.dumps(sc, indent=1))
    out = CliRunner().invoke(app, ["validate", str(f)])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "variables.Bad-Name" in out.output and "without a bound" in out.output


def test_too_few_choices_for_the_teams_is_a_clear_error(tmp_path):
    from rangectl.errors import ScenarioError

    sc = Scenario.model_validate(varied())
    with pytest.raises(ScenarioError, match="variable 'exfil' has 3 possible value.*4 teams"):
        plan(sc, 4, "s")


def test_the_team_api_never_shows_a_variable_unless_a_text_uses_it(rng):
    from fastapi.testclient import TestClient

    from rangectl.access import credentials as creds
    from rangectl.access.api import create_app
    from rangectl.access.ratelimit import RateLimit
    from rangectl.access.service import Settings, TeamService

    creds.ensure_credentials(rng, 3)
    p = rng.plan()
    s = EventStore(rng.db_path)
    for k in (1, 2, 3):
        record_message(s, rng.scenario().inject("recon"), k, 61.0, values=p.team(k).values)
    s.close()
    tok = creds.read_env_file(creds.team_files(rng, 2).env)["RANGECTL_TOKEN"]
    h = {"Authorization": f"Bearer {tok}"}
    with TestClient(create_app(TeamService(rng, Settings(rate=RateLimit(per_minute=0))))) as c:
        seen = " ".join(
            c.get(f"/api/v1/teams/2/{what}", headers=h).text for what in ("briefing", "objectives", "score")
        )
        msgs = c.get("/api/v1/teams/2/messages", headers=h).text
    for k in (1, 3):  # other teams' values: nowhere
        for v in p.team(k).values.values():
            assert v not in seen and v not in msgs
    assert p.team(2).values["shell"] not in seen + msgs  # an answer: never shown
    assert p.team(2).values["exfil"] in msgs  # the message names the team's own exfil domain
