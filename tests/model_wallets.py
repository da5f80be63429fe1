"""The points part of the model-based test (tests/test_model.py): what every wallet should
hold, computed from the requests the machine sent and the settlements it saw, without the
engine's code. Lots are taken soonest-expiring first (ties: the lot id as text, the order
of the wallet's sorted set), refunds go back to the lot they came from, or expire with it
when it expired meanwhile."""

from __future__ import annotations

from dataclasses import dataclass, field

NEVER = 1 << 62  # a lot that never expires


@dataclass
class MLot:
    lot_id: str
    expires_ms: int
    left: int
    gone: bool = False  # the expiry sweep took what was left


@dataclass
class MReservation:
    """A priced order's points: where those it reserved came from, R (reserved), S (spent)
    or V (given back), and what it earns when fulfilled (once)."""

    taken: list[tuple[str, int]]
    earn: int
    state: str = "R"
    earned: bool = False

    @property
    def points(self) -> int:
        return sum(n for _, n in self.taken)


@dataclass
class MWallet:
    lots: dict[str, MLot] = field(default_factory=dict)
    granted: int = 0
    deducted: int = 0
    expired: int = 0
    reserved: int = 0
    spent: int = 0
    grant_keys: dict[str, dict[str, object]] = field(default_factory=dict)  # key -> body

    @property
    def balance(self) -> int:
        return sum(lot.left for lot in self.lots.values() if not lot.gone)

    def grant(self, points: int, expires_ms: int) -> None:
        lot_id = str(len(self.lots) + 1)  # the wallet's lot_seq
        self.lots[lot_id] = MLot(lot_id, expires_ms, points)
        self.granted += points

    def _fefo(self) -> list[MLot]:
        live = [lot for lot in self.lots.values() if not lot.gone and lot.left > 0]
        return sorted(live, key=lambda lot: (lot.expires_ms, lot.lot_id))

    def take(self, points: int) -> list[tuple[str, int]] | None:
        """Points out of the lots, soonest-expiring first; None (nothing taken) when short."""
        if points > self.balance:
            return None
        need, taken = points, []
        for lot in self._fefo():
            if need == 0:
                break
            n = min(need, lot.left)
            lot.left -= n
            need -= n
            taken.append((lot.lot_id, n))
        return taken

    def deduct(self, points: int) -> bool:
        if self.take(points) is None:
            return False
        self.deducted += points
        return True

    def reserve(self, points: int, earn: int) -> MReservation | None:
        taken = self.take(points)
        if taken is None:
            return None
        self.reserved += points
        return MReservation(taken, earn)

    def settle(self, reservation: MReservation, post: bool) -> None:
        """What points_settle.lua does once per order: spend, or give back to the lots."""
        assert reservation.state == "R"
        self.reserved -= reservation.points
        if post:
            self.spent += reservation.points
            reservation.state = "S"
            return
        reservation.state = "V"
        for lot_id, n in reservation.taken:
            lot = self.lots[lot_id]
            if lot.gone:
                self.expired += n
            else:
                lot.left += n

    def earn(self, reservation: MReservation) -> None:
        assert not reservation.earned and reservation.earn > 0
        reservation.earned = True
        self.grant(reservation.earn, NEVER)

    def expire(self, at_ms: int) -> None:
        for lot in self.lots.values():
            if not lot.gone and lot.expires_ms <= at_ms:
                self.expired += lot.left
                lot.left, lot.gone = 0, True

    def counters(self) -> dict[str, int]:
        """The wallet's counters hash as the engine should hold it (zeros left out)."""
        out = {"balance": self.balance, "reserved": self.reserved, "spent": self.spent,
               "granted": self.granted, "deducted": self.deducted, "expired": self.expired}
        out.update({f"l:{lot.lot_id}": lot.left for lot in self.lots.values() if not lot.gone})
        return {k: v for k, v in out.items() if v}
