"""Scoring: policies, the pure scoring engine, and the actions teams take during a drill.

* :mod:`rangectl.scoring.policy` — policy files (``scoring/NAME.yaml``), :func:`load_policy`
* :mod:`rangectl.scoring.engine` — :func:`compute_board` (pure); answers are matched by :func:`rangectl.answers.check_answer`
* :mod:`rangectl.scoring.actions` — :func:`submit`, :func:`take_hint`, :func:`report_incident`, :func:`board`
"""

from __future__ import annotations

from rangectl.answers import check_answer
from rangectl.scoring.engine import Board, TeamBoard, compute_board
from rangectl.scoring.policy import Policy, load_policy

__all__ = ["Board", "Policy", "TeamBoard", "check_answer", "compute_board", "load_policy"]
