"""Crash points for fault tests: `KAMIGATE_FAILPOINT=worker.after_read,door.after_admit`
makes the process SIGKILL itself when it reaches a named place, as a power cut would.

Worker places: `worker.after_read` (entries read, nothing decided), `worker.before_claim`
(the plan is built, not applied), `worker.after_claim` (the claim script ran). The claim
script also settles: it acknowledges the entries and publishes the replies in the same atomic
call, so "after claim before ack", "after ack before reply" and "mid-settle" are one point,
`worker.after_claim`, and nothing can stop between them. Front door: `door.after_admit` (the
admit script wrote the record and the stream entry; the answer was not sent).

Points (an order's saga, DESIGN §8): `door.after_reserve` (its points are reserved, the order
not yet admitted), `worker.before_settle` (its settle entry read, the wallet untouched),
`worker.after_settle` (the wallet settled, the entry not yet acknowledged),
`worker.before_compensate` and `worker.after_compensate` (the same around a late order's
compensation). `kamigate export`: `export.after_write` (a page of archived orders written and
flushed, not yet removed from the archive).
"""

from __future__ import annotations

import os
import signal

PLACES = frozenset({"worker.after_read", "worker.before_claim", "worker.after_claim",
                    "door.after_admit", "door.after_reserve", "worker.before_settle",
                    "worker.after_settle", "worker.before_compensate",
                    "worker.after_compensate", "export.after_write"})
_ACTIVE = frozenset(p.strip() for p in os.environ.get("KAMIGATE_FAILPOINT", "").split(",")
                    if p.strip())


def hit(place: str) -> None:
    """End the process here if this failpoint is armed (a set lookup otherwise)."""
    if place in _ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)
