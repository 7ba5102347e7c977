"""The node-execution seam: run work "inside node X of team K", wherever that node lives.

Traffic generators, arrival counters, check and availability probes run as **jobs**; team
access listens and connects through a **port** on the node. Everything that crosses the seam
is plain data, so an engine on another machine can run the same job and hand back the same
result (docs/architecture.md, "The execution seam"):

- a :class:`Job` names a job function by ``"module:function"`` (a function of rangectl marked
  with :func:`node_job`), its keyword arguments (JSON values only) and an absolute wall-clock
  deadline (``time.time()``), never a monotonic one or a live object;
- the function runs as ``fn(ctl, **args)`` inside the node's network namespace and returns a
  JSON value; :class:`JobControl` tells it the deadline and whether it was asked to stop, and
  lets a long job say it is ready (an arrival counter that is listening);
- an exception in the job comes back as its class (a rangectl error) and message.

:class:`LocalNodeExec` is the implementation for an engine on this machine: a worker thread of
this process switched into the node's namespace with setns(2) (:mod:`rangectl.netns`), the
arguments and the result passed through JSON on the way, so nothing local-only can creep in.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rangectl import netns
from rangectl.backend.base import NodeRef
from rangectl.errors import RangeError

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__rangectl_node_job__"


class JobError(RangeError):
    """A job that failed inside its node (or could not be started there)."""


def node_job(fn: F) -> F:
    """Mark ``fn(ctl, **args)`` as a job a :class:`Job` may name (``"module:function"``)."""
    setattr(fn, _MARK, True)
    return fn


def job_name(fn: Callable[..., Any]) -> str:
    if not getattr(fn, _MARK, False):
        raise ValueError(f"{fn!r} is not a node job (mark it with @node_job)")
    return f"{fn.__module__}:{fn.__qualname__}"


def _resolve(name: str, mark: str, what: str, a_what: str) -> Callable[..., Any]:
    module, sep, attr = name.partition(":")
    if not sep or not module.startswith("rangectl.") or not attr.isidentifier():
        raise JobError(f"'{name}' does not name a rangectl {what} (module:function)")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise JobError(f"no {what} '{name}'") from None
    if not getattr(fn, mark, False):
        raise JobError(f"'{name}' is not {a_what}")
    return fn


def resolve(name: str) -> Callable[..., Any]:
    """The job function ``"module:function"`` names; JobError unless it is a marked rangectl job."""
    return _resolve(name, _MARK, "node job", "a node job")


_SESSION_MARK = "__rangectl_agent_session__"


def agent_session(fn: F) -> F:
    """Mark ``fn(conn, rest, **args)`` as a conversation the engine agent may hand a connection
    to (its ``session`` request names it ``"module:function"``)."""
    setattr(fn, _SESSION_MARK, True)
    return fn


def session_name(fn: Callable[..., Any]) -> str:
    if not getattr(fn, _SESSION_MARK, False):
        raise ValueError(f"{fn!r} is not an agent session (mark it with @agent_session)")
    return f"{fn.__module__}:{fn.__qualname__}"


def resolve_session(name: str) -> Callable[..., Any]:
    """The function ``"module:function"`` names; JobError unless it is marked ``@agent_session``."""
    return _resolve(name, _SESSION_MARK, "agent session", "an agent session")


def plain(value: Any, what: str) -> Any:
    """``value`` as it comes out of JSON (tuples become lists); JobError if it is not plain data."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise JobError(f"{what} is not plain data: {exc}") from None


@dataclass(frozen=True)
class Job:
    """One unit of work for a node: what to run, with what, until when (see the module doc)."""

    fn: str
    args: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None  # absolute, wall clock (time.time())

    @classmethod
    def of(cls, fn: Callable[..., Any], deadline: float | None = None, **args: Any) -> Job:
        return cls(job_name(fn), args, deadline)

    def as_dict(self) -> dict[str, Any]:
        return {"fn": self.fn, "args": self.args, "deadline": self.deadline}


class JobControl:
    """What a running job knows of its caller: the deadline, a stop request, and a way to say
    it is ready (its setup is done: the caller's :meth:`RunningJob.wait_ready` returns)."""

    def __init__(self, deadline: float | None = None):
        self.deadline = deadline
        self._stop = threading.Event()
        self._ready = threading.Event()

    def stopped(self) -> bool:
        return self._stop.is_set() or (self.deadline is not None and time.time() >= self.deadline)

    def remaining(self) -> float | None:
        """Seconds to the deadline (None: no deadline); never negative."""
        return None if self.deadline is None else max(0.0, self.deadline - time.time())

    def monotonic_deadline(self) -> float | None:
        """The deadline on this machine's monotonic clock (for code that times itself with it)."""
        left = self.remaining()
        return None if left is None else time.monotonic() + left

    def wait(self, seconds: float | None = None) -> bool:
        """Sleep until asked to stop, the deadline or ``seconds``; True when asked to stop or past the deadline."""
        limits = [x for x in (seconds, self.remaining()) if x is not None]
        self._stop.wait(min(limits) if limits else None)
        return self.stopped()

    def ready(self) -> None:
        self._ready.set()

    # the caller's side
    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stop_event(self) -> threading.Event:
        """The stop request as an event, for code that takes one (traffic generators)."""
        return self._stop


