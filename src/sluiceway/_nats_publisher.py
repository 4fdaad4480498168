"""The NATS publisher: events into envelopes, envelopes into a stream, failures not lost."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NATS

from ._errors import SluicewayError
from ._nats_wire import ensure_streams, subjects

__all__ = ["EventNotEncodable", "EventTooLarge", "PublishError", "Publisher"]


class PublishError(SluicewayError):
    """Events the publisher could not store; ``events`` lists them, the cause is chained.

    Raised by the call that found the problem: at once for an event that cannot be sent
    (the subclasses below), or by the next ``publish``/``flush``/``close`` call for an
    envelope the server refused or never acknowledged after it was sent in the background.
    """

    def __init__(self, message: str, events: list[Any]) -> None:
        super().__init__(message)
        self.events = events


class EventNotEncodable(PublishError, TypeError):
    """``publish`` got an event orjson cannot encode; nothing of it was queued."""


class EventTooLarge(PublishError, ValueError):
    """``publish`` got an event whose envelope alone exceeds the server's max payload."""

    def __init__(self, message: str, events: list[Any], size: int, max_payload: int) -> None:
        super().__init__(message, events)
        self.size = size
        self.max_payload = max_payload


# An envelope is b'{"id":"<32 hex>","events":[' + events joined by b"," + b"]}".
_ENVELOPE_OVERHEAD = len(b'{"id":"","events":[]}') + 32


def _encode(event: Any, event_id: str) -> bytes:
    """The event's JSON; a dict without ``id`` gets ``event_id`` (the event is not changed)."""
    try:
        if isinstance(event, dict) and "id" not in event:
            return orjson.dumps({**event, "id": event_id})
        return orjson.dumps(event)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise _not_encodable(event, exc) from exc


def _not_encodable(event: Any, exc: Exception) -> EventNotEncodable:
    return EventNotEncodable(f"the event cannot be encoded as JSON: {exc}", [event])


def _name(event: Any, event_id: str) -> None:
    """Give a dict without ``id`` the one it was sent with, so that a resend keeps it."""
    if isinstance(event, dict) and "id" not in event:
        event["id"] = event_id


