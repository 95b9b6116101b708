"""The schedules API from another language: plain NATS requests with nats-py, no polos code.

Usage: python3 schedules_api.py <nats-url>. Prints one line per check and "ALL OK" at the end;
exits non-zero with the failing check on stderr.
"""

import asyncio
import base64
import datetime
import hashlib
import json
import sys

import nats


def schedule_id(workflow: str, key: str) -> str:
    """The contract's id, computed independently: sch_ + base32(sha256(workflow NUL key))[:26]."""
    digest = hashlib.sha256(workflow.encode() + b"\0" + key.encode()).digest()
    return "sch_" + base64.b32encode(digest).decode().lower()[:26]


def encoded_key(key: str) -> str:
    """A key that is not KV-safe is written as '=' + base64url without padding."""
    return "=" + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def jitter_offset_ms(schedule_id_: str, instant: str, window_ms: int) -> int:
    """The README's jitter formula: FNV-1a 64 of the schedule id, XOR the instant's Unix
    seconds, through SplitMix64's finalizer, modulo the window."""
    mask = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for b in schedule_id_.encode():
        h = ((h ^ b) * 0x100000001B3) & mask
    t = int(datetime.datetime.fromisoformat(instant.replace("Z", "+00:00")).timestamp())
    z = ((h ^ (t & mask)) + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) % window_ms if window_ms else 0


