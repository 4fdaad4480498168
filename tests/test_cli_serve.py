"""The ``serve`` subcommand's argument checks (the parser itself, no server)."""

from __future__ import annotations

import pytest

from sluiceway.cli import _parser


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "--workers: must be at least 1, got 0"),
        (["--workers", "-3"], "--workers: must be at least 1, got -3"),
        (["--workers", "two"], "--workers: not a whole number: 'two'"),
        (["--port", "99999"], "--port: must be within 0..65535, got 99999"),
        (["--port", "-1"], "--port: must be within 0..65535, got -1"),
        (["--metrics-port", "70000"], "--metrics-port: must be within 0..65535, got 70000"),
        (["--drain-timeout", "-1"], "--drain-timeout: must be at least 0 seconds, got -1"),
        (["--graceful-timeout", "-0.5"], "--graceful-timeout: must be at least 0 seconds"),
        (["--drain-timeout", "nan"], "--drain-timeout: not a number of seconds: 'nan'"),
        (["--max-body", "0"], "--max-body: must be at least 1, got 0"),
        (["--max-inflight-bytes", "-5"], "--max-inflight-bytes: must be at least 1, got -5"),
        (["--idempotency-keys", "-1"], "--idempotency-keys: must be at least 0, got -1"),
        (["--idempotency-ttl", "-1"], "--idempotency-ttl: must be at least 0 seconds"),
    ],
)
def test_out_of_range_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bad value is an argparse error (exit 2) naming the option and the rule."""
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["serve", "app:make", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_good_arguments_parse() -> None:
    """In-range values are taken as given; the defaults are the documented ones."""
    args = _parser().parse_args(
        ["serve", "app:make", "--workers", "3", "--port", "0", "--drain-timeout", "0"]
    )
    assert (args.workers, args.port, args.drain_timeout) == (3, 0, 0.0)
    assert args.graceful_timeout == 60.0
    assert args.max_inflight_bytes == 64 * 2**20
    assert args.dead_letters == "sluiceway-dead-letters.jsonl"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metrics-port", "99999"], "--metrics-port: must be within 0..65535, got 99999"),
        (["--stream", "a.b"], "--stream: a NATS name may not contain"),
        (["--durable", "a.b"], "--durable: a NATS name may not contain"),
        (["--durable", "a b"], "--durable: a NATS name may not contain"),
        (["--stream", "A*"], "--stream: a NATS name may not contain"),
        (["--stream", ""], "--stream: a NATS name may not be empty"),
        (["--ack-wait", "0"], "--ack-wait: must be > 0"),
        (["--max-deliver", "0"], "--max-deliver: must be at least 1, got 0"),
        (["--max-deliver", "-5"], "--max-deliver: must be at least 1, got -5"),
        (["--connect-timeout", "-1"], "--connect-timeout: must be > 0"),
    ],
)
def test_bad_worker_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sluiceway worker``: each bad value is an argparse error (exit 2), no traceback."""
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["worker", "app:make", "--nats", "nats://127.0.0.1:4222", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