class Publisher:
    """Batches events into envelopes and publishes them to a stream.

    Each event is encoded when it is published, so an event that cannot be sent raises
    there and then (:class:`EventNotEncodable`, :class:`EventTooLarge`). Envelopes close at
    ``batch_size`` events, after ``max_delay`` seconds, or before they would exceed the
    server's max payload. A failure after an envelope left (the server refused it, or no ack
    came within ``ack_timeout``) is raised as :class:`PublishError`, naming its events, by
    the next ``publish``, ``flush`` or ``close`` call.
    """

    def __init__(
        self,
        nc_or_url: NATS | str,
        *,
        stream: str = "SLUICEWAY",
        subject: str = "sluiceway.events",
        batch_size: int = 1000,
        max_delay: float = 0.005,
        create_stream: bool = False,
        max_pending_acks: int = 64,
        ack_timeout: float = 10.0,
    ) -> None:
        self._nc_or_url = nc_or_url
        self.stream = stream
        self.subject, self.priority_subject, _ = subjects(subject)
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.create_stream = create_stream
        self.max_pending_acks = max_pending_acks
        self.ack_timeout = ack_timeout
        # The open envelope: its id, its events and their encodings, its size in bytes.
        self._envelope_id = uuid.uuid4().hex
        self._events: list[Any] = []
        self._encoded: list[bytes] = []
        # Invariant: _room <= max payload - the open envelope's bytes (a comma per event).
        self._room = (1 << 20) - _ENVELOPE_OVERHEAD
        self._acks: list[tuple[asyncio.Future[Any], list[Any]]] = []
        self._failures: list[PublishError] = []  # raised by the next call, then forgotten
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._own = isinstance(nc_or_url, str)
        self._closed = False
        self.nc: NATS | None = None
        self.js: Any = None
        self.envelopes = 0
        self.events = 0

    def __repr__(self) -> str:
        return (
            f"Publisher(stream={self.stream!r}, subject={self.subject!r}, "
            f"batch_size={self.batch_size}, envelopes={self.envelopes}, events={self.events}, "
            f"buffered={len(self._events)}, closed={self._closed})"
        )

    async def start(self) -> Publisher:
        """Connect (if given a URL) and create the streams if asked."""
        if isinstance(self._nc_or_url, str):
            self.nc = await nats.connect(self._nc_or_url)
        else:
            self.nc = self._nc_or_url
        self.js = self.nc.jetstream()
        self._room = self._limit() - _ENVELOPE_OVERHEAD
        if self.create_stream:
            await ensure_streams(self.js, self.stream, self.subject)
        return self

    async def __aenter__(self) -> Publisher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _limit(self) -> int:
        """The server's limit on one message, in bytes (from its INFO; 1 MiB before)."""
        return self.nc.max_payload if self.nc is not None else 1 << 20

    async def publish(self, event: Any, priority: bool = False) -> None:
        """Queue ``event`` (a JSON-able dict); priority events are sent at once, alone.

        Raises :class:`EventNotEncodable` or :class:`EventTooLarge` for this event (nothing
        of it queued), or :class:`PublishError` for earlier events that were not stored.
        """
        if self._failures:
            self._raise_failures()
        if priority:
            await self._publish_priority(event)
            return
        if isinstance(event, dict) and "id" not in event:
            encoded = await self._encode_unnamed(event)
        else:  # the hot path: one encoding, one comparison
            try:
                encoded = orjson.dumps(event)
            except (TypeError, orjson.JSONEncodeError) as exc:
                raise _not_encodable(event, exc) from exc
            if len(encoded) >= self._room:
                await self._make_room(event, encoded)
        self._events.append(event)
        self._encoded.append(encoded)
        self._room -= len(encoded) + 1
        if len(self._encoded) >= self.batch_size:
            await self._send_buffer()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.max_delay, self._flush_soon)

    async def _make_room(self, event: Any, encoded: bytes) -> None:
        """The open envelope cannot take ``encoded``: send it; raise if it never could."""
        if self._events:
            await self._send_buffer()
        if len(encoded) >= self._room:
            size = _ENVELOPE_OVERHEAD + len(encoded)
            raise EventTooLarge(
                f"an envelope holding only this event is {size} bytes; the server accepts "
                f"at most {self._limit()}",
                [event],
                size,
                self._limit(),
            )

    async def _encode_unnamed(self, event: dict[str, Any]) -> bytes:
        """Encode a dict without ``id`` with the id of its place, then give it that id."""
        event_id = f"{self._envelope_id}-{len(self._events)}"
        encoded = _encode(event, event_id)
        if len(encoded) >= self._room:
            await self._make_room(event, encoded)
            event_id = f"{self._envelope_id}-0"  # it opens a new envelope
            encoded = _encode(event, event_id)
            await self._make_room(event, encoded)
        event["id"] = event_id  # a resend of this event keeps its id
        return encoded

    async def _publish_priority(self, event: Any) -> None:
        envelope_id = uuid.uuid4().hex
        encoded = _encode(event, f"{envelope_id}-0")
        if _ENVELOPE_OVERHEAD + len(encoded) > self._limit():
            raise EventTooLarge(
                f"an envelope holding only this event is {_ENVELOPE_OVERHEAD + len(encoded)} "
                f"bytes; the server accepts at most {self._limit()}",
                [event],
                _ENVELOPE_OVERHEAD + len(encoded),
                self._limit(),
            )
        _name(event, f"{envelope_id}-0")
        await self._send(self.priority_subject, envelope_id, [event], [encoded])
        if self._failures:  # it could not even be sent: say so now
            self._raise_failures()

    def _flush_soon(self) -> None:
        """The timer fired: send the open envelope; a failure is kept for the next call."""
        self._timer = None
        self._tasks.add(task := asyncio.ensure_future(self._send_buffer()))
        task.add_done_callback(self._tasks.discard)

    async def publish_many(self, events: list[Any], priority: bool = False) -> None:
        """Queue many events."""
        for event in events:
            await self.publish(event, priority)

    async def flush(self) -> None:
        """Send the open envelope now and wait until the server stored everything sent.

        Raises :class:`PublishError` naming the events that were not stored.
        """
        await self._send_buffer()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._await_acks()
        self._raise_failures()

    async def _send_buffer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._events:
            return
        envelope_id, events, encoded = self._envelope_id, self._events, self._encoded
        self._envelope_id, self._events, self._encoded = uuid.uuid4().hex, [], []
        self._room = self._limit() - _ENVELOPE_OVERHEAD
        await self._send(self.subject, envelope_id, events, encoded)

    async def _send(
        self, subject: str, envelope_id: str, events: list[Any], encoded: list[bytes]
    ) -> None:
        payload = b'{"id":"%s","events":[%s]}' % (envelope_id.encode(), b",".join(encoded))
        try:
            ack = await self.js.publish_async(subject, payload)
        except Exception as exc:  # noqa: BLE001 - kept and raised by the next call
            self._fail(events, exc)
            return
        ack.add_done_callback(functools.partial(self._acked, events))
        self._acks.append((ack, events))
        self.envelopes += 1
        self.events += len(events)
        if len(self._acks) >= self.max_pending_acks:
            await self._await_acks()

    def _acked(self, events: list[Any], ack: asyncio.Future[Any]) -> None:
        if ack.cancelled():
            self._fail(events, TimeoutError("the publish was cancelled"))
        elif (exc := ack.exception()) is not None:
            self._fail(events, exc)

    def _fail(self, events: list[Any], exc: BaseException) -> None:
        if getattr(exc, "description", None):  # the stream refused them: certainly not stored
            what = "were not stored"
        else:  # no ack (a timeout, a lost connection): the broker may have them
            what = "not confirmed stored (they may still be stored if the broker received them)"
        error = PublishError(f"{len(events)} event(s) {what}: {type(exc).__name__}: {exc}", events)
        error.__cause__ = exc
        self._failures.append(error)

    def _raise_failures(self) -> None:
        if not self._failures:
            return
        failures, self._failures = self._failures, []
        if len(failures) == 1:
            raise failures[0]
        events = [e for f in failures for e in f.events]
        error = PublishError(
            f"{len(events)} event(s) in {len(failures)} envelopes were not stored or not "
            f"confirmed stored; first: {failures[0]}",
            events,
        )
        raise error from failures[0].__cause__

    async def _await_acks(self) -> None:
        acks, self._acks = self._acks, []
        if not acks:
            return
        _done, pending = await asyncio.wait([a for a, _ in acks], timeout=self.ack_timeout)
        for ack in pending:
            ack.cancel()  # its callback records the failure
        await asyncio.sleep(0)  # let the done callbacks run

    async def close(self) -> None:
        """Flush, wait for every ack, and disconnect if this publisher connected.

        Raises :class:`PublishError` for events that were not stored or not confirmed stored
        (after disconnecting: the connection is closed even when the broker is down). Events
        without an ack may still be stored if the broker received them.
        A second call does nothing.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self.js is not None:
                await self._send_buffer()
                if self._tasks:
                    await asyncio.gather(*self._tasks, return_exceptions=True)
                await self._await_acks()
        finally:
            if self._own and self.nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.nc.drain(), self.ack_timeout)
                if not self.nc.is_closed:  # the drain failed (broker down): stop reconnecting
                    with contextlib.suppress(Exception):
                        await self.nc.close()
        self._raise_failures()
