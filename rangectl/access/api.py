"""The team API: an HTTP JSON service (FastAPI) that trainees reach from their workstation.

``/api/v1/openapi.json`` and ``/api/v1/health`` are public; everything else
needs ``Authorization: Bearer <team token>``. A guard in front of the
application (pure ASGI, before routing and before the body is read):

* lets only HTTP requests through: a websocket is closed (1008) before it is
  accepted, whatever its path or token, and any other non-HTTP scope is
  dropped (lifespan events pass);
* maps the token to its team (:class:`~rangectl.access.credentials.TokenVerifier`)
  or answers 401, whatever the path (unknown paths included);
* takes one request from the team's budget (:class:`~rangectl.access.ratelimit.TeamBudget`);
  over it, the request is held for ``tarpit`` seconds (1) and answered 429
  with ``Retry-After``, and only counted (``api.throttled``, one summary per
  team and minute), so a flooding team slows itself, not the others; a team
  turned away has a small burst for a minute (no full burst at every restart
  of a pulsed flood);
* lets each team have ``budget.concurrency`` (2) requests in the application
  at once; the rest of that team's wait their turn, so one team's burst
  queues behind itself rather than in front of the other teams;
* refuses bodies over ``max_body`` bytes with 413 (Content-Length or counted);
* adds ``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff``.

A busy event store is a 503 ``{"detail": "busy, retry"}`` with ``Retry-After``.

Team routes are ``/api/v1/teams/{team}/...`` where ``{team}`` is ``me`` or
the token's own team number; anything else is the same 403, whether or not
that team exists. Request bodies are strict pydantic models (unknown fields,
wrong types: 422). Every error body is ``{"detail": "..."}`` (422 adds
``errors`` with location and message, never the input); a bug is a 500 with
``{"detail": "internal error"}`` and no traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sqlite3
import weakref
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rangectl import __version__
from rangectl.access.refusals import REFUSED_KIND, THROTTLED_KIND
from rangectl.access.resets import Refused
from rangectl.access.service import BUSY, ApiError, TeamService
from rangectl.store import StoreBusy, StoreError

log = logging.getLogger("rangectl.access")

PREFIX = "/api/v1"
PUBLIC = {f"{PREFIX}/openapi.json", f"{PREFIX}/health", f"{PREFIX}/room"}  # room: the projector's page
MAX_ANSWER = 1000

Lang = Literal["en", "vi"]
LangQuery = Annotated[Lang, Query(description="language of titles and texts: vi or en")]


# --- request and response models ------------------------------------------------------------------


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SubmitBody(StrictModel):
    answer: str = Field(min_length=1, max_length=MAX_ANSWER, description="the answer, as text")


FieldValue = (
    Annotated[str, Field(max_length=10_000)]
    | int
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
    | None
)


class ReportBody(StrictModel):
    objective: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    fields: dict[Annotated[str, Field(min_length=1, max_length=64)], FieldValue] = Field(
        default_factory=dict, max_length=64, description="report field name -> value"
    )


class Error(BaseModel):
    detail: str


class DrillInfo(BaseModel):
    status: str
    drill_t: float


class WhoAmI(BaseModel):
    team: int
    range: str
    scenario: str


class Briefing(BaseModel):
    team: int
    range: str
    scenario: str
    title: str
    briefing: str
    level: int | None
    duration_seconds: float | None
    drill: DrillInfo
    lang: Lang


class MessageItem(BaseModel):
    seq: int
    drill_t: float
    title: str
    text: str


class Messages(BaseModel):
    team: int
    messages: list[MessageItem]
    last_seq: int


class HintInfo(BaseModel):
    index: int
    cost: int
    taken: bool
    text: str | None = None


class ReportFieldInfo(BaseModel):
    name: str
    prompt: str
    required: bool


class ReportInfo(BaseModel):
    deadline_seconds: float
    due_drill_t: float
    filed: bool
    fields: list[ReportFieldInfo]


class ObjectiveView(BaseModel):
    id: str
    title: str
    prompt: str
    category: str
    kind: Literal["answer", "check", "report"]
    points: int
    solved: bool
    earned: float
    hints: list[HintInfo]
    hints_available: int
    attempts: int | None = None
    max_attempts: int | None = None
    attempts_left: int | None = None
    report: ReportInfo | None = None


class Objectives(BaseModel):
    team: int
    drill: DrillInfo
    objectives: list[ObjectiveView]


class SubmitResult(BaseModel):
    team: int
    objective: str
    accepted: bool
    correct: bool
    attempt: int | None = None
    attempts_left: int | None = None
    refused: str | None = None
    points: float = 0.0
    drill_t: float = 0.0
    retry_after: int | None = None
    seq: int | None = Field(
        description="the event that records the attempt; null when rate limited "
        "(those are summarised: one submission.refused per team, objective and minute)"
    )
    message: str


class HintResult(BaseModel):
    team: int
    objective: str
    index: int
    total: int
    cost: int
    text: str
    drill_t: float
    seq: int


class ReportResult(BaseModel):
    team: int
    objective: str
    accepted: bool
    on_time: bool
    drill_t: float
    deadline_t: float
    seq: int
    message: str


class ScoreObjective(BaseModel):
    id: str
    category: str
    solved: bool
    points: float
    max_points: float
    attempts: int
    hints: int


class Availability(BaseModel):
    up: int
    total: int


class RecordAnchor(BaseModel):
    seq: int
    head: str = Field(description="the full hash of event `seq`: keep it to check the record later")
    ts: float


class Score(BaseModel):
    team: int
    total: float
    rank: int | None
    teams: int | None
    categories: dict[str, float]
    solved: int
    attempts: int
    hints: int
    availability: Availability
    adjustments: float
    record: RecordAnchor | None = Field(
        None, description="the record's latest checkpoint (seq and full head hash), null before the first"
    )
    objectives: list[ScoreObjective]


class BoardRow(BaseModel):
    team: int
    rank: int
    total: float
    solved: int


class BoardView(BaseModel):
    scenario: str
    status: str
    drill_t: float
    teams: list[BoardRow]


class Health(BaseModel):
    ok: bool
    version: str


class ResetResult(BaseModel):
    team: int
    node: str
    accepted: bool
    cost: float
    drill_t: float
    seq: int
    message: str


# --- answers ---------------------------------------------------------------------------------------------


async def submit_response(service: TeamService, team: int, objective_id: str, answer: str) -> JSONResponse:
    """The answer route's whole work, for the routed endpoint and the guard's fast path alike."""
    oid, wait = service.precheck(team, objective_id)
    if wait > 0:  # rate limited: counted, and summarised in the record once a minute
        service.refusals.note(REFUSED_KIND, team, oid, answer)
        status, result, headers = service.refused_result(team, oid, wait)
    elif closed := service.closed_result(team, oid, answer):  # solved / no attempts: counted
        status, result, headers = closed
    else:  # scored by the scoring module's submit, on the scoring thread
        status, result, headers = await service.scoring.submit(team, oid, answer)
    return JSONResponse(result, status_code=status, headers=headers)


SUBMIT_PATH = re.compile(rf"^{PREFIX}/teams/([^/]+)/objectives/([^/]{{1,63}})/submissions$")
JSON_TYPES = (b"application/json", b"application/json; charset=utf-8")


def fast_submit_args(scope: Scope, headers: list, team: int, body: bytes) -> tuple[str, str] | None:
    """(objective id, answer) when this request is a well-formed answer of the token's own team,
    which the guard then serves without routing; ``None`` sends it through the application, which
    answers everything else (another team's path, a malformed body, another content type) as it always has."""
    if scope.get("method") != "POST":
        return None
    m = SUBMIT_PATH.match(scope.get("path", ""))
    if m is None or m.group(1) not in ("me", str(team)):
        return None
    if not any(k == b"content-type" and v.lower() in JSON_TYPES for k, v in headers):
        return None
    try:
        parsed = SubmitBody.model_validate_json(body)
    except ValueError:  # pydantic's ValidationError: the application's 422
        return None
    return m.group(2), parsed.answer


# --- the guard ---------------------------------------------------------------------------------------


def _json_bytes(status: int, body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


SECURITY_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]


def api_error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body or {"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


def busy_response() -> JSONResponse:
    return JSONResponse({"detail": BUSY}, status_code=503, headers={"Retry-After": "1"})


def internal_error_response() -> JSONResponse:
    return JSONResponse({"detail": "internal error"}, status_code=500)


class Guard:
    """Authentication and body size, before routing (pure ASGI)."""

    def __init__(self, app: ASGIApp, service: TeamService, max_body: int):
        self.app = app
        self.service = service
        self.max_body = max_body
        self.fast = True  # answers skip routing (``fast_submit_args``); off: every request is routed
        # per event loop (a test client may run the app on several), team -> its request slots
        self._slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def _reply(
        self, send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        body = _json_bytes(status, {"detail": detail})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *SECURITY_HEADERS,
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _throttle(self, scope: Scope, send: Send, team: int, wait: float) -> None:
        """Over the team's budget: counted, held a moment (the flood slows itself), then 429."""
        path = str(scope.get("path", ""))
        self.service.refusals.note(THROTTLED_KIND, team, None, f"{scope.get('method', '')} {path}")
        hold = self.service.settings.budget.tarpit  # a fixed hold: each flooding connection slows to ~1/s
        if hold > 0:
            await asyncio.sleep(hold)
        retry = str(max(1, math.ceil(wait - hold)))
        await self._reply(
            send,
            429,
            f"too many requests from this team ({self.service.settings.budget.describe()}); "
            f"retry after {retry} s",
            [(b"retry-after", retry.encode())],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        if kind == "websocket":  # the API has none: refused before anything reads the request
            msg = await receive()
            if msg.get("type") == "websocket.connect":
                await send({"type": "websocket.close", "code": 1008, "reason": "HTTP only"})
            return
        if kind != "http":  # nothing else is served
            return
        headers = scope.get("headers") or []
        path = scope.get("path", "")
        team = None
        if path not in PUBLIC:
            token = None
            for k, v in headers:
                if k == b"authorization":
                    try:
                        text = v.decode("latin-1")
                    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
                        text = ""
                    scheme, _, cred = text.partition(" ")
                    if scheme.lower() == "bearer":
                        token = cred.strip()
                    break
            team = self.service.team_for(token) if token else None
            if team is None:
                await self._reply(
                    send,
                    401,
                    "a valid team token is required",
                    [(b"www-authenticate", b'Bearer realm="rangectl"')],
                )
                return
            wait = self.service.over_budget(team)
            if wait > 0:
                await self._throttle(scope, send, team, wait)
                return
            scope.setdefault("state", {})["team"] = team
        if team is None:
            await self._serve(scope, receive, send, headers, None)
            return
        # a team's requests take turns for a few slots: 32 at once from one team wait for each
        # other here (costing nothing), not in the event loop's queue in front of the other teams
        async with self._slot(team):
            await self._serve(scope, receive, send, headers, team)

    async def _fast_submit(self, scope: Scope, team: int, objective_id: str, answer: str, send: Send) -> None:
        """``submit_response`` with the application's error answers (same status, body and headers)."""
        try:
            response = await submit_response(self.service, team, objective_id, answer)
        except ApiError as exc:
            response = api_error_response(exc)
        except (StoreBusy, StoreError, sqlite3.OperationalError) as exc:
            log.warning("event store busy on POST %s: %s", scope.get("path"), exc)
            response = busy_response()
        except Exception:  # noqa: BLE001 - a bug: logged, and the same 500 as the application's
            log.exception("team API error on POST %s", scope.get("path"))
            response = internal_error_response()
        response.raw_headers.extend(SECURITY_HEADERS)
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers}
        )
        await send({"type": "http.response.body", "body": response.body})

    def _slot(self, team: int) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        per = self._slots.get(loop)
        if per is None:
            per = self._slots[loop] = {}
        sem = per.get(team)
        if sem is None:
            sem = per[team] = asyncio.Semaphore(max(1, self.service.settings.budget.concurrency))
        return sem

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, headers: list, team: int | None
    ) -> None:
        # body: declared size first, then counted
        declared = None
        for k, v in headers:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    await self._reply(send, 400, "bad Content-Length")
                    return
        if declared is not None and declared > self.max_body:
            await self._reply(send, 413, f"request body too large (at most {self.max_body} bytes)")
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._reply(send, 413, f"request body too large (at most {self.max_body} bytes)")
                return
            chunks.append(chunk)
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        fast = fast_submit_args(scope, headers, team, body) if self.fast and team is not None else None
        if fast is not None:  # the hot path under load: an answer, served without routing
            await self._fast_submit(scope, team, *fast, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, replay, send_with_headers)


# --- the application -------------------------------------------------------------------------------------


bearer = HTTPBearer(auto_error=False, description="the team token (RANGECTL_TOKEN / RESPOND_TOKEN)")

ERRORS = {
    400: {"model": Error, "description": "malformed request (e.g. a body that is not JSON)"},
    401: {"model": Error, "description": "no or wrong token"},
    403: {"model": Error, "description": "not this token's team"},
    413: {"model": Error, "description": "body too large"},
    429: {"model": Error, "description": "over the team's request budget; see Retry-After"},
    503: {"model": Error, "description": "the drill record is busy: retry after Retry-After seconds"},
    422: {"description": "invalid request"},
}


async def own_team(
    request: Request, team: Annotated[str, Path(description="`me`, or your own team number")]
) -> int:
    mine = request.state.team
    if team != "me" and team != str(mine):
        raise ApiError(403, "forbidden: this token does not give access to that team")
    return mine


Team = Annotated[int, Depends(own_team)]
ObjectiveId = Annotated[str, Path(description="objective id", max_length=63)]


def create_app(service: TeamService) -> FastAPI:
    default_lang = service.settings.lang  # `serve --lang`, else $RANGECTL_LANG, else en
    app = FastAPI(
        title="rangectl team API",
        version=__version__,
        description=(
            "The service a responder team uses during a drill: briefing, messages, objectives, "
            "answers, hints, incident reports and scores. Every route but /health and this "
            "description needs `Authorization: Bearer <team token>`; the team is the token's."
        ),
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return api_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors()[:20]:
            loc = [str(p) for p in e.get("loc", ())]
            errors.append({"loc": loc, "msg": str(e.get("msg", "invalid"))[:200]})
        return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        return JSONResponse(
            {"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    async def _busy(request: Request, exc: Exception) -> JSONResponse:
        log.warning("event store busy on %s %s: %s", request.method, request.url.path, exc)
        return busy_response()

    for busy_exc in (StoreBusy, StoreError, sqlite3.OperationalError):
        app.add_exception_handler(busy_exc, _busy)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("team API error on %s %s", request.method, request.url.path)
        return internal_error_response()

    r = APIRouter(prefix=PREFIX, dependencies=[Security(bearer)], responses=ERRORS)

    @app.get(f"{PREFIX}/health", response_model=Health, tags=["service"])
    def health() -> dict[str, Any]:
        """Is the service up (no token needed; says nothing about the range)."""
        return {"ok": True, "version": __version__}

    @app.get(f"{PREFIX}/room", response_class=HTMLResponse, include_in_schema=False)
    def room(lang: LangQuery = default_lang) -> HTMLResponse:
        """The room's scoreboard for a projector (no token; nothing secret on it; 404 when hidden)."""
        return HTMLResponse(service.room(lang))

    @r.get("/whoami", response_model=WhoAmI, tags=["team"])
    def whoami(request: Request) -> dict[str, Any]:
        """The team this token belongs to."""
        ctx = service.ctx()
        return {"team": request.state.team, "range": service.state.name, "scenario": ctx.scenario.name}

    @r.get("/teams/{team}/briefing", response_model=Briefing, tags=["team"])
    def briefing(team: Team, lang: LangQuery = default_lang) -> dict[str, Any]:
        """The scenario's title and briefing, and the drill clock."""
        return service.briefing(team, lang)

    @r.get("/teams/{team}/messages", response_model=Messages, tags=["team"])
    def messages(
        team: Team,
        lang: LangQuery = default_lang,
        after: Annotated[int, Query(ge=0, le=2**62, description="only messages after this seq")] = 0,
    ) -> dict[str, Any]:
        """Messages (narrative injects) sent to the team, oldest first."""
        return service.messages(team, lang, after)

    @r.get("/teams/{team}/objectives", response_model=Objectives, tags=["objectives"])
    def objectives(team: Team, lang: LangQuery = default_lang) -> dict[str, Any]:
        """The open objectives: prompt, points, hints (and their cost), attempts, report fields."""
        return service.objectives(team, lang)

    @r.get(
        "/teams/{team}/objectives/{objective_id}",
        response_model=ObjectiveView,
        tags=["objectives"],
        responses={404: {"model": Error}},
    )
    def objective(team: Team, objective_id: ObjectiveId, lang: LangQuery = default_lang) -> dict[str, Any]:
        """One open objective."""
        return service.objective(team, objective_id, lang)

    @r.post(
        "/teams/{team}/objectives/{objective_id}/submissions",
        response_model=SubmitResult,
        tags=["objectives"],
        responses={
            404: {"model": Error},
            409: {
                "model": SubmitResult | Error,
                "description": "refused (drill not running, solved, attempts used up: recorded), "
                "or nothing to submit for this objective (a check or report)",
            },
            429: {"model": SubmitResult, "description": "rate limited; see Retry-After"},
        },
    )
    async def submit(team: Team, objective_id: ObjectiveId, body: SubmitBody) -> Any:
        """Submit an answer. Every scored or drill-refused attempt is recorded; rate-limited ones are
        counted and summarised (one event per objective and minute, with a few samples)."""
        return await submit_response(service, team, objective_id, body.answer)

    @r.post(
        "/teams/{team}/objectives/{objective_id}/hints",
        response_model=HintResult,
        tags=["objectives"],
        responses={404: {"model": Error}, 409: {"model": Error}},
    )
    def hint(team: Team, objective_id: ObjectiveId, lang: LangQuery = default_lang) -> dict[str, Any]:
        """Take the objective's next hint (its cost comes off the objective's award)."""
        return service.hint(team, objective_id, lang)

    @r.post(
        "/teams/{team}/reports",
        response_model=ReportResult,
        tags=["objectives"],
        responses={404: {"model": Error}, 409: {"model": Error}},
    )
    def report(team: Team, body: ReportBody) -> dict[str, Any]:
        """File an incident report for a report objective (the first accepted one counts)."""
        return service.report(team, body.objective, dict(body.fields))

    @r.post(
        "/teams/{team}/nodes/{node}/reset",
        response_model=ResetResult,
        status_code=202,
        tags=["nodes"],
        responses={404: {"model": Error}, 409: {"model": Error}},
    )
    def reset_node(
        team: Team, node: Annotated[str, Path(description="node name", max_length=63)]
    ) -> dict[str, Any]:
        """Re-create one of the team's own nodes the scenario lets it reset, at the policy's reset_cost
        (recorded; the node comes back from its image and playbooks in about a minute)."""
        resets = service.resets
        if resets is None:
            raise ApiError(404, "this drill does not let teams reset nodes")
        try:
            return resets.request(team, node, service.ctx().policy.reset_cost)
        except Refused as exc:
            raise ApiError(exc.status, exc.message) from None

    @r.get("/teams/{team}/score", response_model=Score, tags=["scores"])
    def score(team: Team) -> dict[str, Any]:
        """The team's own score, per category and open objective."""
        return service.score(team)

    @r.get("/board", response_model=BoardView, tags=["scores"], responses={403: {"model": Error}})
    def board() -> dict[str, Any]:
        """The public scoreboard (rank, total, solved), unless the trainer hid it."""
        return service.board()

    app.include_router(r)
    return Guard(app, service, service.settings.max_body)  # type: ignore[return-value]


def openapi_of(asgi: Any) -> dict[str, Any]:
    """The OpenAPI document of an app made by :func:`create_app`."""
    return asgi.app.openapi()
