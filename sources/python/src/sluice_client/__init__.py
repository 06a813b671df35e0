#!/usr/bin/env python3
"""Sluice client: submit chunk files as load jobs to a Sluice server and wait for them.

The package ``sluice-client`` (``pip install sources/python``; typed: ``py.typed``), using only
the Python standard library (3.9 or later). Its code is this one file: copying it next to your
code as ``sluice_client.py`` works too, as does ``sources/python`` on ``sys.path``. Results are
plain dicts, described for type checkers by the TypedDicts ``Job``, ``SubmitResult``,
``JobPage``, ``DeadLetter``, ``DeadLetterPage`` and ``ReplayResult``.

Quick start::

    from sluice_client import Client, JobFailed

    client = Client("http://127.0.0.1:8080")          # token from SLUICE_TOKEN when set
    job = client.load("job_123_pass_a_chunks.json", env="dev")
    print(job["state"], job["written"])              # completed 400

    # An iterator of chunk dicts is streamed as NDJSON; it is never turned into a list.
    job = client.load(({"chunk_id": f"c{i}", "content": text} for i, text in enumerate(texts)))

API
---
``class SluiceError(Exception)``
    Any failure talking to Sluice. Attributes: ``status`` (the HTTP status, or ``None`` when no
    answer came, e.g. connection refused), ``problem`` (the server's RFC 9457
    ``application/problem+json`` document as a dict, ``{}`` when there was none) and
    ``message`` (the text, built from the problem's ``detail``). 401 and 403 say "token missing
    or lacks scope".

``class JobFailed(SluiceError)``
    Raised by ``wait()`` (and ``load()``) when a job ends ``completed_with_errors`` -- some items
    were rejected at intake or dead-lettered -- and ``raise_on_errors`` is true. ``job`` is the
    final job dict; the message lists the first rejections.

``Client(base_url="http://127.0.0.1:8080", token=None, timeout=30.0, submit_timeout=600.0)``
    ``base_url`` may carry a path prefix (``https://host/sluice``). ``token`` defaults to the
    ``SLUICE_TOKEN`` environment variable and is sent as ``Authorization: Bearer``. ``timeout``
    bounds each socket operation of a request, in seconds; ``submit_timeout`` does the same for
    uploads, whose answer comes only once every item is durably published. A Client holds no
    connection between calls (each call opens its own), so it is safe to share across threads.
    Environment proxies are not used. An answer 429 or 503 with ``Retry-After`` (the server's
    per-token rate limits, its upload spool or connection cap, a broker away) is waited out
    (at most 30 s a time) and the request sent again, up to 8 times, when its body can be sent
    again: files and bytes can, ``submit_chunks``' streamed iterators cannot.
    ``traceparent`` (and ``tracestate``), W3C trace context, are sent as headers on every
    request: the server's spans, its NATS messages, its logs and a job's dead letters then carry
    that trace (``docs/operations.md``, "Tracing"). A malformed ``traceparent`` (not
    ``00-<32 hex>-<16 hex>-<2 hex>`` in lower case, or an all-zero id) raises ``ValueError``.

``Client.submit_file(path, env="dev", force=False, idempotency_key=None, file_name=None,
traceparent=None, tracestate=None) -> dict``
    Streams the file (it is never read whole): ``.jsonl``/``.ndjson`` files as
    ``application/x-ndjson``, anything else as ``application/json`` (the server recognises the
    chunk file format from the content). A regular file is sent with ``Content-Length``, a pipe
    with chunked transfer encoding. Returns the submission:
    ``{"job_id", "env", "state", "total", "published", "rejected", "rejections", "existing"}``.
    ``existing`` is true when the same content was already loaded in ``env`` (nothing was
    published again); ``force=True`` loads it again as a new job. ``idempotency_key`` is sent
    as the ``Idempotency-Key`` header. ``file_name`` (default: the file's base name) is the name
    recorded on the job. ``traceparent``/``tracestate`` override the client's for this upload
    (``load`` passes them on too). Blocks until the server has published every item.

``Client.submit_chunks(chunks, env="dev", file_name=None, force=False,
idempotency_key=None, traceparent=None, tracestate=None) -> dict``
    Streams an iterable of chunk dicts as NDJSON with chunked transfer encoding, encoding items
    as the iterator yields them; memory stays bounded however many there are. Item ``i`` of the
    iterator is item ``i`` of the job (rejections name it by that index). An item that cannot be
    encoded as JSON (``NaN``, a ``set``) raises ``ValueError`` naming its index and the upload
    is abandoned: the server publishes nothing. Returns the submission, as ``submit_file``.

``Client.get_job(job_id) -> dict``
    The job: ``{"job_id", "env", "state", "total", "published", "written", "rejected",
    "dead_lettered", "rejections", "warnings", "created_at", ...}``. ``state`` is ``pending``,
    ``running``, ``completed``, ``completed_with_errors``, ``rolled_back`` or ``failed`` (its
    publisher stopped before sealing it; ``failure`` says why). Raises ``SluiceError`` (404) for an
    unknown id.

``Client.wait(job_id, timeout=None, poll_interval=0.5, progress=None,
raise_on_errors=True) -> dict``
    Follows the job's event stream (``GET /v1/jobs/{id}/events``) until the server says it is
    done -- a final state (``DONE_STATES``: ``completed``, ``completed_with_errors``,
    ``failed``, ``rolled_back``, or any the server adds) with no rollback pending -- and
    returns the final job, read whole (with its rejections). A stream that drops or stays
    silent longer than ``timeout`` of the Client (the server sends a comment every 15 s) is
    followed again with ``Last-Event-ID``, after reading the job once in case its end went by
    unseen; a server without the stream (501) is polled every ``poll_interval`` seconds.
    ``progress(job)`` is called with the first job seen and again whenever its state or counts
    change (so at least once). Raises ``JobFailed`` for ``completed_with_errors`` or ``failed``
    when ``raise_on_errors``, and the built-in ``TimeoutError`` when ``timeout`` seconds pass
    first; with ``timeout=None`` it returns only at the end. No answer, or 502/503/504, more
    than 5 times in a row raises ``SluiceError``; a 404 at once.

``Client.list_jobs(state=None, env=None, limit=None, cursor=None) -> JobPage``
    One page of jobs, newest first (``GET /v1/jobs``): ``{"jobs": [...], "next_cursor"}``
    (no ``next_cursor`` on the last page). ``iter_jobs(state=None, env=None, page_size=100)``
    yields every matching job, following the cursors. As ``sluice jobs ls``.

``Client.rollback_job(job_id) -> Job``
    Asks for every document the job wrote to be deleted (``DELETE /v1/jobs/{id}``, admin
    scope); returns the job with ``rollback.state`` ``requested``; ``wait`` follows it to
    ``rolled_back``. As ``sluice jobs rollback``.

``Client.list_dead_letters(job=None, subject=None, error_class=None, since=None, until=None,
limit=None, cursor=None) -> DeadLetterPage``
    One page of dead letters, oldest first (``GET /v1/dlq``); ``since``/``until`` are RFC 3339
    strings or datetimes (naive ones are UTC). ``iter_dead_letters(...)`` yields them all.
    ``get_dead_letter(id)``, ``delete_dead_letter(id)`` (admin),
    ``purge_dead_letters(job=..., ...)`` (admin, at least one filter; returns the count) and
    ``replay_dead_letters(ids=None, job=..., ..., dry_run=False, rate=None, max_replays=None,
    limit=None) -> ReplayResult`` (admin; ids or filters, not both) are ``sluice dlq ls``,
    ``show``, ``delete``, ``purge`` and ``replay``.

``Client.load(path_or_chunks, env="dev", wait=True, progress=None, **kw) -> dict``
    ``submit_file`` for a path (``str``/``os.PathLike``), ``submit_chunks`` for an iterable,
    then ``wait`` unless ``wait=False`` (then the submission is returned). Keyword arguments go
    to the call that takes them: ``force``, ``idempotency_key``, ``file_name`` to the submit;
    ``timeout``, ``poll_interval``, ``raise_on_errors`` to ``wait``.

Command line (``sluice-client`` once installed; ``python3 -m sluice_client``; or, from a
checkout, ``python3 sources/python/sluice_client.py``)::

    sluice-client load FILE... [--env dev|test|prod] [--url URL] [--no-wait]
                               [--force] [--json] [--timeout SECONDS]

``--url`` defaults to ``SLUICE_API_URL`` or ``http://127.0.0.1:8080``; the token comes from
``SLUICE_TOKEN`` only (never from the command line, where other users could see it). On a
terminal a progress line is drawn on stderr. Exit status as ``sluice load``: 0 every item
written, 3 some items rejected or dead-lettered, 1 any other failure, 2 bad usage.
"""

