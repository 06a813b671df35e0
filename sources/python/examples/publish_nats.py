#!/usr/bin/env python3
"""Publish a chunk file to Sluice straight through NATS JetStream, with nats-py.

This example uses nothing of Sluice but its wire contract, ``schemas/README.md``: it does
what Sluice's own loader (``pipeline/intake/loader.go``) does behind ``POST /v1/jobs``.

1. Publish the job's ``open`` event on ``sluice.v1.jobs.{env}`` and wait for the ack.
2. Publish every usable item of the file on ``sluice.v1.chunks.{env}`` -- one item per message,
   exactly the item (not the file around it) -- with the headers ``Nats-Msg-Id``
   (``<job_id>/<chunk_id>``, or ``<job_id>/<chunk_id>#<index>`` for a repeated id so the
   later item is not dropped as a duplicate), ``Sluice-Job``, ``Sluice-Item`` (the item's
   0-based position in the file) and ``Sluice-Schema: sluice.chunk.v1``. Items that cannot be
   published (not an object, no string id, no text, empty text, too large) are not sent; they
   are remembered with their index and reason.
3. Once every chunk publish is acked, publish the ``seal`` event with the totals
   (``total == published + rejected``) and the rejections and warnings (at most 1000 each).

The job id is computed exactly as Sluice computes it for an upload
(``"j" + sha256(env + "\\0" + sha256(file bytes)).hex()[:24]``, see ``JobID`` in
``pipeline/intake/loader.go``), so the same file gets the same job whether it comes through the HTTP
API, ``sluice load`` or this script. Publishing a file again is safe: within the streams'
duplicate window JetStream drops the repeated messages by ``Nats-Msg-Id``, Sluice counts each
``(job, item)`` once, and documents are upserted by chunk id. (Sluice's own loader looks the job
up first and publishes nothing if it is already sealed; with the HTTP API running you can do
the same with ``GET /v1/jobs/{id}``, which this script does with ``--api-url``.)

Usage::

    pip install nats-py
    python3 publish_nats.py --nats nats://127.0.0.1:4222 --env dev FILE
    python3 publish_nats.py --env dev --api-url http://127.0.0.1:8080 FILE   # also wait for it

Accepted files are those Sluice accepts: a JSON object holding a ``chunks``,
``vectorized_chunks``, ``items`` or ``enriched_chunks`` array (read whole, as the standard
library has no streaming JSON parser), or JSONL/NDJSON with one item per line (streamed).

Not tested in this repository's CI: nats-py cannot be installed there. The parts that do not
need NATS (reading, checking, the job id, the events) are importable without nats-py, and the
Python client's test checks them against a real Sluice.
"""

import argparse
import asyncio
import hashlib
import json
import os
import sys
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

MAX_MESSAGE_BYTES = 1 << 20  # the contract's default per-message limit (nats-server max_payload)
HEADER_ROOM = 8 << 10  # leave room for the headers, as Sluice's loader does
MAX_ISSUES = 1000  # at most this many rejections and warnings in a seal
IN_FLIGHT = 256  # chunk publishes awaiting their ack at once
ACK_TIMEOUT = 10.0  # seconds to wait for one publish ack
ATTEMPTS = 6  # tries per message for an ack timeout or a full stream
ENVS = ("dev", "test", "prod")
ARRAY_KEYS = ("chunks", "vectorized_chunks", "items", "enriched_chunks")
CHUNK_SCHEMA = "sluice.chunk.v1"
JOB_SCHEMA = "sluice.job.v1"


def chunk_subject(env: str) -> str:
    return f"sluice.v1.chunks.{env}"


def job_subject(env: str) -> str:
    return f"sluice.v1.jobs.{env}"


def now() -> str:
    """An RFC 3339 timestamp with an upper-case T and Z, as job events require."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def job_id_for(path: str, env: str) -> str:
    """The job id Sluice gives this file's content in env (jobs.JobID in pipeline/jobs)."""
    content = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            content.update(block)
    h = hashlib.sha256()
    h.update(env.encode())
    h.update(b"\0")
    h.update(content.digest())
    return "j" + h.hexdigest()[:24]


class FileItems(NamedTuple):
    format: str  # "chunks", "vectorized_chunks", "items", "enriched_chunks" or "jsonl"
    source_job_id: Optional[str]  # the file's own "job_id", when it has one
    items: Iterator[Tuple[int, Any, Optional[str]]]  # (index, decoded item, error or None)


def read_items(path: str) -> FileItems:
    """Opens a chunk file. Raises ValueError for a file that is not a chunk file."""
    if path.lower().endswith((".jsonl", ".ndjson")):
        return FileItems("jsonl", None, _jsonl(path))
    with open(path, "rb") as f:
        raw = f.read()
    try:
        doc = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several JSON values: one per line
            return FileItems("jsonl", None, _jsonl(path))
        raise ValueError(f"{path}: invalid JSON: {e}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8: {e}") from e
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: want a JSON object with a chunk array or JSONL")
    for key in ARRAY_KEYS:
        if isinstance(doc.get(key), list):
            src = doc.get("job_id")
            items = ((i, item, None) for i, item in enumerate(doc[key]))
            return FileItems(key, src if isinstance(src, str) else None, items)
    raise ValueError(f"{path}: no chunk array ({', '.join(ARRAY_KEYS)})")


