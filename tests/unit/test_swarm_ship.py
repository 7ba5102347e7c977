"""Shipping images to the swarm's engines: one `docker save` stream fed to every engine's
`docker load` at once (no temporary file), an engine whose load fails dropped without holding
up the others. Fake engines read the stream like docker-py's load_image does (a request body)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from rangectl.backend import swarm
from rangectl.errors import RangeError

CHUNKS = [bytes([i]) * 1000 for i in range(200)]


class LoadAPI:
    def __init__(self, fail_after: int | None = None, slow: float = 0.0, says_error: bool = False):
        self.got = bytearray()
        self.fail_after, self.slow, self.says_error = fail_after, slow, says_error
        self.started = None

    def load_image(self, data, quiet=False):
        self.started = time.monotonic()
        for i, chunk in enumerate(data):
            if self.fail_after is not None and i == self.fail_after:
                raise ConnectionError("the engine went away")
            self.got += chunk
            if self.slow:
                time.sleep(self.slow)
        return [{"error": "invalid tar header"}] if self.says_error else [{"stream": "Loaded image: x"}]


def engine(name: str, api: LoadAPI):
    return SimpleNamespace(name=name, api=api)


def produced(log: list):
    for i, c in enumerate(CHUNKS):
        log.append((i, time.monotonic()))
        yield c


def test_every_engine_gets_the_whole_stream_and_loads_start_with_the_save():
    apis = {n: LoadAPI(slow=0.001 if n == "e3" else 0.0) for n in ("e1", "e2", "e3")}
    log: list = []
    out = swarm._tee_load(produced(log), [engine(n, a) for n, a in apis.items()])
    assert out == {"e1": None, "e2": None, "e3": None}
    whole = b"".join(CHUNKS)
    assert all(bytes(a.got) == whole for a in apis.values())
    # streamed, not saved first: every load began before the save stream ended
    assert all(a.started < log[-1][1] for a in apis.values())


def test_an_engine_whose_load_fails_is_dropped_and_the_others_finish():
    apis = {"ok": LoadAPI(), "gone": LoadAPI(fail_after=3), "bad": LoadAPI(says_error=True)}
    t0 = time.monotonic()
    out = swarm._tee_load(iter(CHUNKS), [engine(n, a) for n, a in apis.items()])
    assert time.monotonic() - t0 < 10  # nobody waits on the engine that went away
    assert out["ok"] is None and bytes(apis["ok"].got) == b"".join(CHUNKS)
    assert isinstance(out["gone"], ConnectionError)
    assert isinstance(out["bad"], RangeError) and "invalid tar header" in str(out["bad"])
