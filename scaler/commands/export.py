"""`scaler export`: write a time range of the request (and metric) topics to a JSON-lines file.

The file is what ``scaler simulate --trace FILE --trace-format events`` reads, so a replay can be
shared without access to the brokers. Records are read without a consumer group (the daemon's
offsets are untouched), validated with the daemon's decoders, and written one event per line in
the canonical encoding; records that are not valid events, or whose ``ts`` is outside the range,
are left out (the bad ones are counted and the first few shown).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from pathlib import Path
from typing import BinaryIO, Final

from scaler.adapters.kafka_range import read_range
from scaler.core import events
from scaler.ports import RawRecord
from scaler.settings import KafkaSettings, Settings, SettingsError, load_settings

MAX_SHOWN: Final = 5

DESCRIPTION = """\
Write the events of a time range of the request (and replica metric) topics to a JSON-lines file,
which `scaler simulate --trace FILE --trace-format events` replays. No consumer group is joined and
nothing is committed: the daemon's offsets are untouched. Each valid event whose ts is in the range
becomes one line; records that are not valid events are left out, counted, and the first few named.
"""

EPILOG = """\
Examples:
  # Yesterday's traffic (UTC), requests and replica metrics, to a file
  scaler export --bootstrap-servers kafka:9092 --since 2026-11-30T00:00Z --until 2026-12-01T00:00Z \\
      --out yesterday.jsonl
  # ... and what Spillway would have done on it
  scaler simulate --trace yesterday.jsonl --trace-format events --policy policies/prod.yaml
"""


class _AnyModel:
    """A container holding every model name: an export keeps all models, a replay picks later."""

    def __contains__(self, item: object) -> bool:
        return True


def parse_time(text: str, *, flag: str) -> float:
    """Return ``text`` (unix seconds, or ISO 8601; UTC when it names no offset) as unix seconds.

    Raises ValueError naming ``flag`` and the value.
    """
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{flag} {text!r}: not unix seconds or an ISO 8601 time (e.g. 2026-11-30T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def add_range_flags(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """Add the Kafka range flags shared by ``export`` and ``simulate --from-kafka``."""
    parser.add_argument(
        "--bootstrap-servers", metavar="HOST:PORT[,...]", required=required, help="Kafka brokers"
    )
    parser.add_argument("--topic", default="llm.requests", help="request topic (default llm.requests)")
    parser.add_argument(
        "--metrics-topic",
        default="llm.metrics",
        help="replica metrics topic, for the 'as run' row; 'none' to skip (default llm.metrics)",
    )
    parser.add_argument("--since", metavar="TIME", required=required, help="start: ISO 8601 or unix seconds")
    parser.add_argument("--until", metavar="TIME", required=required, help="end: ISO 8601 or unix seconds")
    parser.add_argument("--config", type=Path, metavar="FILE", help="daemon settings file (Kafka security)")


def range_settings(args: argparse.Namespace) -> tuple[Settings, list[str], float, float]:
    """Return (settings, topics, since, until) from the range flags; raises ValueError or SettingsError.

    Kafka security settings come as for ``scaler run``: ``--config`` < ``SCALER_*`` variables.
    """
    since = parse_time(args.since, flag="--since")
    until = parse_time(args.until, flag="--until")
    if until <= since:
        raise ValueError(f"--until {args.until} is not after --since {args.since}")
    servers = tuple(s.strip() for s in args.bootstrap_servers.split(",") if s.strip())
    settings = load_settings(
        config_file=args.config, env=os.environ, flags={"kafka_bootstrap_servers": servers}
    )
    topics = [args.topic] + ([] if args.metrics_topic in ("", "none") else [args.metrics_topic])
    return settings, topics, since, until


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="Write a time range of the request and metric topics to a JSON-lines file",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_range_flags(parser, required=True)
    parser.add_argument("--out", type=Path, metavar="FILE", required=True, help="JSON-lines file to write")
    parser.set_defaults(func=run)


class _Writer:
    """Validates records and writes the canonical lines of the events in range to ``out``."""

    def __init__(self, out: BinaryIO, *, since: float, until: float) -> None:
        self.out = out
        self.since, self.until = since, until
        self.requests = self.metrics = self.bad = 0
        self.problems: list[str] = []

    def add(self, record: RawRecord) -> None:
        models = _AnyModel()
        event: events.RequestEvent | events.MetricEvent
        try:
            event = events.decode_request(record.value, known_models=models, now=0.0, max_skew=1e300)
            line = events.encode_request(event)
        except events.InvalidEvent as exc:
            try:
                event = events.decode_metric(record.value, known_models=models, now=0.0, max_skew=1e300)
                line = events.encode_metric(event)
            except events.InvalidEvent:
                self.bad += 1
                if len(self.problems) < MAX_SHOWN:
                    self.problems.append(f"{record.topic}[{record.partition}]@{record.offset}: {exc}")
                return
        if not self.since <= event.ts <= self.until:
            return
        if isinstance(event, events.RequestEvent):
            self.requests += 1
        else:
            self.metrics += 1
        self.out.write(line + b"\n")

    @property
    def written(self) -> int:
        """Return how many events were written."""
        return self.requests + self.metrics


async def export_range(
    *, kafka: KafkaSettings, topics: list[str], since: float, until: float, path: Path
) -> _Writer:
    """Write the events of ``topics`` in ``[since, until]`` to ``path`` (via a temporary file beside it).

    Returns the writer's counts. ``path`` is replaced only when at least one event was written.
    Raises ConnectionError, LookupError (as :func:`read_range`) and OSError.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as out:
            writer = _Writer(out, since=since, until=until)
            await read_range(kafka=kafka, topics=topics, since=since, until=until, on_record=writer.add)
        if writer.written:
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return writer


def run(args: argparse.Namespace) -> int:
    """Export the range; return 0, or 1 (one line on stderr) on bad flags, Kafka errors or no events."""

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        settings, topics, since, until = range_settings(args)
    except SettingsError as exc:
        say(f"error: {'; '.join(exc.problems)}")
        return 1
    except ValueError as exc:
        say(f"error: {exc}")
        return 1
    exporting = export_range(kafka=settings.kafka, topics=topics, since=since, until=until, path=args.out)
    try:
        writer = asyncio.run(exporting)
    except (ConnectionError, LookupError) as exc:
        say(f"error: {exc}")
        return 1
    except OSError as exc:
        say(f"error: cannot write {args.out}: {exc.strerror or exc}")
        return 1
    for problem in writer.problems:
        say(f"warning: {problem} (left out)")
    if writer.bad > len(writer.problems):
        say(f"warning: {writer.bad - len(writer.problems)} more bad records left out")
    if not writer.written:
        say(f"error: no events from {args.since} to {args.until} on {', '.join(topics)}")
        return 1
    say(
        f"wrote {writer.written:,} events ({writer.requests:,} request, {writer.metrics:,} metric; "
        f"{writer.bad:,} bad left out) of {', '.join(topics)} to {args.out}"
    )
    return 0
