"""Celery app for the peer benchmark: Redis broker, no result backend, one task `claim`.

Settings (production-like, chosen for throughput, none of them a handicap):
  * broker: Redis (``PEERS_REDIS_URL``), queue ``claims``; JSON serializer (Celery's default);
  * no result backend and ``task_ignore_result=True``: nothing is written back per task;
  * ``task_acks_late=False`` (Celery's default: a message is acked when it is taken);
  * ``worker_prefetch_multiplier`` from ``PEERS_CELERY_PREFETCH`` (default 64);
  * worker: ``--pool=solo --concurrency=1`` (one process, like kamigate's one worker),
    ``--without-gossip --without-mingle --without-heartbeat``, log level warning.
"""

from __future__ import annotations

import os

from celery import Celery

from bench.peers.job import claim_sync, redis_url, sync_client

QUEUE = "claims"

app = Celery("peers", broker=redis_url())
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    result_backend=None,
    task_acks_late=False,
    worker_prefetch_multiplier=int(os.environ.get("PEERS_CELERY_PREFETCH", "64")),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
)


@app.task(name="claim", ignore_result=True)
def claim(order_id: str, sku: str) -> str:
    return claim_sync(sync_client(), order_id, sku)
