"""Which language teams and reports see: ``--lang``, else ``RANGECTL_LANG``, else English."""

from __future__ import annotations

import os

from rangectl.errors import UsageError
from rangectl.scenario.model import LANGS

ENV = "RANGECTL_LANG"


def pick_lang(option: str | None = None) -> str:
    """The language to show: the option when given, else $RANGECTL_LANG, else ``en``."""
    lang = (option or os.environ.get(ENV) or "en").strip().lower()
    if lang not in LANGS:
        src = "--lang" if option else ENV
        raise UsageError(f"{src}: unknown language '{lang}' (use one of: {', '.join(LANGS)})")
    return lang
