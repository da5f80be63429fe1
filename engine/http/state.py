"""Typed application state shared by the route modules."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from engine.config.directory import Directory
from engine.controls.maintenance import MaintenanceState
from engine.controls.pauses import PauseBoard
from engine.door.admission import Admission
from engine.door.ingest import Ingest
from engine.door.replies import ReplyHub
from engine.metrics import Metrics
from engine.worker.drain import DrainRates

REDIS = web.AppKey("redis", Redis)
INGEST = web.AppKey("ingest", Ingest)
REPLIES = web.AppKey("replies", ReplyHub)
METRICS = web.AppKey("metrics", Metrics)


class DirectoryRef:
    """The directory of the running config; swapped whole, so no request sees half of one."""

    def __init__(self, directory: Directory) -> None:
        self.current = directory


DIRECTORY = web.AppKey("directory", DirectoryRef)


class AdmissionRef:
    """The token buckets of the running config and fleet share; swapped whole."""

    def __init__(self, admission: Admission) -> None:
        self.current = admission


ADMISSION = web.AppKey("admission", AdmissionRef)
DRAIN = web.AppKey("drain", DrainRates)


class MaintenanceRef:
    """The maintenance state in force, refreshed from Redis by the fleet loop."""

    def __init__(self, state: MaintenanceState) -> None:
        self.state = state
        self.scoped: dict[str, MaintenanceState] = {}


MAINTENANCE = web.AppKey("maintenance", MaintenanceRef)
PAUSES = web.AppKey("pauses", PauseBoard)
