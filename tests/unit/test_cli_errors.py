"""The CLI's last line of defence: a failure of the connection to a Docker engine (docker-py and
its transports: an SSH channel refused, a socket reset) is one line and the environment's exit
code, never a traceback; anything else unexpected still shows its traceback (a bug to fix)."""

from __future__ import annotations

import pytest

from rangectl import cli


def _fails_with(monkeypatch, exc: BaseException):
    def app(**kw):
        raise exc

    monkeypatch.setattr(cli, "app", app)
    with pytest.raises(SystemExit) as e:
        cli.main()
    return e.value.code


def test_an_ssh_channel_refused_by_an_engine_is_one_line(monkeypatch, capsys):
    import paramiko

    code = _fails_with(monkeypatch, paramiko.ssh_exception.ChannelException(2, "Connect failed"))
    err = capsys.readouterr().err.strip()
    assert code == 3
    assert err.splitlines() == ["error: the connection to a Docker engine failed: ChannelException: Connect failed"]


def test_a_docker_connection_error_is_one_line(monkeypatch, capsys):
    import requests

    code = _fails_with(monkeypatch, requests.exceptions.ConnectionError("Connection aborted.\nRemoteDisconnected"))
    err = capsys.readouterr().err.strip()
    assert code == 3 and err.splitlines() == [
        "error: the connection to a Docker engine failed: ConnectionError: RemoteDisconnected"
    ]


def test_a_bug_is_not_hidden(monkeypatch):
    monkeypatch.setattr(cli, "app", lambda **kw: (_ for _ in ()).throw(ZeroDivisionError("x")))
    with pytest.raises(ZeroDivisionError):
        cli.main()