import argparse
import datetime
import http.client
import json
import os
import re
import socket
import ssl
import stat
import sys
import time
import urllib.parse
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

if sys.version_info >= (3, 11):
    from typing import NotRequired, TypedDict
else:  # 3.9, 3.10: every key of the result types is then optional to a type checker
    from typing import TypedDict
    NotRequired = Optional

__all__ = ["Client", "SluiceError", "JobFailed", "DONE_STATES", "main",
           "ItemIssue", "Rollback", "JobFailure", "Job", "SubmitResult", "JobPage",
           "DeadLetterError", "DeadLetterRef", "DeadLetter", "DeadLetterPage", "ReplayResult"]


# -- result types: what the API answers (sources/httpapi/openapi.json). They are plain dicts at
# run time; the TypedDicts give type checkers their keys. Keys the server may leave out are
# NotRequired, and a newer server may add keys.


class ItemIssue(TypedDict):
    """One item rejected at intake, or loaded with a warning."""
    index: int
    id: "NotRequired[str]"
    reason: str


class Rollback(TypedDict):
    """A job's rollback: state is requested, done or failed."""
    state: str
    requested_by: "NotRequired[str]"
    requested_at: str
    finished_at: "NotRequired[str]"
    deleted: int
    error: "NotRequired[str]"


class JobFailure(TypedDict):
    """Why a job's publisher stopped before sealing it (state failed)."""
    reason: str
    at: str


class Job(TypedDict):
    """GET /v1/jobs/{id}. state is pending, running, completed, completed_with_errors,
    rolled_back or failed (a newer server may add states; wait() follows its "done" event)."""
    job_id: str
    env: str
    state: str
    file: "NotRequired[str]"
    format: "NotRequired[str]"
    source_job_id: "NotRequired[str]"
    sealed: bool
    total: int
    published: int
    written: int
    rejected: int
    dead_lettered: int
    rejections: "NotRequired[List[ItemIssue]]"
    rejections_truncated: "NotRequired[bool]"
    rejections_omitted: "NotRequired[int]"
    warnings: "NotRequired[List[ItemIssue]]"
    failure: "NotRequired[JobFailure]"
    rollback: "NotRequired[Rollback]"
    created_at: str
    updated_at: str
    completed_at: "NotRequired[str]"


