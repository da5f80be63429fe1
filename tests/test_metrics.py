"""/metrics and /readyz: what an operator scrapes."""

from __future__ import annotations

from engine.worker import matching
from tests.conftest import Engine, codes, eventually


async def test_metrics_cover_the_order_path(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("M", 3))
    for _ in range(4):
        await engine.order()
    await engine.order(sku="nope")
    resp = await engine.http.get("/metrics")
    text = await resp.text()
    assert resp.status == 200
    lines = {line.split(" ")[0]: line.split(" ")[-1] for line in text.splitlines()
             if line and not line.startswith("#")}
    assert lines["kamigate_orders_admitted_total"] == "4.0"
    # four orders one after another: four round trips of the writer, one admit call each
    assert lines["kamigate_door_admit_call_orders_total"] == "4.0"
    assert lines["kamigate_door_admit_calls_total"] == "4.0"
    assert float(lines["kamigate_door_pipelines_total"]) >= 4
    assert lines['kamigate_requests_rejected_total{code="unknown_sku"}'] == "1.0"
    assert lines['kamigate_orders_decided_total{status="fulfilled"}'] == "3.0"
    assert lines['kamigate_orders_decided_total{status="queued"}'] == "1.0"
    assert lines['kamigate_stock_codes{sku="card-100",state="available"}'] == "0.0"
    assert lines['kamigate_stock_codes{sku="card-100",state="issued"}'] == "3.0"
    assert lines['kamigate_queue_length{sku="card-100"}'] == "1.0"
    assert float(lines["kamigate_claim_batch_size_count"]) >= 1
    assert 'kamigate_stream_lag{shard="0"}' in lines
    assert any(k.startswith('kamigate_request_seconds_bucket{le="0.005",route="/v1/orders"}')
               for k in lines)
    assert any(k.startswith("kamigate_config_info{sha256=") for k in lines)


async def test_readyz_reports_kernel_workers_and_config(engine: Engine) -> None:
    async def ready() -> bool:
        return (await engine.http.get("/readyz")).status == 200

    await eventually(ready, what="readiness")
    resp = await engine.http.get("/readyz")
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "ready"
    assert body["checks"]["workers"] >= 1
    assert body["checks"]["kernel"] == matching.IMPLEMENTATION  # the kernel loaded here
    assert len(body["checks"]["config"]["sha256"]) == 64