class RunningJob(ABC):
    """A job started with :meth:`NodeExec.start`."""

    @abstractmethod
    def wait_ready(self, timeout: float | None = None) -> None:
        """Return once the job said it is ready (or ended); raise its error if it failed first."""

    @abstractmethod
    def stop(self) -> None:
        """Ask the job to finish now (it returns its result as of now)."""

    @abstractmethod
    def done(self) -> bool:
        """True once the job ended (its result or error is waiting)."""

    @abstractmethod
    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job's result (plain data) or raise its error. With a ``timeout`` (and, for
        a job that runs elsewhere, its deadline plus :data:`RESULT_GRACE` without one) a job that
        has not ended by then is given up: :class:`JobError`."""


class NodePort(ABC):
    """A pinned handle on one node's network: sockets that live there, used from this process.

    ``identity`` changes when the node is re-created (a new container, a new namespace), so a
    long-lived listener knows to move."""

    identity: tuple[Any, ...]

    @abstractmethod
    def listen(self, host: str, port: int, backlog: int = 64) -> socket.socket:
        """A non-blocking listening TCP socket bound to ``host:port`` in the node."""

    @abstractmethod
    def tcp_socket(self) -> socket.socket:
        """A non-blocking, unconnected TCP socket in the node (connect it from an event loop)."""

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """A non-blocking TCP socket connected to ``host:port`` from inside the node (blocks up to
        ``timeout`` seconds to connect). An engine elsewhere hands back a local socket bridged to
        the connection it made there."""
        s = self.tcp_socket()
        try:
            s.setblocking(True)
            s.settimeout(timeout)
            s.connect((host, port))
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        return s

    @abstractmethod
    def close(self) -> None: ...


class NodeExec(ABC):
    """Run jobs in nodes and attach to them (see the module doc)."""

    @abstractmethod
    def start(self, ref: NodeRef, job: Job) -> RunningJob: ...

    def run(self, ref: NodeRef, job: Job) -> Any:
        """Run ``job`` in ``ref`` and return its result (plain data) or raise its error."""
        return self.start(ref, job).result()

    @abstractmethod
    def attach(self, ref: NodeRef) -> NodePort: ...


def run_here(job: Job, ctl: JobControl | None = None) -> Any:
    """Run ``job`` in the calling thread's namespace as a node would: arguments and result through
    JSON, errors raised as :func:`raise_error` raises them (tests, and a backend's own agent)."""
    fn = resolve(job.fn)
    args = plain(job.args, f"the arguments of {job.fn}")
    try:
        value = fn(ctl or JobControl(job.deadline), **args)
    except BaseException as exc:  # noqa: BLE001 - crosses the seam as data, like a node's
        raise_error(error_record(exc), job.fn.rsplit(":", 1)[-1])
    return plain(value, f"the result of {job.fn}")


# --- errors across the seam ---------------------------------------------------------------------


def error_record(exc: BaseException) -> dict[str, Any]:
    """How a job's exception crosses the seam: class path, message, fix."""
    cls = type(exc)
    message = getattr(exc, "message", None) or str(exc) or cls.__name__
    if isinstance(exc, OSError) and exc.strerror:
        message = f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return {"type": f"{cls.__module__}:{cls.__qualname__}", "message": message, "fix": getattr(exc, "fix", None)}


def raise_error(rec: dict[str, Any], where: str) -> None:
    """Raise the error a job reported: its own class when it is a rangectl error that can be made
    from (message, fix=...), else :class:`JobError` with the class name in the message."""
    module, _, name = str(rec.get("type", "")).partition(":")
    message, fix = str(rec.get("message", "failed")), rec.get("fix")
    cls: Any = None
    if module.startswith("rangectl."):
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            cls = None
    if isinstance(cls, type) and issubclass(cls, RangeError):
        try:
            err = cls(message, fix=fix)
        except TypeError:
            err = None
        if err is not None:
            raise err
    raise JobError(f"{where}: {name or 'error'}: {message}", fix=fix)


# --- on this machine -----------------------------------------------------------------------------

#: (engine id of the running node, pid of its first process): how a local engine names a node's
#: namespace. Raises (RangeError) when the node is not there or not running.
Locate = Callable[[NodeRef], tuple[str, int]]


#: Seconds past a job's deadline its caller still waits for the result of a job that runs
#: elsewhere (:class:`BoxedJob` with a ``deadline``): then the job is given up and its caller
#: goes on. A job ends by its deadline on its own; only a carrier that died without a word (an
#: engine that stopped mid-job) keeps a result from coming.
RESULT_GRACE = 20.0


class BoxedJob(RunningJob):
    """A running job whose outcome lands in a box: ``{"value": ...}`` or ``{"error": record}``
    (:func:`error_record`), then :attr:`_done` is set; :attr:`_ready` is set when the job said it
    is ready (or ended). Subclasses start the work and fill the box.

    A subclass whose job runs elsewhere sets :attr:`deadline` (the job's) and :meth:`_abandon`:
    :meth:`result` then waits no longer than ``deadline + RESULT_GRACE``, and a caller that stops
    waiting (that, or its own ``timeout``) lets the job go."""

    where = ""
    deadline: float | None = None  # wall clock; set by a subclass whose job runs elsewhere

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._done = threading.Event()
        self._box: dict[str, Any] = {}

    def _abandon(self) -> None:
        """Let go of a job whose result the caller no longer waits for (nothing by default)."""

    def _raise(self) -> None:
        if "error" in self._box:
            raise_error(self._box["error"], self.where)

    def wait_ready(self, timeout: float | None = None) -> None:
        self._ready.wait(timeout)
        if self._done.is_set():
            self._raise()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> Any:
        late = timeout is None and self.deadline is not None
        if late:
            assert self.deadline is not None
            timeout = max(0.0, self.deadline - time.time()) + RESULT_GRACE
        if not self._done.wait(timeout):
            self._abandon()
            if late:
                raise JobError(f"{self.where}: no result {RESULT_GRACE:g}s past the job's deadline "
                               "(the engine holding the node stopped answering?)")  # fmt: skip
            raise JobError(f"{self.where}: no result within {timeout:g}s")
        self._raise()
        return self._box.get("value")


class ThreadJob(BoxedJob):
    """A job run by ``work(ctl)`` on a daemon thread of this process; its result (plain data) or
    its error (as data, see :func:`error_record`) waits for :meth:`result`. Local engines and
    the in-memory test backend run jobs this way; ``work`` decides where the job runs."""

    def __init__(self, job: Job, where: str, work: Callable[[JobControl], Any]):
        super().__init__()
        self.job, self.where = job, where
        self.ctl = JobControl(job.deadline)
        self._ready = self.ctl._ready  # the job's own ready() says it

        def body() -> None:
            try:
                self._box["value"] = plain(work(self.ctl), f"the result of {job.fn}")
            except BaseException as exc:  # noqa: BLE001 - handed to the caller as data
                self._box["error"] = error_record(exc)
            finally:
                self.ctl.ready()
                self._done.set()

        self._thread = threading.Thread(target=body, name=f"rangectl-job {where}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.ctl.request_stop()


def _local_job(ref: NodeRef, job: Job, path: str) -> ThreadJob:
    fn = resolve(job.fn)
    args = plain(job.args, f"the arguments of {job.fn}")

    def work(ctl: JobControl) -> Any:
        with netns.entered(path):
            return fn(ctl, **args)

    return ThreadJob(job, f"{job.fn.rsplit(':', 1)[-1]} in {ref}", work)


class _LocalPort(NodePort):
    def __init__(self, fd: int, identity: tuple[Any, ...]):
        self.fd = fd
        self.path = f"/proc/self/fd/{fd}"
        self.identity = identity

    def listen(self, host: str, port: int, backlog: int = 64) -> socket.socket:
        return netns.run_in_netns(self.path, _listen, host, port, backlog)

    def tcp_socket(self) -> socket.socket:
        return netns.run_in_netns(self.path, _new_tcp)

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(backlog)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def _new_tcp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    return s


class LocalNodeExec(NodeExec):
    """Jobs in a worker thread of this process, switched into the node's namespace (needs root)."""

    def __init__(self, locate: Locate):
        self.locate = locate

    def _path(self, ref: NodeRef) -> str:
        _cid, pid = self.locate(ref)
        path = netns.netns_path_of_pid(pid)
        if not os.path.exists(path):
            raise RangeError(f"{ref} has no network namespace (pid {pid} gone)")
        return path

    def start(self, ref: NodeRef, job: Job) -> RunningJob:
        return _local_job(ref, job, self._path(ref))

    def attach(self, ref: NodeRef) -> NodePort:
        """Pin the node's namespace with an open descriptor, then check the node still has that
        process: a recycled pid can never send a team's traffic into some other namespace."""
        cid, pid = self.locate(ref)
        try:
            fd = os.open(netns.netns_path_of_pid(pid), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise RangeError(f"cannot open the network namespace of {ref}: {exc.strerror}") from None
        try:
            again = self.locate(ref)
        except BaseException:
            os.close(fd)
            raise
        if again != (cid, pid):
            os.close(fd)
            raise RangeError(f"{ref} changed while attaching to it; try again")
        st = os.fstat(fd)
        return _LocalPort(fd, (cid, st.st_dev, st.st_ino))