class SubmitResult(TypedDict):
    """POST /v1/jobs: what was published. existing: the same content was loaded before."""
    job_id: str
    env: str
    state: str
    total: int
    published: int
    rejected: int
    rejections: "NotRequired[List[ItemIssue]]"
    rejections_omitted: "NotRequired[int]"
    existing: bool


class JobPage(TypedDict):
    """GET /v1/jobs: newest first; next_cursor is absent on the last page."""
    jobs: List[Job]
    next_cursor: "NotRequired[str]"


# Why a message was dead-lettered: "class" is validation, limit, rejected, auth, transient or
# exhausted. ("class" is a keyword, hence the functional form.)
DeadLetterError = TypedDict("DeadLetterError",
                            {"class": str, "message": str, "sink": "NotRequired[str]"})


class DeadLetterRef(TypedDict):
    """Where an original too large to embed is stored (GET /v1/dlq/{id}/payload serves it)."""
    bucket: str
    object: str
    size: int
    sha256: str


class DeadLetter(TypedDict):
    """GET /v1/dlq/{id}: the dead-letter envelope and where the DLQ stores it. payload is the
    original's bytes in base64; payload_json the same, decoded, when it is inline JSON."""
    id: str
    subject: str
    headers: Dict[str, List[str]]
    payload: str
    payload_json: "NotRequired[Any]"
    payload_ref: "NotRequired[DeadLetterRef]"
    headers_ref: "NotRequired[DeadLetterRef]"
    error: DeadLetterError
    attempts: int
    first_failure: "NotRequired[str]"
    last_failure: "NotRequired[str]"
    stream: str
    stream_seq: int
    consumer: "NotRequired[str]"
    trace_id: "NotRequired[str]"
    job_id: "NotRequired[str]"
    item: "NotRequired[int]"
    dead_lettered_at: "NotRequired[str]"
    replays: "NotRequired[int]"
    dlq_seq: int
    stored_at: str


class DeadLetterPage(TypedDict):
    """GET /v1/dlq: oldest first; next_cursor is None on the last page."""
    entries: List[DeadLetter]
    next_cursor: Optional[str]


class ReplayResult(TypedDict):
    """POST /v1/dlq/replay: what was (with dry_run: would be) replayed, skipped and failed.
    truncated: more entries matched than the request's limit."""
    replayed: List[Dict[str, str]]
    skipped: List[Dict[str, str]]
    failed: List[Dict[str, str]]
    dry_run: bool
    truncated: bool


Since = Union[str, datetime.datetime]

#: Job states after which nothing changes any more.
DONE_STATES = ("completed", "completed_with_errors", "failed", "rolled_back")

_DEFAULT_URL = "http://127.0.0.1:8080"
_ENVS = ("dev", "test", "prod")
_NDJSON_SUFFIXES = (".jsonl", ".ndjson")
# Bytes per socket write of a file upload, and the size an NDJSON batch grows to before it is
# sent as one chunk of the chunked transfer encoding.
_BLOCK = 64 * 1024
# An answer longer than this is not a Sluice answer (a job with 1000 rejections is ~200 KB).
# A 429 or 503 with Retry-After is waited out and the request sent again this many times, each
# wait at most this many seconds.
_MAX_RETRIES = 8
_MAX_RETRY_WAIT = 30.0
_MAX_RESPONSE = 16 * 1024 * 1024
_WAIT_RETRIES = 5
_RETRY_STATUSES = (502, 503, 504)
# The longest pause between two attempts to follow a job whose event stream dropped.
_MAX_RECONNECT_WAIT = 5.0