def _jsonl(path: str) -> Iterator[Tuple[int, Any, Optional[str]]]:
    index = 0
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue  # blank lines are not items
            try:
                yield index, json.loads(line.decode("utf-8")), None
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                yield index, None, f"invalid JSON: {e}"
            index += 1


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(v), type(v).__name__)


def check_item(item: Any) -> Tuple[Optional[str], Optional[str]]:
    """Returns (chunk id, None) for a publishable item, or (id or None, reason) for one that
    must be rejected: the id and text rules of schemas/chunk.v1.json, plus empty text, which
    the schema allows but Sluice would dead-letter. Other checks (types of known fields,
    document limits such as nesting depth 16) are left to Sluice, which dead-letters a
    failing item with class validation or limit; the job then ends completed_with_errors."""
    if not isinstance(item, dict):
        return None, f"item is not a JSON object (got {_type_name(item)})"
    cid = None
    for field in ("chunk_id", "id"):  # the id is chunk_id, else id; each present one must be valid
        if field not in item:
            continue
        v = item[field]
        if not isinstance(v, str):
            return None, f"{field} must be a string, got {_type_name(v)}"
        if not v or any(c < " " or c == "\x7f" for c in v):
            return None, f"{field} must be non-empty, without control characters"
        cid = cid or v
    if cid is None:
        return None, "no id"
    fields = ("content", "text", "enhanced_content", "original_content")
    present = [f for f in fields if f in item]
    if not present:
        return cid, "no text: " + ", ".join(fields) + " are all missing"
    for f in present:
        if not isinstance(item[f], str):
            return cid, f"{f} must be a string, got {_type_name(item[f])}"
    if "content" in item:
        text = item["content"]
    elif "text" in item:
        text = item["text"]
    else:  # a legacy enriched item: enhanced_content when non-empty, else original_content
        text = item.get("enhanced_content") or item.get("original_content", "")
    if text == "":
        return cid, "empty content"
    return cid, None


class Prepared(NamedTuple):
    index: int
    chunk_id: str
    data: bytes
    headers: Dict[str, str]


class Issues:
    """Rejections and warnings of one job, bounded as a seal needs them."""

    def __init__(self) -> None:
        self.rejected = 0
        self.rejections: List[Dict[str, Any]] = []
        self.warnings: List[Dict[str, Any]] = []

    def reject(self, index: int, cid: Optional[str], reason: str) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_ISSUES:
            issue = {"index": index, "reason": reason}
            if cid:
                issue["id"] = cid
            self.rejections.append(issue)

    def warn(self, index: int, cid: str, reason: str) -> None:
        if len(self.warnings) < MAX_ISSUES:
            self.warnings.append({"index": index, "id": cid, "reason": reason})


