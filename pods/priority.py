"""Agents run at a lower CPU priority than ipa itself.

An agent's CLI, the commands it runs (builds, test suites) and every verification command can
keep all of a machine's cores busy; ipa's own process (the pods' schedulers, the event store's
writer, the live streams) must still answer at once. So each process a runner starts is given
a niceness of ipa's own plus ``IPA_AGENT_NICE`` (default 10, at most 19; ``0`` leaves it
alone), right after it starts; what it starts inherits it. Lowering a child's priority needs
no privilege.

The kernel still gives niced processes every cycle nobody else wants: agents lose no speed on
an idle machine, only their precedence over ipa when the machine is full.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

NICE_ENV = "IPA_AGENT_NICE"
DEFAULT_NICENESS = 10
MAX_NICENESS = 19


class NicenessInvalid(ValueError):
    """``IPA_AGENT_NICE`` is not a whole number from 0 to 19."""


def agent_niceness(environ: Mapping[str, str] = os.environ) -> int:
    """How much lower than ipa's own priority agents run (``IPA_AGENT_NICE``)."""
    text = environ.get(NICE_ENV)
    if text is None or not text.strip():
        return DEFAULT_NICENESS
    value = text.strip()
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_NICENESS:
        raise NicenessInvalid(f"{NICE_ENV}={text!r}: expected a whole number from 0 to "
                              f"{MAX_NICENESS} (how much lower than ipa's priority agents run)")
    return int(value)


def lower(pid: int) -> None:
    """Give the process ``pid`` (just started by a runner) the agents' lower priority."""
    try:
        niceness = agent_niceness()
    except NicenessInvalid:
        niceness = DEFAULT_NICENESS  # ``ipa serve`` refuses to start with it; a library caller
    if niceness == 0:
        return
    try:
        own = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, pid, min(MAX_NICENESS, own + niceness))
    except ProcessLookupError:
        pass  # it ended already
    except OSError as e:  # e.g. a platform without priorities: the agent runs as it is
        log.warning("could not lower the priority of agent process %d: %s", pid, e)