class SluiceError(Exception):
    """A request to Sluice failed.

    ``status`` is the HTTP status (``None`` when no answer came), ``problem`` the server's
    problem+json document (``{}`` when there was none), ``message`` the explanation.
    """

    def __init__(self, message: str, status: Optional[int] = None,
                 problem: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.problem = problem if problem is not None else {}


class JobFailed(SluiceError):
    """A job ended with rejected or dead-lettered items. ``job`` is the final job dict."""

    def __init__(self, job: Dict[str, Any]) -> None:
        self.job = job
        super().__init__(_failure_message(job))


def _failure_message(job: Dict[str, Any]) -> str:
    msg = (f"job {job.get('job_id')} {job.get('state')}: {job.get('total', 0)} total, "
           f"{job.get('written', 0)} written, {job.get('rejected', 0)} rejected, "
           f"{job.get('dead_lettered', 0)} dead-lettered")
    rejections = job.get("rejections") or []
    if rejections:
        shown = []
        for r in rejections[:10]:
            ident = f" ({r['id']})" if r.get("id") else ""
            shown.append(f"item {r.get('index')}{ident}: {r.get('reason')}")
        more = len(rejections) - len(shown)
        msg += "; rejections: " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
        if job.get("rejections_truncated"):
            msg += " (list truncated by the server)"
    if job.get("dead_lettered"):
        msg += "; dead letters: see `sluice dlq ls --job " + str(job.get("job_id")) + "`"
    return msg


def _failed(job: Dict[str, Any]) -> bool:
    return (job.get("state") in ("completed_with_errors", "failed") or bool(job.get("rejected"))
            or bool(job.get("dead_lettered")))


def _content_type(path: str) -> str:
    if path.lower().endswith(_NDJSON_SUFFIXES):
        return "application/x-ndjson"
    return "application/json"


def _ndjson(chunks: Iterable[Any]) -> Iterator[bytes]:
    """Encodes chunks as NDJSON lines, yielding batches of about _BLOCK bytes.

    ensure_ascii keeps every line ASCII, so even a str holding a lone surrogate encodes (as a
    \\uXXXX escape, which the server replaces with U+FFFD) and no raw newline can appear.
    """
    buf = []
    size = 0
    for index, chunk in enumerate(chunks):
        try:
            line = json.dumps(chunk, ensure_ascii=True, allow_nan=False,
                              separators=(",", ":")).encode("ascii")
        except (TypeError, ValueError) as e:
            raise ValueError(f"chunk {index} cannot be encoded as JSON: {e}") from e
        buf.append(line)
        buf.append(b"\n")
        size += len(line) + 1
        if size >= _BLOCK:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


class Client:
    """A Sluice HTTP API client. See the module docstring for every method.

    Safe for concurrent use: it keeps no connection or other mutable state between calls.
    """

    def __init__(self, base_url: str = _DEFAULT_URL, token: Optional[str] = None,
                 timeout: float = 30.0, submit_timeout: float = 600.0,
                 ssl_context: Optional[ssl.SSLContext] = None,
                 traceparent: Optional[str] = None, tracestate: Optional[str] = None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url {base_url!r} is not an http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ValueError(f"base_url {base_url!r} must not have a query or fragment")
        if timeout is None or timeout <= 0 or submit_timeout is None or submit_timeout <= 0:
            raise ValueError("timeout and submit_timeout must be positive numbers of seconds")
        if token is None:
            token = os.environ.get("SLUICE_TOKEN")
        token = (token or "").strip() or None
        if token is not None and any(c <= " " or c == "\x7f" for c in token):
            raise ValueError("token must not contain whitespace or control characters")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.submit_timeout = float(submit_timeout)
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self._ssl_context = ssl_context
        self._trace = _trace_headers(traceparent, tracestate)

    def __repr__(self) -> str:
        auth = "with token" if self._token else "without token"
        return f"Client({self.base_url!r}, {auth})"

    # -- requests ------------------------------------------------------------------------------

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=self._ssl_context, blocksize=_BLOCK)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout,
                                          blocksize=_BLOCK)

    def _request(self, method: str, path: str, query: Optional[Dict[str, str]] = None,
                 body: Any = None, headers: Optional[Dict[str, str]] = None,
                 timeout: Optional[float] = None,
                 chunked: bool = False) -> Tuple[int, Dict[str, Any]]:
        """Sends a request like _request_once; a 429 or 503 answer with Retry-After (the
        server's rate limits, spool and connection caps, a broker away) is waited out and the
        request sent again, up to _MAX_RETRIES times, when its body can be sent again (none,
        bytes, or a seekable file). Each wait is at most _MAX_RETRY_WAIT seconds.
        """
        start = None
        if body is not None and not isinstance(body, (bytes, bytearray, str)):
            try:
                start = body.tell() if body.seekable() else None
            except (AttributeError, OSError, ValueError):
                start = None
        resendable = body is None or isinstance(body, (bytes, bytearray, str)) or start is not None
        attempt = 0
        while True:
            try:
                return self._request_once(method, path, query, body, headers, timeout, chunked)
            except SluiceError as e:
                wait = getattr(e, "retry_after", None)
                if wait is None or not resendable or attempt >= _MAX_RETRIES:
                    raise
            attempt += 1
            time.sleep(min(wait, _MAX_RETRY_WAIT))
            if start is not None:
                body.seek(start)

    def _request_once(self, method: str, path: str, query: Optional[Dict[str, str]] = None,
                 body: Any = None, headers: Optional[Dict[str, str]] = None,
                 timeout: Optional[float] = None,
                 chunked: bool = False) -> Tuple[int, Dict[str, Any]]:
        """Sends one request and returns (status, decoded JSON body) of a 2xx answer.

        Raises SluiceError for any other answer or when no answer came.
        """
        target = self._prefix + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        hdrs = {"Accept": "application/json, application/problem+json",
                "User-Agent": "sluice-python-client/1"}
        if self._token:
            hdrs["Authorization"] = "Bearer " + self._token
        if not (headers and "traceparent" in headers):  # a call's own trace replaces the client's
            hdrs.update(self._trace)
        if headers:
            hdrs.update(headers)
        where = f"{method} {self.base_url}{path}"
        conn = self._connection(timeout or self.timeout)
        try:
            send_error = None
            try:
                conn.request(method, target, body=body, headers=hdrs, encode_chunked=chunked)
            except (BrokenPipeError, ConnectionResetError) as e:
                # The server may have answered before reading the whole body (401, 403, 413)
                # and closed the connection: read that answer if it is there.
                send_error = e
            except OSError as e:
                raise SluiceError(f"{where}: cannot reach Sluice at {self.base_url}: {e}") from e
            try:
                resp = conn.getresponse()
                raw = resp.read(_MAX_RESPONSE + 1)
            except (OSError, http.client.HTTPException) as e:
                cause = send_error or e
                raise SluiceError(f"{where}: no answer from Sluice at {self.base_url}: "
                                  f"{cause}") from cause
        finally:
            conn.close()
        status = resp.status
        ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if len(raw) > _MAX_RESPONSE:
            raise SluiceError(f"{where}: answer larger than {_MAX_RESPONSE} bytes", status)
        doc: Any = None
        if ctype in ("application/json", "application/problem+json") or ctype.endswith("+json"):
            try:
                doc = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                doc = None
        if status == 204:
            return status, {}
        if 200 <= status < 300:
            if not isinstance(doc, dict):
                raise SluiceError(f"{where}: {status} answer is not a JSON object "
                                  f"(Content-Type {ctype or 'none'})", status)
            return status, doc
        err = _http_error(where, status, resp.reason, doc if isinstance(doc, dict) else None, raw)
        if status in (429, 503):
            try:
                err.retry_after = max(0.0, float(resp.getheader("Retry-After") or ""))
            except ValueError:
                pass
        raise err

    # -- jobs ----------------------------------------------------------------------------------

    def submit_file(self, path: "os.PathLike[str] | str", env: str = "dev", force: bool = False,
                    idempotency_key: Optional[str] = None,
                    file_name: Optional[str] = None, traceparent: Optional[str] = None,
                    tracestate: Optional[str] = None) -> Dict[str, Any]:
        """Uploads a chunk file as one job; see the module docstring."""
        path = os.fspath(path)
        _check_env(env)
        name = file_name if file_name is not None else os.path.basename(path)
        headers = {"Content-Type": _content_type(path), **_trace_headers(traceparent, tracestate)}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            chunked = True
            if _is_regular(st.st_mode):
                headers["Content-Length"] = str(st.st_size)
                chunked = False
            _, doc = self._request("POST", "/v1/jobs", _submit_query(env, name, force), body=f,
                                   headers=headers, timeout=self.submit_timeout,
                                   chunked=chunked)
        return doc

    def submit_chunks(self, chunks: Iterable[Dict[str, Any]], env: str = "dev",
                      file_name: Optional[str] = None, force: bool = False,
                      idempotency_key: Optional[str] = None, traceparent: Optional[str] = None,
                      tracestate: Optional[str] = None) -> Dict[str, Any]:
        """Streams an iterable of chunk dicts as one NDJSON job; see the module docstring."""
        if isinstance(chunks, (dict, str, bytes)):
            raise TypeError("chunks must be an iterable of chunk dicts, not a single "
                            f"{type(chunks).__name__}")
        _check_env(env)
        headers = {"Content-Type": "application/x-ndjson", **_trace_headers(traceparent, tracestate)}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        _, doc = self._request("POST", "/v1/jobs", _submit_query(env, file_name or "", force),
                               body=_ndjson(chunks), headers=headers,
                               timeout=self.submit_timeout, chunked=True)
        return doc

    def get_job(self, job_id: str) -> Dict[str, Any]:
        """Returns the job's current state; SluiceError (404) when the id is unknown."""
        if not job_id:
            raise ValueError("job_id is empty")
        _, doc = self._request("GET", "/v1/jobs/" + urllib.parse.quote(job_id, safe=""))
        return doc

    def wait(self, job_id: str, timeout: Optional[float] = None, poll_interval: float = 0.5,
             progress: Optional[Callable[[Job], None]] = None,
             raise_on_errors: bool = True) -> Job:
        """Follows the job until it is settled and returns it; see the module docstring."""
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        w = _Waiter(job_id, timeout, progress)
        follow = True           # the server has an event stream (501: it has none)
        last_event_id = None    # of the last event seen, sent back as Last-Event-ID
        failures = 0            # attempts in a row that got nothing
        while True:
            got_event = False
            try:
                if follow:
                    try:
                        last_event_id, got_event = self._follow(job_id, w, last_event_id)
                    except _NoEventStream:
                        follow = False
                        continue
                    if w.final is None:
                        # The stream dropped before the job was settled (a restart, a proxy's
                        # idle timeout): read the job, in case its end went by unseen, and
                        # follow it again.
                        w.seen(self.get_job(job_id))
                else:
                    w.seen(self.get_job(job_id))
                failures = 0
            except SluiceError as e:
                if e.status is not None and e.status not in _RETRY_STATUSES:
                    raise
                failures += 1
                if failures > _WAIT_RETRIES:
                    raise
            if got_event:
                failures = 0
            if w.final is not None:
                job = w.final
                if follow:
                    # The stream carries the job without its rejection list: read it whole.
                    try:
                        job = self.get_job(job_id)
                    except SluiceError:
                        pass
                if raise_on_errors and _failed(job):
                    raise JobFailed(job)
                return job
            pause = poll_interval if not follow else min(
                poll_interval * (2 ** max(failures - 1, 0)), _MAX_RECONNECT_WAIT)
            time.sleep(w.pause(pause))

    def _follow(self, job_id: str, w: "_Waiter",
                last_event_id: Optional[str]) -> Tuple[Optional[str], bool]:
        """Reads the job's event stream (GET /v1/jobs/{id}/events) until a "done" event or a
        settled job, which it hands to w, or until the stream ends or stalls. Returns the id of
        the last event seen and whether any event came. Raises _NoEventStream when the server
        has no event stream, SluiceError for an error answer or no answer, TimeoutError (from
        w) at the deadline.
        """
        path = "/v1/jobs/" + urllib.parse.quote(job_id, safe="") + "/events"
        hdrs = {"Accept": "text/event-stream", "User-Agent": "sluice-python-client/1"}
        if self._token:
            hdrs["Authorization"] = "Bearer " + self._token
        hdrs.update(self._trace)
        if last_event_id is not None:
            hdrs["Last-Event-ID"] = last_event_id
        where = f"GET {self.base_url}{path}"
        got_event = False
        conn = self._connection(w.socket_timeout(self.timeout))
        try:
            try:
                conn.request("GET", self._prefix + path, headers=hdrs)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                raise SluiceError(f"{where}: no answer from Sluice at {self.base_url}: {e}") from e
            ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if resp.status != 200 or ctype != "text/event-stream":
                raw = resp.read(_MAX_RESPONSE + 1)
                if resp.status == 501 or (resp.status == 200 and ctype != "text/event-stream"):
                    raise _NoEventStream()
                doc = None
                try:
                    doc = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    pass
                raise _http_error(where, resp.status, resp.reason,
                                  doc if isinstance(doc, dict) else None, raw)
            event, data = "", []
            while True:
                if conn.sock is not None:
                    # The server sends a comment every 15 s: a longer silence is a dead stream.
                    conn.sock.settimeout(w.socket_timeout(self.timeout))
                try:
                    line = resp.readline(_MAX_RESPONSE + 1)
                except (OSError, http.client.HTTPException):
                    w.check_deadline()
                    return last_event_id, got_event  # dropped or stalled: reconnect
                if not line:
                    return last_event_id, got_event  # the stream ended before "done"
                if len(line) > _MAX_RESPONSE:
                    raise SluiceError(f"{where}: an event longer than {_MAX_RESPONSE} bytes")
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                if text == "":
                    if data and event != "error":  # "error": the server's watch failed
                        try:
                            job = json.loads("\n".join(data))
                        except ValueError as e:
                            raise SluiceError(f"{where}: an event is not JSON: {e}") from e
                        got_event = True
                        w.seen(job, done=(event == "done"))
                        if w.final is not None:
                            return last_event_id, got_event
                    elif event == "error":
                        return last_event_id, got_event
                    event, data = "", []
                    continue
                if text.startswith(":"):
                    continue  # a keep-alive comment
                field, _, value = text.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if field == "id":
                    last_event_id = value
                elif field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
        finally:
            conn.close()

    def list_jobs(self, state: Optional[str] = None, env: Optional[str] = None,
                  limit: Optional[int] = None, cursor: Optional[str] = None) -> JobPage:
        """One page of jobs, newest first (GET /v1/jobs); see the module docstring."""
        q = _query(state=state, env=env, limit=limit, cursor=cursor)
        if env is not None:
            _check_env(env)
        _, doc = self._request("GET", "/v1/jobs", q)
        return doc  # type: ignore[return-value]

    def iter_jobs(self, state: Optional[str] = None, env: Optional[str] = None,
                  page_size: int = 100) -> Iterator[Job]:
        """Every job matching the filters, newest first, a page at a time."""
        cursor = None
        while True:
            page = self.list_jobs(state=state, env=env, limit=page_size, cursor=cursor)
            yield from page.get("jobs") or []
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def rollback_job(self, job_id: str) -> Job:
        """Asks for the job's documents to be deleted (DELETE /v1/jobs/{id}, admin scope) and
        returns the job with its rollback requested; wait() follows it to rolled_back."""
        _, doc = self._request("DELETE", "/v1/jobs/" + _path_id(job_id))
        return doc  # type: ignore[return-value]

    def list_dead_letters(self, job: Optional[str] = None, subject: Optional[str] = None,
                          error_class: Optional[str] = None, since: Optional[Since] = None,
                          until: Optional[Since] = None, limit: Optional[int] = None,
                          cursor: Optional[str] = None) -> DeadLetterPage:
        """One page of dead letters, oldest first (GET /v1/dlq); see the module docstring."""
        q = _query(job=job, subject=subject, error_class=error_class, since=_time(since),
                   until=_time(until), limit=limit, cursor=cursor)
        _, doc = self._request("GET", "/v1/dlq", q)
        return doc  # type: ignore[return-value]

    def iter_dead_letters(self, job: Optional[str] = None, subject: Optional[str] = None,
                          error_class: Optional[str] = None, since: Optional[Since] = None,
                          until: Optional[Since] = None,
                          page_size: int = 100) -> Iterator[DeadLetter]:
        """Every dead letter matching the filters, oldest first, a page at a time."""
        cursor = None
        while True:
            page = self.list_dead_letters(job=job, subject=subject, error_class=error_class,
                                          since=since, until=until, limit=page_size,
                                          cursor=cursor)
            yield from page.get("entries") or []
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter:
        """One dead letter (GET /v1/dlq/{id}); SluiceError (404) when there is none."""
        _, doc = self._request("GET", "/v1/dlq/" + _path_id(dead_letter_id))
        return doc  # type: ignore[return-value]

    def delete_dead_letter(self, dead_letter_id: str) -> None:
        """Deletes one dead letter (DELETE /v1/dlq/{id}, admin scope); SluiceError (404) when
        there is none."""
        self._request("DELETE", "/v1/dlq/" + _path_id(dead_letter_id))

    def purge_dead_letters(self, job: Optional[str] = None, subject: Optional[str] = None,
                           error_class: Optional[str] = None, since: Optional[Since] = None,
                           until: Optional[Since] = None) -> int:
        """Deletes every dead letter matching the filters, at least one of which is required
        (DELETE /v1/dlq, admin scope); returns how many were deleted."""
        q = _query(job=job, subject=subject, error_class=error_class, since=_time(since),
                   until=_time(until))
        if not q:
            raise ValueError("purge_dead_letters needs at least one filter")
        _, doc = self._request("DELETE", "/v1/dlq", q)
        return int(doc.get("purged", 0))

    def replay_dead_letters(self, ids: Optional[Iterable[str]] = None,
                            job: Optional[str] = None, subject: Optional[str] = None,
                            error_class: Optional[str] = None, since: Optional[Since] = None,
                            until: Optional[Since] = None, dry_run: bool = False,
                            rate: Optional[float] = None, max_replays: Optional[int] = None,
                            limit: Optional[int] = None) -> ReplayResult:
        """Republishes dead letters to their original subjects (POST /v1/dlq/replay, admin
        scope): the given ids, or those the filters select (not both). With dry_run nothing
        changes and the answer says what would be replayed."""
        body: Dict[str, Any] = {"dry_run": bool(dry_run)}
        flt = _query(job=job, subject=subject, error_class=error_class, since=_time(since),
                     until=_time(until))
        id_list = None if ids is None else [str(i) for i in ids]
        if id_list is not None and flt:
            raise ValueError("give dead-letter ids or filters, not both")
        if not id_list and not flt:
            raise ValueError("give dead-letter ids, or select them with job, subject, "
                             "error_class, since or until")
        if id_list:
            body["ids"] = id_list
        else:
            body["filter"] = flt
        for k, v in (("rate", rate), ("max_replays", max_replays), ("limit", limit)):
            if v is not None:
                body[k] = v
        _, doc = self._request("POST", "/v1/dlq/replay", body=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"})
        return doc  # type: ignore[return-value]

    def load(self, path_or_chunks: Any, env: str = "dev", wait: bool = True,
             progress: Optional[Callable[[Dict[str, Any]], None]] = None,
             **kw: Any) -> Dict[str, Any]:
        """Submits a file or an iterable of chunks, then waits; see the module docstring."""
        submit_kw = {k: kw.pop(k) for k in ("force", "idempotency_key", "file_name", "traceparent",
                                            "tracestate") if k in kw}
        wait_kw = {k: kw.pop(k) for k in ("timeout", "poll_interval", "raise_on_errors")
                   if k in kw}
        if kw:
            raise TypeError(f"load() got unexpected keyword arguments: {', '.join(sorted(kw))}")
        if isinstance(path_or_chunks, (str, bytes, os.PathLike)):
            if isinstance(path_or_chunks, bytes):
                path_or_chunks = os.fsdecode(path_or_chunks)
            sub = self.submit_file(path_or_chunks, env=env, **submit_kw)
        else:
            sub = self.submit_chunks(path_or_chunks, env=env, **submit_kw)
        if not wait:
            return sub
        return self.wait(sub["job_id"], progress=progress, **wait_kw)


class _NoEventStream(Exception):
    """The server has no job event stream (an older or restricted one): wait() polls."""


class _Waiter:
    """What wait() has seen of one job: the deadline, the progress callback, the last job and
    the final one (once the job is settled)."""

    def __init__(self, job_id: str, timeout: Optional[float],
                 progress: Optional[Callable[[Job], None]]) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.progress = progress
        self.last_key: Optional[Tuple[Any, ...]] = None
        self.last: Optional[Dict[str, Any]] = None
        self.final: Optional[Job] = None

    def seen(self, job: Any, done: bool = False) -> None:
        """Records a job read or received; done: the server said it is settled."""
        if not isinstance(job, dict):
            raise SluiceError(f"job {self.job_id}: the answer is not a JSON object")
        self.last = job
        key = _progress_key(job)
        if self.progress is not None and key != self.last_key:
            self.progress(job)  # type: ignore[arg-type]
        self.last_key = key
        if done or _settled(job):
            self.final = job  # type: ignore[assignment]
        else:
            self.check_deadline()

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            state = self.last.get("state") if self.last else "unknown"
            raise TimeoutError(f"job {self.job_id} did not finish within {self.timeout}s "
                               f"(last state: {state})")

    def pause(self, want: float) -> float:
        """How long to sleep before the next attempt: want, cut at the deadline (raises
        TimeoutError once it has passed)."""
        self.check_deadline()
        if self.deadline is None:
            return want
        return max(0.0, min(want, self.deadline - time.monotonic()))

    def socket_timeout(self, most: float) -> float:
        """A socket timeout of at most most seconds that ends by the deadline."""
        if self.deadline is None:
            return most
        return max(0.01, min(most, self.deadline - time.monotonic()))


def _settled(job: Dict[str, Any]) -> bool:
    """The job is in a final state and no rollback of it is pending."""
    rb = job.get("rollback") or {}
    return job.get("state") in DONE_STATES and rb.get("state") != "requested"


def _path_id(ident: str) -> str:
    if not ident:
        raise ValueError("the id is empty")
    return urllib.parse.quote(ident, safe="")


def _time(t: Optional[Since]) -> Optional[str]:
    """An RFC 3339 time: a str as given, a datetime formatted (a naive one is taken as UTC)."""
    if t is None or isinstance(t, str):
        return t
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.isoformat()


def _query(**params: Any) -> Dict[str, str]:
    """The query parameters that are set, as strings."""
    return {k: str(v) for k, v in params.items() if v is not None and v != ""}


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def _trace_headers(traceparent: Optional[str], tracestate: Optional[str]) -> Dict[str, str]:
    """The W3C trace context headers for traceparent and tracestate (none when traceparent is
    None). Raises ValueError for a traceparent the server would ignore, and for a tracestate
    without a traceparent or with control characters."""
    if traceparent is None:
        if tracestate is not None:
            raise ValueError("tracestate needs a traceparent")
        return {}
    if (not isinstance(traceparent, str) or not _TRACEPARENT.fullmatch(traceparent)
            or traceparent.startswith("ff-") or traceparent[3:35] == "0" * 32
            or traceparent[36:52] == "0" * 16):
        raise ValueError(f"traceparent {traceparent!r} is not a W3C traceparent "
                         "(00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lower case, "
                         "ids not all zeros)")
    out = {"traceparent": traceparent}
    if tracestate is not None:
        if not isinstance(tracestate, str) or len(tracestate) > 512 or any(
                c < " " or c == "\x7f" for c in tracestate):
            raise ValueError("tracestate must be at most 512 printable characters")
        out["tracestate"] = tracestate
    return out


def _check_env(env: str) -> None:
    if env not in _ENVS:
        raise ValueError(f"env {env!r} is not one of dev, test, prod")


def _submit_query(env: str, file_name: str, force: bool) -> Dict[str, str]:
    q = {"env": env}
    if file_name:
        q["file"] = file_name
    if force:
        q["force"] = "true"
    return q


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _progress_key(job: Dict[str, Any]) -> Tuple[Any, ...]:
    return tuple(job.get(k) for k in ("state", "total", "published", "written", "rejected",
                                      "dead_lettered", "sealed"))


def _http_error(where: str, status: int, reason: str, problem: Optional[Dict[str, Any]],
                raw: bytes) -> SluiceError:
    problem = problem or {}
    detail = problem.get("detail") or problem.get("title")
    if not detail:
        text = raw[:200].decode("utf-8", "replace").strip()
        detail = text or reason or "no details"
    if status == 401:
        msg = (f"{where}: 401 Unauthorized: token missing or lacks scope: no valid bearer "
               f"token was sent (set SLUICE_TOKEN or pass token=): {detail}")
    elif status == 403:
        msg = (f"{where}: 403 Forbidden: token missing or lacks scope: the token is valid but "
               f"lacks the scope this call needs: {detail}")
    else:
        msg = f"{where}: {status} {problem.get('title') or reason}: {detail}"
    if problem.get("request_id"):
        msg += f" (request id {problem['request_id']})"
    return SluiceError(msg, status, problem)


# -- command line ------------------------------------------------------------------------------


def _progress_line(path: str) -> Callable[[Dict[str, Any]], None]:
    def show(job: Dict[str, Any]) -> None:
        total = job.get("total") or 0
        done = (job.get("written") or 0) + (job.get("rejected") or 0) + \
            (job.get("dead_lettered") or 0)
        pct = f"{100 * done // total:3d}%" if total else "  ?%"
        line = (f"{path}: {job.get('job_id')} {job.get('state')} {pct} {done}/{total} "
                f"({job.get('written', 0)} written, {job.get('rejected', 0)} rejected, "
                f"{job.get('dead_lettered', 0)} dead-lettered)")
        sys.stderr.write("\r\x1b[K" + line)
        sys.stderr.flush()
    return show


def _summary(path: str, job: Dict[str, Any], seconds: float) -> str:
    return (f"{path}: job {job.get('job_id')} {job.get('state')} \u2014 {job.get('total', 0)} "
            f"total, {job.get('written', 0)} written, {job.get('rejected', 0)} rejected, "
            f"{job.get('dead_lettered', 0)} dead-lettered ({seconds:.1f}s)")


def main(argv: Optional[list] = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="sluice-client",
                                     description="Submit chunk files to a Sluice server.")
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="submit chunk files as jobs and wait for them")
    load.add_argument("files", nargs="+", metavar="FILE")
    load.add_argument("--env", default="dev", choices=_ENVS)
    load.add_argument("--url", "--api-url", dest="url",
                      default=os.environ.get("SLUICE_API_URL") or _DEFAULT_URL,
                      help="Sluice API base URL (SLUICE_API_URL; default %(default)s)")
    load.add_argument("--no-wait", action="store_true",
                      help="return once the job is published, without waiting for it")
    load.add_argument("--force", action="store_true", help="load a file submitted before again")
    load.add_argument("--json", action="store_true", help="print each result as JSON")
    load.add_argument("--timeout", type=float, default=None,
                      help="give up waiting for a job after this many seconds")
    args = parser.parse_args(argv)

    try:
        client = Client(args.url)
    except ValueError as e:
        print(f"sluice_client: {e}", file=sys.stderr)
        return 2
    tty = sys.stderr.isatty() and not args.json
    status = 0
    for path in args.files:
        start = time.monotonic()
        try:
            sub_result = client.submit_file(path, env=args.env, force=args.force)
            job = sub_result
            if not args.no_wait:
                job = client.wait(sub_result["job_id"], timeout=args.timeout,
                                  progress=_progress_line(path) if tty else None,
                                  raise_on_errors=False)
        except (SluiceError, OSError, ValueError) as e:
            if tty:
                sys.stderr.write("\r\x1b[K")
            print(f"{path}: {e}", file=sys.stderr)
            status = 1
            continue
        if tty and not args.no_wait:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        if args.json:
            print(json.dumps(job, indent=2, ensure_ascii=False))
        elif args.no_wait:
            state = "existing" if job.get("existing") else "submitted"
            print(f"{path}: job {job.get('job_id')} {state} \u2014 {job.get('total', 0)} total, "
                  f"{job.get('published', 0)} published, {job.get('rejected', 0)} rejected")
        else:
            print(_summary(path, job, time.monotonic() - start))
        if _failed(job) and status == 0:
            status = 3
    return status


if __name__ == "__main__":
    sys.exit(main())