def prepare(items: Iterator[Tuple[int, Any, Optional[str]]], job_id: str, issues: Issues,
            max_bytes: int = MAX_MESSAGE_BYTES - HEADER_ROOM,
            trace: Optional[Dict[str, str]] = None) -> Iterator[Prepared]:
    """Yields the messages to publish, one per usable item, rejecting the others in issues.
    trace (W3C ``traceparent`` and ``tracestate`` headers) is set on every message: Sluice's
    message spans, logs and dead letters then carry that trace."""
    first_index: Dict[str, int] = {}
    for index, item, error in items:
        if error is not None:
            issues.reject(index, None, error)
            continue
        cid, reason = check_item(item)
        if reason is not None:
            issues.reject(index, cid, reason)
            continue
        # ASCII escapes: safe for any str, even one holding a lone surrogate from a \\ud83d
        # escape in the file (Sluice stores U+FFFD for it).
        data = json.dumps(item, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        if len(data) > max_bytes:
            issues.reject(index, cid, f"record too large: {len(data)} bytes exceeds the "
                                      f"message limit of {max_bytes}")
            continue
        msg_id = f"{job_id}/{cid}"
        if cid in first_index:
            msg_id += f"#{index}"  # otherwise JetStream drops the later item as a duplicate
            issues.warn(index, cid, f"duplicate id: item {first_index[cid]} has the same id; "
                                    "the later item wins")
        else:
            first_index[cid] = index
        yield Prepared(index, cid, data, {
            "Nats-Msg-Id": msg_id,
            "Sluice-Job": job_id,
            "Sluice-Item": str(index),
            "Sluice-Schema": CHUNK_SCHEMA,
            **(trace or {}),
        })


def open_event(job_id: str, env: str, file_name: str, fmt: str,
               source_job_id: Optional[str]) -> Dict[str, Any]:
    ev = {"type": "open", "job_id": job_id, "env": env, "file": file_name, "format": fmt,
          "created_at": now()}
    if source_job_id:
        ev["source_job_id"] = source_job_id
    return ev


def seal_event(job_id: str, env: str, published: int, issues: Issues) -> Dict[str, Any]:
    ev: Dict[str, Any] = {"type": "seal", "job_id": job_id, "env": env,
                          "total": published + issues.rejected, "published": published,
                          "rejected": issues.rejected, "sealed_at": now()}
    if issues.rejections:
        ev["rejections"] = issues.rejections
    if len(issues.rejections) < issues.rejected:
        ev["rejections_truncated"] = True
    if issues.warnings:
        ev["warnings"] = issues.warnings
    return ev


# -- publishing (needs nats-py) ---------------------------------------------------------------


def _is_backpressure(err: Exception) -> bool:
    # A full stream (it discards new messages) answers "maximum messages exceeded" or
    # "maximum bytes exceeded": wait and publish again; nothing stored is lost.
    return "exceeded" in (getattr(err, "description", None) or str(err)).lower()


async def publish(js: Any, subject: str, data: bytes, headers: Dict[str, str]) -> Any:
    """Publishes one message and waits for its ack, retrying an ack timeout and a full stream
    with the same Nats-Msg-Id (so a retry after a lost ack is stored once)."""
    import nats.errors
    import nats.js.errors

    delay = 0.2
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await js.publish(subject, data, timeout=ACK_TIMEOUT, headers=headers)
        except nats.js.errors.NoStreamResponseError as e:
            raise RuntimeError(f"no stream for {subject}: start Sluice first, it creates "
                               "the streams") from e
        except nats.errors.TimeoutError:
            if attempt == ATTEMPTS:
                raise
        except nats.js.errors.APIError as e:
            if not _is_backpressure(e) or attempt == ATTEMPTS:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def publish_file(js: Any, path: str, env: str, max_bytes: int,
                       traceparent: Optional[str] = None) -> Dict[str, Any]:
    """Publishes one chunk file as one job and returns its seal event. traceparent, when
    given, goes on every message (its job events too)."""
    import nats.errors

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from sluice_client import _trace_headers  # the same check as the HTTP client's

    trace = _trace_headers(traceparent, None)

    job_id = job_id_for(path, env)
    src = read_items(path)  # fails here, before the open event, for a file that is no chunk file
    name = os.path.basename(path)
    await publish(js, job_subject(env),
                  json.dumps(open_event(job_id, env, name, src.format, src.source_job_id)).encode(),
                  {"Nats-Msg-Id": f"{job_id}/open", "Sluice-Schema": JOB_SCHEMA, **trace})

    issues = Issues()
    published = 0
    subject = chunk_subject(env)
    window: List[Tuple[Prepared, "asyncio.Task[Any]"]] = []

    async def settle() -> None:
        nonlocal published
        for p, task in window:
            try:
                await task
                published += 1
            except nats.errors.MaxPayloadError:  # the server's limit is lower than ours
                issues.reject(p.index, p.chunk_id, "record too large for the server's max_payload")
        window.clear()

    for p in prepare(src.items, job_id, issues, max_bytes, trace):
        window.append((p, asyncio.ensure_future(publish(js, subject, p.data, p.headers))))
        if len(window) >= IN_FLIGHT:
            await settle()
    await settle()  # every chunk acked before the seal

    seal = seal_event(job_id, env, published, issues)
    await publish(js, job_subject(env), json.dumps(seal).encode(),
                  {"Nats-Msg-Id": f"{job_id}/seal", "Sluice-Schema": JOB_SCHEMA, **trace})
    return seal


async def amain(args: argparse.Namespace) -> int:
    import nats  # pip install nats-py

    nc = await nats.connect(args.nats)
    try:
        max_bytes = min(getattr(nc, "max_payload", MAX_MESSAGE_BYTES) or MAX_MESSAGE_BYTES,
                        MAX_MESSAGE_BYTES) - HEADER_ROOM
        seal = await publish_file(nc.jetstream(), args.file, args.env, max_bytes,
                                  args.traceparent)
    finally:
        await nc.drain()
    print(f"{args.file}: job {seal['job_id']} sealed: {seal['total']} total, "
          f"{seal['published']} published, {seal['rejected']} rejected")
    for r in seal.get("rejections", []):
        print(f"  item {r['index']}{' (' + r['id'] + ')' if r.get('id') else ''}: {r['reason']}")
    if not args.api_url:
        return 3 if seal["rejected"] else 0
    # Follow the job through the HTTP API with the standard-library client next door.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from sluice_client import Client

    job = Client(args.api_url).wait(seal["job_id"], raise_on_errors=False)
    print(f"{args.file}: job {job['job_id']} {job['state']}: {job['written']} written, "
          f"{job['rejected']} rejected, {job['dead_lettered']} dead-lettered")
    return 0 if job["state"] == "completed" else 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--env", default="dev", choices=ENVS)
    parser.add_argument("--nats", default=os.environ.get("NATS_URL") or "nats://127.0.0.1:4222",
                        help="NATS server URL (NATS_URL)")
    parser.add_argument("--api-url", default=None,
                        help="Sluice HTTP API; when set, wait for the job and report it")
    parser.add_argument("--traceparent", default=os.environ.get("TRACEPARENT") or None,
                        help="W3C traceparent set on every message (TRACEPARENT)")
    return asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