def iso(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


async def request(nc, subject, body):
    msg = await nc.request(subject, json.dumps(body).encode(), timeout=10)
    return (msg.headers or {}), json.loads(msg.data)


async def main(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    kv = await js.key_value("polos_schedules")

    # 1. Upsert by request, exactly like the documented Python API's schedules.create.
    headers, reply = await request(nc, "polos.schedules.upsert", {
        "workflow": "user-reminder",
        "cron": "0 8 * * *",
        "timezone": "America/Los_Angeles",
        "key": "user_123",
    })
    check("Nats-Service-Error-Code" not in headers, f"upsert succeeds: {headers} {reply}")
    check(reply["schedule_id"] == schedule_id("user-reminder", "user_123"),
          f"deterministic schedule id: {reply}")
    check(reply["created"] is True, f"created: {reply}")
    check(len(reply["next"]) == 5 and all(t.endswith("Z") for t in reply["next"]),
          f"next 5 instants: {reply}")
    check("warning" in reply, f"warning for an unregistered workflow: {reply}")
    print("upsert ok", reply["schedule_id"])

    # 2. The record, read straight from KV.
    entry = await kv.get("user-reminder.user_123")
    record = json.loads(entry.value)
    expected = {
        "schedule_id": reply["schedule_id"],
        "workflow": "user-reminder",
        "key": "user_123",
        "cron": "0 8 * * *",
        "timezone": "America/Los_Angeles",
        "paused": False,
        "note": None,
        "source": "api",
    }
    for field, value in expected.items():
        check(record.get(field) == value, f"KV field {field}: {record}")
    for field in ("created_at", "updated_at"):
        check(isinstance(record[field], str) and record[field].endswith("Z"),
              f"KV field {field}: {record}")
    print("kv get ok", json.dumps(record, sort_keys=True))

    # 3. A bad cron is a clear error: micro headers plus a JSON body.
    headers, reply = await request(nc, "polos.schedules.upsert", {
        "workflow": "user-reminder", "cron": "0 0 * * 8", "key": "user_123",
    })
    check(headers.get("Nats-Service-Error-Code") == "400", f"status 400: {headers}")
    error = reply["error"]
    check(error["code"] == "invalid_cron", f"code invalid_cron: {reply}")
    check("0 0 * * 8" in error["message"], f"message names the expression: {reply}")
    entry = await kv.get("user-reminder.user_123")
    check(json.loads(entry.value)["cron"] == "0 8 * * *", "a refused update changes nothing")
    print("bad cron ok", error["code"], error["message"])

    # 4. A plain publish (no reply subject) is applied too; odd keys are stored encoded.
    key = "ü @ x"
    await nc.publish("polos.schedules.upsert", json.dumps({
        "workflow": "py-publish", "cron": "*/5 * * * *", "key": key,
    }).encode())
    await nc.flush()
    stored = None
    for _ in range(200):
        try:
            stored = json.loads((await kv.get("py-publish." + encoded_key(key))).value)
            break
        except nats.js.errors.KeyNotFoundError:
            await asyncio.sleep(0.05)
    check(stored is not None and stored["key"] == key, f"published upsert stored: {stored}")
    print("publish ok", stored["schedule_id"])

    # 5. get and not_found.
    headers, reply = await request(nc, "polos.schedules.get",
                                   {"workflow": "py-publish", "key": key})
    check(reply.get("key") == key and "state" in reply, f"get: {reply}")
    headers, reply = await request(nc, "polos.schedules.get", {"workflow": "nope"})
    check(headers.get("Nats-Service-Error-Code") == "404", f"404: {headers}")
    check(reply["error"]["code"] == "not_found", f"not_found: {reply}")
    print("get ok")

    # 6. Run policies: overlap and pause_on_failure on upsert, kept when left out.
    headers, reply = await request(nc, "polos.schedules.upsert", {
        "workflow": "py-policies", "cron": "0 8 * * *",
        "overlap": "buffer_one", "pause_on_failure": True,
    })
    check("Nats-Service-Error-Code" not in headers, f"upsert with policies: {reply}")
    record = json.loads((await kv.get("py-policies.global")).value)
    check(record.get("overlap") == "buffer_one" and record.get("pause_on_failure") is True,
          f"policies stored: {record}")
    await request(nc, "polos.schedules.upsert", {"workflow": "py-policies", "cron": "0 9 * * *"})
    record = json.loads((await kv.get("py-policies.global")).value)
    check(record.get("overlap") == "buffer_one", f"left out: kept: {record}")
    headers, reply = await request(nc, "polos.schedules.upsert", {
        "workflow": "py-policies", "cron": "0 8 * * *", "overlap": "sometimes",
    })
    check(headers.get("Nats-Service-Error-Code") == "400"
          and "buffer_all" in reply["error"]["message"], f"bad overlap named: {reply}")
    print("policies ok", record["overlap"])

    # 7. get describes: the next 10 fires, recent runs, counters.
    headers, reply = await request(nc, "polos.schedules.get", {"workflow": "py-policies"})
    check(len(reply["next"]) == 5 and len(reply["next_fires"]) == 10, f"next fires: {reply}")
    counters = reply["counters"]
    check(counters["fired"] == 0 and counters["skipped"] == 0 and "backfilled" in counters,
          f"counters: {reply}")
    check(len(reply["recent_runs"]) == 10
          and all(r["status"] is None and r["run_id"].startswith(reply["schedule_id"] + "-")
                  for r in reply["recent_runs"]), f"recent runs: {reply}")
    print("describe ok")

    # 8. Cancel a run through polos.run.cancel (not polos.runs.*: that is the fire stream).
    run_id = schedule_id("py-policies", "global") + "-20261126T090000Z"
    headers, reply = await request(nc, "polos.run.cancel", {"run_id": run_id})
    check(headers.get("Nats-Service-Error-Code") == "404", f"no record, no workflow: {reply}")
    headers, reply = await request(nc, "polos.run.cancel",
                                   {"run_id": run_id, "workflow": "py-policies", "reason": "py"})
    check(reply == {"run_id": run_id, "workflow": "py-policies", "status": None,
                    "cancel_requested": True}, f"cancel: {reply}")
    cancels = await js.key_value("polos_cancels")
    stored = json.loads((await cancels.get("py-policies." + run_id)).value)
    check(stored["reason"] == "py" and stored["requested_at"].endswith("Z"), f"stored: {stored}")
    headers, reply = await request(nc, "polos.run.cancel", {"run_id": "nope"})
    check(headers.get("Nats-Service-Error-Code") == "400", f"bad run id: {reply}")
    print("cancel ok")
    # 9. Policies: jitter, bounds and max_runs are upsert fields stored in the record.
    headers, reply = await request(nc, "polos.schedules.upsert", {
        "workflow": "py-policies", "cron": "0 8 * * *", "key": "trial",
        "jitter_secs": 600, "start_at": "2030-01-01T00:00:00Z",
        "end_at": "2030-01-15T00:00:00Z", "max_runs": 10,
    })
    check("Nats-Service-Error-Code" not in headers, f"upsert with policies: {reply}")
    check(reply["next"][0] == "2030-01-01T08:00:00Z", f"next starts at start_at: {reply}")
    record = json.loads((await kv.get("py-policies.trial")).value)
    for field, value in [("jitter_secs", 600), ("start_at", "2030-01-01T00:00:00Z"),
                         ("end_at", "2030-01-15T00:00:00Z"), ("max_runs", 10)]:
        check(record.get(field) == value, f"KV field {field}: {record}")
    headers, reply = await request(nc, "polos.schedules.upsert", {
        "workflow": "py-policies", "cron": "0 8 * * *", "key": "trial", "jitter_secs": -1,
    })
    check(reply.get("error", {}).get("code") == "invalid_request", f"negative jitter: {reply}")
    # The documented offset formula, checked against the value the Rust unit test pins.
    offset = jitter_offset_ms("sch_aaaaaaaaaaaaaaaaaaaaaaaaaa", "2026-05-01T08:00:00Z", 60000)
    check(offset == 4120, f"jitter formula: {offset}")
    print("policies ok", record["max_runs"], offset)

    # 10. Back-fill: a request, its reply, and the fires a scheduler publishes for it (trigger
    # "backfill", the scheduled fire's run id and Nats-Msg-Id, the nominal instant).
    headers, reply = await request(nc, "polos.schedules.upsert", {
        "workflow": "py-backfill", "cron": "0 * * * *", "key": "py",
    })
    check("Nats-Service-Error-Code" not in headers, f"upsert: {reply}")
    sid = reply["schedule_id"]
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    frm = now - datetime.timedelta(hours=3)
    headers, reply = await request(nc, "polos.schedules.backfill", {
        "workflow": "py-backfill", "key": "py", "from": iso(frm), "to": iso(now),
    })
    check("Nats-Service-Error-Code" not in headers, f"backfill: {reply}")
    check(reply["schedule_id"] == sid and reply["seq"] == 1 and reply["instants"] == 3,
          f"backfill reply: {reply}")
    headers, bad = await request(nc, "polos.schedules.backfill", {
        "workflow": "py-backfill", "key": "py", "from": iso(now), "to": iso(frm),
    })
    check(headers.get("Nats-Service-Error-Code") == "400"
          and bad["error"]["code"] == "invalid_request", f"backwards range: {bad}")
    sub = await js.pull_subscribe("polos.runs.py-backfill", durable="py_check", stream="POLOS_RUNS")
    msgs = []
    for _ in range(40):
        try:
            msgs += await sub.fetch(3 - len(msgs), timeout=1)
        except nats.errors.TimeoutError:
            pass
        if len(msgs) >= 3:
            break
    check(len(msgs) == 3, f"3 back-filled fires: {len(msgs)}")
    stamps = []
    for msg in msgs:
        payload = json.loads(msg.data)
        ts = payload["timestamp"]
        compact = ts.replace("-", "").replace(":", "")
        check(msg.headers.get("Polos-Trigger") == "backfill", f"trigger: {msg.headers}")
        check(msg.headers.get("Polos-Run-Id") == f"{sid}-{compact}", f"run id: {msg.headers}")
        check(msg.headers.get("Nats-Msg-Id") == f"{sid}@{ts}", f"msg id: {msg.headers}")
        check(payload["schedule_id"] == sid and payload["key"] == "py", f"payload: {payload}")
        stamps.append(ts)
        await msg.ack()
    check(stamps == sorted(stamps) and stamps[0] == reply["first"] and stamps[-1] == reply["last"],
          f"oldest first, the reply's range: {stamps} {reply}")
    print("backfill ok", len(msgs))

    await nc.close()
    print("ALL OK")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
