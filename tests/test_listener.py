"""The listener on a real Redis over real HTTP: what it accepts, records and queues, and what it refuses."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import HOOK_SECRET, OLD_HOOK_SECRET, SEED_HOOKS, Listener, hook_body, sign
from worker import keys
from worker.queue import job_deserializer


@pytest.mark.parametrize("action", sorted(SEED_HOOKS))
async def test_each_seed_action_is_recorded_and_its_fan_out_queued(
    listener: Listener, redis: Redis, action: str
) -> None:
    status, answer = await listener.post(action, SEED_HOOKS[action])

    assert status == 202, answer
    assert answer["status"] == "queued"
    event = await listener.store.get(answer["event_id"])
    assert event is not None
    assert (event.source, event.action, event.status) == ("hostfact", action, "queued")
    assert event.payload["id"] == 2 and event.payload["Debtor"] == 1  # ints, whatever HostFact sent
    queued = await redis.zrange(keys.QUEUE, 0, -1)
    assert queued == [f"fanout:{event.id}:0".encode()]
    job = job_deserializer(await redis.get(keys.job(f"fanout:{event.id}:0")))
    assert (job["f"], job["a"]) == ("fan_out", [event.id])
    # The job outlives the whole retry span.
    assert await redis.pttl(keys.job(f"fanout:{event.id}:0")) > listener.settings.retry.max_span * 1000


async def test_amounts_and_flags_are_normalised(listener: Listener) -> None:
    _, partly = await listener.post("invoice_is_partly_paid", SEED_HOOKS["invoice_is_partly_paid"])
    _, summation = await listener.post("invoice_summation_is_sent", SEED_HOOKS["invoice_summation_is_sent"])

    paid = await listener.store.get(partly["event_id"])
    sent = await listener.store.get(summation["event_id"])
    assert paid is not None and sent is not None
    assert paid.payload["AmountPaidNow"] == "5.25"
    assert paid.payload["AmountPaidTotal"] == "5.25"
    assert paid.payload["AmountOpen"] == "194.40"
    assert sent.payload["viaMail"] is True and sent.payload["viaPost"] is False
    assert (sent.payload["Sent"], sent.payload["Reminders"], sent.payload["Summations"]) == (1, 1, 1)


async def test_redelivery_of_a_webhook_id_answers_the_original_event_and_queues_nothing(
    listener: Listener, redis: Redis
) -> None:
    first_status, first = await listener.post(
        "invoice_is_paid", SEED_HOOKS["invoice_is_paid"], webhook_id="msg_1"
    )
    again_status, again = await listener.post(
        "invoice_is_paid", SEED_HOOKS["invoice_is_paid"], webhook_id="msg_1"
    )

    assert (first_status, again_status) == (202, 200)
    assert again["event_id"] == first["event_id"]
    assert again["duplicate"] is True
    assert await redis.zcard(keys.QUEUE) == 1
    assert await listener.store.count() == 1


async def test_the_same_webhook_id_from_another_source_is_another_event(listener: Listener) -> None:
    # Webhook ids are only unique per sender.
    _, first = await listener.post("invoice_is_paid", SEED_HOOKS["invoice_is_paid"], webhook_id="msg_x")
    assert first["status"] == "queued"
    status, _ = await listener.post(
        "invoice_is_paid", SEED_HOOKS["invoice_is_paid"], webhook_id="msg_x", source="elsewhere"
    )
    assert status == 404


async def test_both_secrets_of_a_rotation_are_accepted(listener: Listener) -> None:
    new_status, _ = await listener.post("invoice_is_paid", SEED_HOOKS["invoice_is_paid"], secret=HOOK_SECRET)
    old_status, _ = await listener.post(
        "invoice_is_paid", SEED_HOOKS["invoice_is_paid"], secret=OLD_HOOK_SECRET
    )
    assert (new_status, old_status) == (202, 202)


async def test_an_unknown_action_is_recorded_as_ignored_with_the_reason(
    listener: Listener, redis: Redis
) -> None:
    status, answer = await listener.post("debtor_is_created", {"id": 7, "DebtorCode": "DB0007"})

    assert status == 202
    assert answer["status"] == "ignored"
    event = await listener.store.get(answer["event_id"])
    assert event is not None and event.status == "ignored"
    assert "debtor_is_created" in event.reason
    assert await redis.zcard(keys.QUEUE) == 0
    assert await listener.store.ids("ignored") == [event.id]


async def _refused(
    listener: Listener, redis: Redis, body: bytes, headers: dict[str, str], path: str = "hostfact"
) -> tuple[int, dict[str, Any]]:
    before = await redis.dbsize()
    async with listener.session.post(f"{listener.url}/hooks/{path}", data=body, headers=headers) as response:
        answer = await response.json()
        status = response.status
    assert await redis.dbsize() == before, "a refused hook must change nothing"
    assert "error" in answer and answer["message"]
    return status, answer


PAID = hook_body("invoice_is_paid", SEED_HOOKS["invoice_is_paid"])


async def test_missing_signature_is_401(listener: Listener, redis: Redis) -> None:
    headers = sign(PAID)
    del headers["webhook-signature"]
    status, answer = await _refused(listener, redis, PAID, headers)
    assert status == 401 and "webhook-signature" in answer["message"]


async def test_wrong_secret_is_401(listener: Listener, redis: Redis) -> None:
    other = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
    status, answer = await _refused(listener, redis, PAID, sign(PAID, secret=other))
    assert status == 401 and answer["error"] == "bad_signature"


async def test_signature_over_another_body_is_401(listener: Listener, redis: Redis) -> None:
    headers = sign(hook_body("invoice_is_paid", {"id": 3, "Debtor": 1, "InvoiceCode": "F0003"}))
    status, _ = await _refused(listener, redis, PAID, headers)
    assert status == 401


async def test_truncated_signature_is_401(listener: Listener, redis: Redis) -> None:
    headers = sign(PAID)
    headers["webhook-signature"] = headers["webhook-signature"][:-6]
    status, _ = await _refused(listener, redis, PAID, headers)
    assert status == 401


@pytest.mark.parametrize("offset", [-301, 301, -3600, 86400])
async def test_stale_or_future_timestamp_is_401(listener: Listener, redis: Redis, offset: int) -> None:
    status, answer = await _refused(listener, redis, PAID, sign(PAID, at=time.time() + offset))
    assert status == 401 and "webhook-timestamp" in answer["message"]


async def test_unknown_source_is_404(listener: Listener, redis: Redis) -> None:
    status, answer = await _refused(listener, redis, PAID, sign(PAID), path="nobody")
    assert status == 404 and "nobody" in answer["message"]


async def test_wrong_content_type_is_415(listener: Listener, redis: Redis) -> None:
    headers = sign(PAID) | {"content-type": "application/x-www-form-urlencoded"}
    status, _ = await _refused(listener, redis, PAID, headers)
    assert status == 415


async def test_a_body_that_is_not_json_is_415(listener: Listener, redis: Redis) -> None:
    body = b"action=invoice_is_paid&id=2"
    status, answer = await _refused(listener, redis, body, sign(body))
    assert status == 415 and answer["error"] == "not_json"


async def test_a_body_over_the_limit_is_413(listener: Listener, redis: Redis) -> None:
    body = hook_body("invoice_is_paid", {**SEED_HOOKS["invoice_is_paid"], "padding": "x" * 70_000})
    status, _ = await _refused(listener, redis, body, sign(body))
    assert status == 413


@pytest.mark.parametrize(
    ("action", "data", "field"),
    [
        ("invoice_is_paid", {"id": 2, "Debtor": True, "InvoiceCode": "F0001"}, "data.Debtor"),
        (
            "invoice_is_partly_paid",
            {**SEED_HOOKS["invoice_is_partly_paid"], "AmountPaidNow": "5,25"},
            "data.AmountPaidNow",
        ),
        ("invoice_is_sent", {**SEED_HOOKS["invoice_is_sent"], "viaMail": "perhaps"}, "data.viaMail"),
        ("invoice_is_sent", {**SEED_HOOKS["invoice_is_sent"], "Sent": None}, "data.Sent"),
        ("invoice_is_sent", {**SEED_HOOKS["invoice_is_sent"], "Sent": -1}, "data.Sent"),
        # Too many digits for cents: once a 500 (Decimal.quantize's InvalidOperation), found by test_fuzz.
        (
            "invoice_is_partly_paid",
            {**SEED_HOOKS["invoice_is_partly_paid"], "AmountPaidTotal": -3.886190637249136e228},
            "data.AmountPaidTotal",
        ),
    ],
)
async def test_an_authentic_hook_with_an_odd_field_is_queued_with_the_problem_noted(
    listener: Listener, redis: Redis, action: str, data: dict[str, object], field: str
) -> None:
    """Invariant 10: the sync reads the invoice itself and needs only its id; a field it does not need never
    costs the hook (hooks.php drops a 4xx for good)."""
    status, answer = await listener.post(action, data)
    assert status == 202 and answer["status"] == "queued"
    event = await listener.store.get(answer["event_id"])
    assert event is not None and event.status == "queued"
    assert any(problem.startswith(field + ":") for problem in event.problems), event.problems
    assert event.payload == data, "the hook as it came, for a person to read"
    assert await redis.zcard(keys.QUEUE) == 1


@pytest.mark.parametrize(
    ("action", "data", "field"),
    [
        ("invoice_is_paid", {"Debtor": 1, "InvoiceCode": "F0001"}, "data.id"),
        ("invoice_is_paid", {"id": "two", "Debtor": 1, "InvoiceCode": "F0001"}, "data.id"),
        ("invoice_is_paid", {"id": -2, "Debtor": 1, "InvoiceCode": "F0001"}, "data.id"),
        ("invoice_is_credited", {**SEED_HOOKS["invoice_is_paid"]}, "data.CreditInvoiceID"),
    ],
)
async def test_an_authentic_hook_without_a_usable_id_lands_in_the_failed_store(
    listener: Listener, redis: Redis, action: str, data: dict[str, object], field: str
) -> None:
    status, answer = await listener.post(action, data)
    assert status == 202 and answer["status"] == "failed"
    (failed,) = await listener.store.ids("failed")
    event = await listener.store.get(failed)
    assert event is not None and event.id == answer["event_id"]
    assert event.reason.startswith("the hook names no usable invoice: " + field), event.reason
    assert event.payload == data
    assert await redis.zcard(keys.QUEUE) == 0, "nothing to sync"


@pytest.mark.parametrize(
    "document",
    [[1, 2], {"data": {}}, {"action": "invoice_is_paid", "data": [1]}],
)
async def test_an_authentic_body_of_the_wrong_shape_lands_in_the_failed_store(
    listener: Listener, redis: Redis, document: object
) -> None:
    body = json.dumps(document).encode()
    async with listener.session.post(f"{listener.url}/hooks/hostfact", data=body, headers=sign(body)) as r:
        assert r.status == 202 and (await r.json())["status"] == "failed"
    (failed,) = await listener.store.ids("failed")
    event = await listener.store.get(failed)
    assert event is not None and event.reason.startswith("the hook names no invoice: ")
    assert event.payload == {"body": body.decode()}


async def test_a_body_nested_thousands_deep_is_refused_without_a_5xx(
    listener: Listener, redis: Redis
) -> None:
    # 40 000 bytes, under max_body_bytes, deeper than Python's JSON parser goes (once a 500).
    deep = b'{"action": "invoice_is_paid", "data": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    status, answer = await _refused(listener, redis, deep, sign(deep))
    assert status == 415 and answer["error"] == "not_json"


async def test_health_and_readiness(listener: Listener) -> None:
    async with listener.session.get(f"{listener.url}/healthz") as response:
        assert response.status == 200
    async with listener.session.get(f"{listener.url}/readyz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"


async def test_readyz_is_503_while_redis_is_unreachable(redis_url: str) -> None:
    from aiohttp import ClientSession, web

    from tests.conftest import make_settings
    from worker.embedded_redis import free_port
    from worker.web.app import create_app

    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    runner = web.AppRunner(create_app(make_settings(nowhere), nowhere))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with ClientSession() as session:
            async with session.get(f"http://{host}:{port}/readyz") as response:
                assert response.status == 503
                assert (await response.json())["error"] == "redis_unreachable"
            async with session.get(f"http://{host}:{port}/healthz") as response:
                assert response.status == 200, "the process is alive even when Redis is not"
    finally:
        await runner.cleanup()
