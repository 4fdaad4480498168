"""What travels through NATS: subjects, streams, envelopes and dead-letter records.

Pure functions over bytes (orjson only), shared by the publisher and the worker.
"""

from __future__ import annotations

from typing import Any

import orjson
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

__all__ = [
    "body_text",
    "dead_messages",
    "ensure_streams",
    "envelope_messages",
    "parse_envelope",
    "subjects",
    "truncated_record",
]


def subjects(subject: str) -> tuple[str, str, str]:
    return subject, f"{subject}.priority", f"{subject}.dead"


async def ensure_streams(js: Any, stream: str, subject: str) -> None:
    """Create the work-queue stream and its dead-letter stream if they do not exist."""
    regular, priority, dead = subjects(subject)
    for name, stream_subjects, retention in (
        (stream, [regular, priority], RetentionPolicy.WORK_QUEUE),
        (f"{stream}_DEAD", [dead], RetentionPolicy.LIMITS),
    ):
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(name=name, subjects=stream_subjects, retention=retention)
            )


def parse_envelope(data: bytes) -> tuple[str, list[Any]] | str:
    """``(id, events)`` of a well-formed envelope, or what is wrong with it."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(body, dict):
        return f"the body is a JSON {type(body).__name__}, not an object"
    events = body.get("events")
    if not isinstance(events, list):
        return f"'events' is {type(events).__name__}, not a list"
    return str(body.get("id")), events


def body_text(data: bytes) -> str:
    """The raw body as text; bytes that are not UTF-8 as backslash escapes."""
    return data.decode("utf-8", "backslashreplace")


def envelope_messages(data: bytes, reason: str, error: str | None, limit: int) -> list[bytes]:
    """A whole envelope as dead-letter messages of at most ``limit`` bytes.

    ``{"reason", "error", "envelope": <raw body as text>}`` when it fits; otherwise, if the
    body is a well-formed envelope, its events as records (:func:`dead_messages`), and if
    not, the record with the body cut short, ``truncated`` true and ``envelope_bytes``.
    """
    text = body_text(data)
    payload = orjson.dumps({"reason": reason, "error": error, "envelope": text})
    if len(payload) <= limit:
        return [payload]
    parsed = parse_envelope(data)
    if not isinstance(parsed, str):
        return dead_messages(reason, [(e, error) for e in parsed[1]], limit)
    budget = limit // 2
    while True:
        record = {
            "reason": reason,
            "error": None if error is None else error[: budget // 4],
            "envelope": text[:budget],
            "truncated": True,
            "envelope_bytes": len(data),
        }
        payload = orjson.dumps(record)
        if len(payload) <= limit or budget < 16:
            return [payload]
        budget //= 2


def dead_messages(reason: str, items: list[tuple[Any, str | None]], limit: int) -> list[bytes]:
    """Dead-letter records ``{"reason", "events", "errors"}``, each message <= ``limit`` bytes.

    Records are packed greedily; one that alone exceeds ``limit`` becomes a truncated record
    (see :func:`truncated_record`).
    """
    head = b'{"reason":%s,"events":[' % orjson.dumps(reason)
    middle, tail = b'],"errors":[', b"]}"
    out: list[bytes] = []
    events: list[bytes] = []
    errors: list[bytes] = []
    size = len(head) + len(middle) + len(tail)

    def close() -> None:
        if events:
            out.append(head + b",".join(events) + middle + b",".join(errors) + tail)
        events.clear()
        errors.clear()

    for item, error in items:
        event = orjson.dumps(item, default=repr)
        err = orjson.dumps(error)
        more = len(event) + len(err) + 2  # and two commas
        if size + more > limit:
            close()
            size = len(head) + len(middle) + len(tail)
            if size + more > limit:
                out.append(truncated_record(reason, item, event, error, limit))
                continue
        events.append(event)
        errors.append(err)
        size += more
    close()
    return out


def truncated_record(reason: str, item: Any, event: bytes, error: str | None, limit: int) -> bytes:
    """One record too big for a message: its reason, the start of its error and of its event.

    ``events`` is empty; ``truncated`` is true; ``event_id`` is the event's ``id`` (if it is
    a dict with one), ``event_bytes`` its size as JSON and ``event_head`` its first bytes.
    """
    event_id = item.get("id") if isinstance(item, dict) else None
    budget = limit // 2
    while True:
        record = {
            "reason": reason,
            "events": [],
            "errors": [None if error is None else error[: budget // 4]],
            "truncated": True,
            "event_id": event_id,
            "event_bytes": len(event),
            "event_head": event[:budget].decode("utf-8", "ignore"),
        }
        payload = orjson.dumps(record, default=repr)
        if len(payload) <= limit or budget < 16:
            return payload
        budget //= 2  # escaping made it longer than its budget: halve until it fits
