"""structlog, imported as if rich were not installed.

structlog imports rich (and through it pygments) at import time when it can, for pretty
console tracebacks and for the repr of a traceback's local variables. rotator renders
tracebacks itself (ExceptionDictTransformer without locals; plain text for the console), so it
uses neither, and together they cost ~3.7 MiB resident in every process: a good part of the
idle daemon's memory budget (issue 21). Nothing changes when rich is loaded already (someone
else wanted it) or when structlog was imported first.
"""

from __future__ import annotations

import sys


def _import_without_rich() -> None:
    if "rich" in sys.modules or "structlog" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # makes "import rich" an ImportError
    try:
        import structlog.tracebacks  # noqa: F401  (imports structlog, structlog.dev)
    finally:
        del sys.modules["rich"]


_import_without_rich()

import structlog  # noqa: E402
from structlog.contextvars import bound_contextvars, merge_contextvars  # noqa: E402
from structlog.tracebacks import ExceptionDictTransformer  # noqa: E402

__all__ = ["ExceptionDictTransformer", "bound_contextvars", "merge_contextvars", "structlog"]
