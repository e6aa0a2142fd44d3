"""How a search's ``stop_reason`` (``uns[key]["params"]["stop_reason"]``) is written and read.

The search writes it; the command line reads it back from a file to tell a
finished search from one cut short. Neither torch nor the search is imported.
"""

from __future__ import annotations

__all__ = ["CUT_SHORT", "ended_on_its_own", "interrupt_reason", "then_interrupted"]

# How the ``stop_reason`` of a search cut short begins (Ctrl-C, SIGTERM, a journal or a backend
# that failed); any other reason is a search that ended on its own.
CUT_SHORT = ("interrupted", "terminated", "stopped:")


def ended_on_its_own(stop_reason: str) -> bool:
    """Whether a search that ended for ``stop_reason`` finished (budget, convergence, timeout).

    ``False`` for a search cut short, also while its best model was prepared.
    """
    return bool(stop_reason) and not stop_reason.startswith(CUT_SHORT) and "; then " not in stop_reason


def interrupt_reason(interrupt: KeyboardInterrupt) -> str:
    """How a stop is recorded: the command line's SIGTERM says so, a Ctrl-C is a Ctrl-C."""
    return getattr(interrupt, "reason", "interrupted (Ctrl-C)")


def then_interrupted(stop_reason: str, interrupt: KeyboardInterrupt, when: str) -> str:
    """``stop_reason`` of a search that ended, then was interrupted ``when`` (see :func:`ended_on_its_own`)."""
    return f"{stop_reason}; then {interrupt_reason(interrupt)} {when}"
