"""PostgreSQL leadership: which of several instances sharing one database syncs each binding.

One session-level advisory lock per binding (`daemon.store.lock.PgLeader`), each held on its
own dedicated autocommit connection with TCP keepalives. The scheduler asks `holds(binding)`
before every cycle; the engine asks `check(binding)` (via `leader_check`) right before every
Coda write batch and every local commit, and stops the cycle with `LeadershipLost` when the
answer is no::

    holds(b)   not held: pg_try_advisory_lock      -> True: leader, run the cycle
                                                      False: standby, poll again soon
               held:     check() = SELECT 1 within  -> True: still leader
                         check_timeout_seconds         False: lost; try to take it again
    check(b)   held and SELECT 1 answered in time   (never takes the lock)

Timing, with `lease_seconds` = L (`database.lease_seconds`, default 30):

    holder process dies (crash, SIGKILL, OOM) the kernel closes its socket, the server ends
                                              the session at once and frees the lock
    holder host or network gone               the server's keepalives (idle L/3, 3 probes
                                              every L/9) end the session after ~2L/3
    a standby tries again                     every min(interval_seconds, L/3)
    => a new leader runs within L of the old one vanishing (typically one standby poll).

The old leader learns it lost the lock at its next check (at most check_timeout_seconds =
clamp(L/3, 1, 5) s when the server does not answer) and then writes nothing more: every Coda
write is preceded by a committed intent and a check, so a leader that cannot reach PostgreSQL
cannot write, and one whose lock session was ended fails the check. Every check that
succeeds proves the server saw the session alive, so the lock cannot be taken over for the
next ~2L/3 s, far longer than the gap between a check and the write it guards.

Must not import httpx.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from daemon.store.lock import DEFAULT_LEASE_SECONDS, PgLeader

logger = logging.getLogger(__name__)

LEADER: Final = "leader"
STANDBY: Final = "standby"


def standby_poll_seconds(interval_seconds: float, lease_seconds: float) -> float:
    """How soon a standby tries to take a binding again (keeps the handover within the lease)."""
    return max(0.5, min(interval_seconds, lease_seconds / 3))


class PgLeadership:
    """PostgreSQL: one advisory-lock leader per binding; several instances may run at once."""

    elected = True
    """Instances elect a leader per binding (readiness reports the role)."""

    def __init__(
        self,
        url: str,
        bindings: Iterable[str],
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        leader_factory: Callable[[str, str, float], PgLeader] | None = None,
    ) -> None:
        make = leader_factory or (lambda u, b, lease: PgLeader(u, b, lease_seconds=lease))
        self.lease_seconds = lease_seconds
        self._leaders = {name: make(url, name, lease_seconds) for name in bindings}

    async def acquire(self) -> None:
        """Nothing to take at start: each binding is contended for before its cycles."""
        logger.info(
            "PostgreSQL: leader election per binding (advisory locks, lease %.0f s); "
            "other instances may run as standbys",
            self.lease_seconds,
        )

    async def holds(self, binding: str) -> bool:
        """True when this process leads `binding` now (takes the lock when it is free).

        Raises StoreError when PostgreSQL cannot be reached (the cycle fails and backs off).
        """
        leader = self._leaders[binding]
        if leader.held and await leader.check():
            return True
        was_leader = leader.held
        got = await leader.try_acquire()
        if not got and was_leader:
            logger.warning("binding %s: another instance leads it now; standing by", binding)
        return got

    async def check(self, binding: str) -> bool:
        """True while we still hold `binding`'s lock (a cheap query within a timeout)."""
        return await self._leaders[binding].check()

    def checker(self, binding: str) -> Callable[[], Awaitable[bool]]:
        """`check` of one binding, as the engine's `leader_check` callback."""

        async def leader_check() -> bool:
            return await self.check(binding)

        return leader_check

    def role(self, binding: str) -> str:
        return LEADER if self._leaders[binding].held else STANDBY

    async def release(self) -> None:
        """Give up every lock and close the dedicated connections (idempotent)."""
        for leader in self._leaders.values():
            await leader.close()
