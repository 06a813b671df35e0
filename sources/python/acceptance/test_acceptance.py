"""FR-PERF-405 acceptance suite: the tests the requirement's testing strategy names, run against
a REAL ``sluice serve``.

One class per name the requirement lists (TestAsyncAstraService, TestAsyncEndpoints,
TestAsyncResourceManagement, TestAsyncPerformance), one method per listed test, each asserting
the outcome it names on the running server: documents stored and read back, counts, a rollback
that deletes, pool gauges and process RSS taken from ``/metrics``. docs/acceptance.md maps
every AC-405 checkbox to these tests (and to the Go tests that check the rest).

The suite starts one ``sluice serve`` for the whole module (the binary named by SLUICE_BIN),
with a tokens file (an admin token and a read-only one) and a temporary data directory:

- SLUICE_ACCEPTANCE_STORE=embedded (default): the embedded stores (SQLite).
- SLUICE_ACCEPTANCE_STORE=astra: chunks and requirements in AstraDB collections served by the
  strict Data API double, run as a process by the binary named by DATAAPI_DOUBLE_BIN
  (``go build ./cmd/dataapi-double``); the suite also counts documents through the Data API
  itself, and fails if the double recorded a protocol violation.
- SLUICE_ACCEPTANCE_FULL=1: TestAsyncPerformance with 1000 concurrent users (default 200).

The seed's own routes (``POST /requirements/``, ``GET /requirements/``, ``/ws/requirements``)
are part of the server: a build without them (the route answers 404) FAILS those tests, naming
the route. The WebSocket test needs the ``websockets`` package (Debian's
python3-websockets); without it that test fails, never skips.

Standard library only otherwise. Run: ``.ci/acceptance-test``, or
``SLUICE_BIN=/path/to/sluice python3 sources/python/acceptance/test_acceptance.py``.
"""

import asyncio
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
# The existing Python client tests already know how to start a real `sluice serve`.
from test_sluice_client import SluiceServer  # noqa: E402

REPO = HERE.parent.parent.parent
CHUNKS = REPO / "testdata" / "chunks"
PASS_A = CHUNKS / "passA_chunks.json"
NASTY = CHUNKS / "nasty_job_1757498642_0a06fa1bc2da_pass_a_chunks.json"
NASTY_REJECTED = [13, 14, 21, 27, 34, 37]

STORE = os.environ.get("SLUICE_ACCEPTANCE_STORE", "embedded")
FULL = os.environ.get("SLUICE_ACCEPTANCE_FULL") == "1"
USERS = 1000 if FULL else 200

ADMIN_TOKEN = "acceptance-admin-token-0123456789"
READ_TOKEN = "acceptance-read-token-0123456789"
ENV = "dev"
JOB_TIMEOUT = 120.0
KEYSPACE = "default_keyspace"
MIB = 1024 * 1024

# Bounds for memory under load: a `sluice serve` idles at ~50 MiB RSS.
RSS_GROWTH_LIMIT = 200 * MIB
RSS_CEILING = 600 * MIB
SPEEDUP_GOAL = 4.0  # "300%+ improvement": Sluice at least 4x the seed's sequential loop

SERVER = None
DOUBLE = None


class DataAPIDouble:
    """The Data API double as a process (cmd/dataapi-double)."""

    def __init__(self):
        binary = os.environ.get("DATAAPI_DOUBLE_BIN")
        if not binary:
            raise RuntimeError("SLUICE_ACCEPTANCE_STORE=astra needs DATAAPI_DOUBLE_BIN "
                               "(go build -o /tmp/dataapi-double ./cmd/dataapi-double)")
        self.proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("dataapi-double exited: " + self.proc.stderr.read().decode())
        info = json.loads(line)
        self.url, self.token = info["url"], info["token"]

    def command(self, collection, body):
        req = urllib.request.Request(f"{self.url}/api/json/v1/{KEYSPACE}/{collection}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Token": self.token,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            out = json.load(r)
        if out.get("errors"):
            raise AssertionError(f"Data API errors: {out['errors']}")
        return out

    def chunk_ids(self, collection, flt):
        """The distinct chunk_id of the documents matching flt (a chunk too large for one
        document is stored as several parts)."""
        ids, page = set(), None
        while True:
            opts = {"filter": flt, "projection": {"chunk_id": 1}}
            if page:
                opts["options"] = {"pageState": page}
            data = self.command(collection, {"find": opts})["data"]
            ids.update(d["chunk_id"] for d in data["documents"])
            page = data.get("nextPageState")
            if not page:
                return ids

    def stop(self):
        """Stops the double; returns (exit status, violations it printed)."""
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        err = self.proc.stderr.read().decode()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode, err


def setUpModule():
    global SERVER, DOUBLE
    env = {"SLUICE_API_RATE_LIMITS": "uploads=off,feeds=off,graph=off",
           "SLUICE_API_MAX_CONNS": str(USERS * 2 + 256)}
    if STORE == "astra":
        DOUBLE = DataAPIDouble()
        env.update(ASTRA_DB_API_ENDPOINT=DOUBLE.url, ASTRA_DB_APPLICATION_TOKEN=DOUBLE.token)
    elif STORE != "embedded":
        raise RuntimeError(f"SLUICE_ACCEPTANCE_STORE={STORE!r}: want embedded or astra")
    try:
        SERVER = SluiceServer(tokens=[
            {"name": "admin", "token": ADMIN_TOKEN, "scopes": ["read", "write", "admin"]},
            {"name": "reader", "token": READ_TOKEN, "scopes": ["read"]},
        ], env=env).start()
    except Exception:
        if DOUBLE is not None:
            DOUBLE.stop()
        raise


def tearDownModule():
    problems = []
    if SERVER is not None:
        status = SERVER.stop()
        if status != 0:
            problems.append(f"sluice serve exited with {status} after SIGTERM")
    if DOUBLE is not None:
        status, err = DOUBLE.stop()
        if status != 0:
            problems.append(f"Data API double exited with {status}: {err}")
    if problems:
        raise AssertionError("; ".join(problems))


def report(name, value):
    """Prints a measured figure (docs/acceptance.md quotes them)."""
    print(f"\n  acceptance[{STORE}]: {name} = {value}", file=sys.stderr, flush=True)


# --- HTTP -------------------------------------------------------------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def request(method, path, body=None, token=ADMIN_TOKEN, headers=None, timeout=30):
    """One request; any status comes back as a Response (no exception for 4xx/5xx)."""
    req = urllib.request.Request(SERVER.base_url + path, data=body, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        with e:
            return Response(e.code, e.headers, e.read())


def get_json(path, token=ADMIN_TOKEN, want=200):
    r = request("GET", path, token=token)
    if r.status != want:
        raise AssertionError(f"GET {path}: {r.status} {r.body[:300]!r}, want {want}")
    return r.json()


def metrics():
    """The /metrics page as {'name{labels}': value}."""
    r = request("GET", "/metrics")
    assert r.status == 200, r.status
    out = {}
    for line in r.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def rss():
    return metrics()["process_resident_memory_bytes"]


def chunk_file(prefix, n):
    """A chunk file of n chunks (passA's records, repeated) under ids unique to prefix."""
    base = json.loads(PASS_A.read_text("utf-8"))
    chunks = []
    for i in range(n):
        c = dict(base["chunks"][i % len(base["chunks"])])
        c["id"] = f"{prefix}_{i:05d}"
        c["content"] = f"{c['content']} [{prefix} {i}]"
        chunks.append(c)
    return {"job_id": f"job_{prefix}", "phase": "pass_a", "chunks": chunks}


def submit(doc, timeout=JOB_TIMEOUT):
    """POST /v1/jobs; a 503 or 429 with Retry-After (admission: the server is publishing as
    many jobs as it queues) is waited out and sent again, as sluice_client does."""
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    deadline = time.monotonic() + timeout
    while True:
        r = request("POST", f"/v1/jobs?env={ENV}", body=body,
                    headers={"Content-Type": "application/json"})
        if r.status in (200, 202):
            return r.json()
        retry = r.headers.get("Retry-After")
        if r.status not in (429, 503) or retry is None or time.monotonic() > deadline:
            raise AssertionError(f"POST /v1/jobs: {r.status} {r.body[:500]!r}")
        time.sleep(min(float(retry), 1.0))


def wait_job(job_id, states=("completed", "completed_with_errors"), timeout=JOB_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        job = get_json(f"/v1/jobs/{job_id}")
        if job["state"] in states:
            return job
        if job["state"] in ("failed", "rolled_back", "superseded"):
            raise AssertionError(f"job {job_id} ended {job['state']}: {job}")
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not in {states} after {timeout}s: {job}")
        time.sleep(0.05)  # polling another process


def wait_for(what, cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)  # polling another process


def parallel(fn, args, workers):
    """fn over args on `workers` threads; the first `workers` calls start together (the
    rest as threads free up). Returns the results in order."""
    args = list(args)
    barrier = threading.Barrier(min(workers, len(args)))

    def run(ia):
        i, a = ia
        if i < barrier.parties:
            try:
                barrier.wait(30)
            except threading.BrokenBarrierError:
                pass
        return fn(a)

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, enumerate(args)))


def stored_count(job_id, ids):
    """How many of the distinct ids the server returns; on AstraDB the same count is taken
    from the collection through the Data API itself (documents of the job) and must agree."""
    ids = set(ids)
    readable = sum(1 for i in ids
                   if request("GET", f"/v1/chunks/{i}?env={ENV}").status == 200)
    if DOUBLE is not None:
        ids = sorted(ids)
        in_astra = 0
        for i in range(0, len(ids), 100):  # $in takes at most 100 values
            in_astra += len(DOUBLE.chunk_ids(f"ttrpg_chunks_{ENV}", {
                "sluice_job": job_id, "chunk_id": {"$in": ids[i:i + 100]}}))
        if in_astra != readable:
            raise AssertionError(f"job {job_id}: {readable} readable, {in_astra} in AstraDB")
    return readable


# --- the seed's routes ------------------------------------------------------------------------

def require_seed_routes(test):
    """Fails test when the server has no /requirements/ routes (the listing answers 404)."""
    r = request("GET", "/requirements/?limit=1&offset=0")
    if r.status == 404:
        test.fail("GET /requirements/ answers 404: the seed's routes are missing from this build")


def list_all_requirements():
    """Every requirement GET /requirements/ lists, page by page, and the X-Total-Count."""
    out, offset, total = [], 0, None
    while True:
        r = request("GET", f"/requirements/?limit=50&offset={offset}")
        if r.status != 200:
            raise AssertionError(f"GET /requirements/: {r.status} {r.body[:300]!r}")
        page = r.json()
        total = int(r.headers["X-Total-Count"])
        out += page
        offset += len(page)
        if not page or offset >= total:
            return out, total


def new_requirement(title):
    """A RequirementCreate body: the Python submission body (docs/operations.md, "The seed's
    requirement routes")."""
    return {"title": title, "version": "1.0.0", "description": f"Acceptance requirements {title}",
            "requirements": {"functional": [{"id": "AC-001", "title": "Roll",
                                             "description": "Roll 3d6", "priority": "high"}],
                             "non_functional": []},
            "stakeholders": [{"name": "GM", "role": "Owner", "involvement": "primary"}],
            "author": "acceptance"}


def create_requirement(title):
    r = request("POST", "/requirements/", body=json.dumps(new_requirement(title)).encode(),
                headers={"Content-Type": "application/json"})
    return r


def ws_connect(token):
    """Opens /ws/requirements (a coroutine), with token in the Authorization header."""
    import websockets  # Debian: python3-websockets (10.x there; newer ones work too)

    url = SERVER.base_url.replace("http://", "ws://") + "/ws/requirements"
    headers = {"Authorization": "Bearer " + token} if token else {}
    major = int(websockets.__version__.split(".")[0])
    kw = "additional_headers" if major >= 14 else "extra_headers"
    return websockets.connect(url, open_timeout=10, **{kw: headers})


def ws_refusal(e):
    """The HTTP status of a refused WebSocket handshake (any websockets version), or None."""
    resp = getattr(e, "response", None)
    return getattr(resp, "status_code", None) or getattr(e, "status_code", None)


def ws_handshake_status(token):
    """101 if /ws/requirements accepts token (None: no token), else the refusal's status."""
    import websockets

    async def go():
        try:
            ws = await ws_connect(token)
        except websockets.exceptions.InvalidHandshake as e:
            return ws_refusal(e)
        await ws.close()
        return 101

    return asyncio.run(go())


def ws_session(test, steps, token=READ_TOKEN):
    """One /ws/requirements socket: each step is a message to send (a str, or a dict sent as
    JSON), answered by one message, or a callable run before the next step. Returns the answers
    (decoded). Fails test when the handshake is refused (404: the route is missing)."""
    import websockets

    async def go():
        try:
            ws = await ws_connect(token)
        except websockets.exceptions.InvalidHandshake as e:
            return None, ws_refusal(e)
        answers = []
        try:
            for step in steps:
                if callable(step):
                    await asyncio.to_thread(step)
                    continue
                await ws.send(step if isinstance(step, str) else json.dumps(step))
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        finally:
            await ws.close()
        return answers, 101

    answers, status = asyncio.run(go())
    if status == 404:
        test.fail("/ws/requirements answers 404: the seed's routes are missing from this build")
    if answers is None:
        test.fail(f"/ws/requirements refused the handshake: {status}")
    return answers


# --- the tests --------------------------------------------------------------------------------

class TestAsyncAstraService(unittest.TestCase):
    """The store behind the API: connections, inserts, batches, reads, pool, errors."""

    def test_async_connection_establishment(self):
        ready = get_json("/readyz")
        self.assertEqual(ready["status"], "ready")
        self.assertEqual(ready["checks"].get("store"), "ok", ready)
        self.assertEqual(request("GET", "/healthz").status, 200)
        if DOUBLE is not None:
            # the server created its collection in AstraDB on connecting
            names = DOUBLE.command("", {"findCollections": {}})["status"]["collections"]
            self.assertIn(f"ttrpg_chunks_{ENV}", names)

    def test_async_chunk_insertion(self):
        doc = chunk_file("acc_insert", 20)
        sub = submit(doc)
        self.assertEqual((sub["total"], sub["published"], sub["rejected"]), (20, 20, 0))
        job = wait_job(sub["job_id"])
        self.assertEqual((job["state"], job["written"], job["dead_lettered"]),
                         ("completed", 20, 0))
        ids = [c["id"] for c in doc["chunks"]]
        self.assertEqual(stored_count(sub["job_id"], ids), 20)
        got = get_json(f"/v1/chunks/{ids[7]}?env={ENV}")
        self.assertEqual(got["content"], doc["chunks"][7]["content"])

    def test_batch_insert_with_concurrency(self):
        files = [chunk_file(f"acc_batch{j}", 150) for j in range(8)]
        subs = parallel(submit, files, workers=8)
        jobs = parallel(lambda s: wait_job(s["job_id"]), subs, workers=8)
        for s, j in zip(subs, jobs):
            self.assertEqual((j["state"], j["written"], j["rejected"], j["dead_lettered"]),
                             ("completed", 150, 0, 0), j)
        for f, s in zip(files, subs):
            ids = [c["id"] for c in f["chunks"]]
            self.assertEqual(stored_count(s["job_id"], ids), 150, s["job_id"])

    def test_async_query_operations(self):
        doc = chunk_file("acc_query", 40)
        sub = submit(doc)
        wait_job(sub["job_id"])
        got = parallel(lambda c: get_json(f"/v1/chunks/{c['id']}?env={ENV}"),
                       doc["chunks"], workers=20)
        for want, have in zip(doc["chunks"], got):
            self.assertEqual((have["chunk_id"], have["content"]), (want["id"], want["content"]))
        self.assertEqual(request("GET", f"/v1/chunks/acc_query_missing?env={ENV}").status, 404)
        listed = get_json(f"/v1/jobs?env={ENV}&limit=500")
        listed = listed.get("jobs", listed) if isinstance(listed, dict) else listed
        self.assertIn(sub["job_id"], [j["job_id"] for j in listed])

    def test_connection_pool_management(self):
        m = metrics()
        mx = m["sluice_graph_pool_conns_max"]
        self.assertGreater(mx, 0)
        self.assertLessEqual(m["sluice_graph_pool_conns_open"], mx)
        self.assertLessEqual(m["sluice_graph_pool_conns_acquired"],
                             m["sluice_graph_pool_conns_open"])
        report("graph pool conns_max", int(mx))
        if DOUBLE is not None:
            for client in ("documents", "requirements"):
                key = f'sluice_astra_requests_max{{client="{client}"}}'
                self.assertEqual(m.get(key), 20, f"{key} (the pool of 20) in /metrics")
                self.assertLessEqual(m[f'sluice_astra_requests_in_flight{{client="{client}"}}'], 20)

    def test_error_handling_in_async_operations(self):
        sub = submit(NASTY.read_bytes())
        self.assertEqual(sub["rejected"], len(NASTY_REJECTED))
        self.assertEqual(sorted(r["index"] for r in sub["rejections"]), NASTY_REJECTED)
        for r in sub["rejections"]:
            self.assertTrue(r["reason"], r)
        job = wait_job(sub["job_id"])
        good = sub["total"] - sub["rejected"]
        self.assertEqual((job["written"], job["dead_lettered"]), (good, 0), job)
        items = json.loads(NASTY.read_text("utf-8"))["chunks"]
        ids = {c["id"] for i, c in enumerate(items) if i not in NASTY_REJECTED}
        # every good record stored (the file repeats one id: 36 records, 35 documents)
        self.assertEqual(stored_count(sub["job_id"], ids), len(ids))


class TestAsyncEndpoints(unittest.TestCase):
    """The seed's own routes: POST /requirements/, GET /requirements/, /ws/requirements."""

    def test_async_requirement_creation(self):
        require_seed_routes(self)
        r = create_requirement("acc-create")
        self.assertIn(r.status, (200, 201), r.body)
        got = r.json()
        self.assertTrue(got.get("id"), got)
        self.assertEqual(got.get("title"), "acc-create")

    def test_async_requirement_listing(self):
        require_seed_routes(self)
        created = create_requirement("acc-list").json()
        r = request("GET", "/requirements/?limit=50&offset=0")
        self.assertEqual(r.status, 200)
        items = r.json()
        self.assertIsInstance(items, list)
        self.assertLessEqual(len(items), 50)
        total = int(r.headers["X-Total-Count"])
        self.assertGreaterEqual(total, len(items))
        everything, total = list_all_requirements()
        self.assertEqual(len(everything), total)
        self.assertIn(created["id"], [i["id"] for i in everything])
        page2 = request("GET", "/requirements/?limit=1&offset=1").json()
        self.assertLessEqual(len(page2), 1)

    def test_concurrent_endpoint_requests(self):
        require_seed_routes(self)
        rs = parallel(lambda i: create_requirement(f"acc-conc-{i}"), range(50), workers=50)
        self.assertEqual([r.status for r in rs if r.status not in (200, 201)], [])
        ids = {r.json()["id"] for r in rs}
        self.assertEqual(len(ids), 50)
        lists = parallel(lambda _: request("GET", "/requirements/?limit=50&offset=0"),
                         range(20), workers=20)
        self.assertEqual([r.status for r in lists], [200] * 20)
        everything, _ = list_all_requirements()
        self.assertLessEqual(ids, {i["id"] for i in everything})

    def test_async_websocket_operations(self):
        # A client written from the seed's snippet: send get_requirements, read
        # requirements_data, as long as the socket is open.
        require_seed_routes(self)
        created = create_requirement("acc-ws")
        self.assertIn(created.status, (200, 201), created.body)
        msgs = ws_session(self, [{"type": "get_requirements", "filter": {}},
                                 {"type": "get_requirements", "filter": {"title": "acc-ws"}},
                                 "not json"])
        for msg in msgs[:2]:
            self.assertEqual(msg["type"], "requirements_data", msg)
            self.assertIsInstance(msg["data"], list)
        self.assertIn(created.json()["id"], [d.get("id") for d in msgs[0]["data"]])
        self.assertEqual([(d["id"], d["title"]) for d in msgs[1]["data"]],
                         [(created.json()["id"], "acc-ws")], "filtered by title")
        self.assertEqual(msgs[2]["type"], "error", msgs[2])
        self.assertTrue(msgs[2].get("detail"), msgs[2])
        self.assertIn(ws_handshake_status(None), (401, 403),
                      "a socket without a token must be refused")


class TestAsyncResourceManagement(unittest.TestCase):
    """Cleanup after a failure, rollback, memory under load, pool health."""

    def test_connection_cleanup_on_exception(self):
        spool = Path(SERVER.dir) / "data" / "spool"
        # A client that declares 8 MiB, sends 2 MiB (past the 1 MiB an upload may hold in
        # memory, so the server spools it to disk) and drops its connection.
        host, port = SERVER.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall((f"POST /v1/jobs?env={ENV} HTTP/1.1\r\nHost: {host}\r\n"
                       f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
                       "Content-Type: application/json\r\n"
                       f"Content-Length: {8 * MIB}\r\n\r\n").encode())
            s.sendall(b'{"chunks": [' + b" " * (2 * MIB))
            wait_for("the upload spooled to disk",
                     lambda: spool.exists() and any(spool.iterdir()), timeout=10)
        wait_for("spool empty after a dropped upload",
                 lambda: not spool.exists() or not any(spool.iterdir()))
        # Only the /metrics request itself is in flight afterwards.
        wait_for("no HTTP request in flight",
                 lambda: metrics()["sluice_http_requests_in_flight"] <= 1)
        self.assertEqual(get_json("/readyz")["status"], "ready")
        # and the server still loads
        doc = chunk_file("acc_after_drop", 5)
        self.assertEqual(wait_job(submit(doc)["job_id"])["written"], 5)

    def test_transaction_rollback(self):
        doc = chunk_file("acc_rollback", 30)
        sub = submit(doc)
        wait_job(sub["job_id"])
        ids = [c["id"] for c in doc["chunks"]]
        self.assertEqual(stored_count(sub["job_id"], ids), 30)
        # rollback needs the admin scope
        self.assertEqual(request("DELETE", f"/v1/jobs/{sub['job_id']}", token=READ_TOKEN).status,
                         403)
        r = request("DELETE", f"/v1/jobs/{sub['job_id']}")
        self.assertIn(r.status, (200, 202), r.body)
        job = wait_job(sub["job_id"], states=("rolled_back",))
        self.assertEqual((job["rollback"]["state"], job["rollback"]["deleted"]), ("done", 30), job)
        self.assertEqual(stored_count(sub["job_id"], ids), 0)

    def test_memory_usage_under_load(self):
        before = rss()
        doc = chunk_file("acc_mem", 20)
        wait_job(submit(doc)["job_id"])
        paths = [f"/v1/chunks/{doc['chunks'][i % 20]['id']}?env={ENV}" for i in range(USERS * 3)]
        statuses = parallel(lambda p: request("GET", p).status, paths, workers=USERS)
        self.assertEqual(set(statuses), {200})
        after = rss()
        report("RSS before/after load (MiB)", f"{before / MIB:.0f} / {after / MIB:.0f}")
        self.assertLess(after - before, RSS_GROWTH_LIMIT)
        self.assertLess(after, RSS_CEILING)

    def test_connection_pool_health(self):
        ready = get_json("/readyz", token=READ_TOKEN)
        self.assertEqual(ready["status"], "ready")
        self.assertEqual({k: v for k, v in ready["checks"].items() if v != "ok"}, {}, ready)
        for check in ("store", "graph", "nats"):
            self.assertIn(check, ready["checks"])
        statuses = parallel(lambda _: request("GET", "/v1/graph/stats").status, range(60),
                            workers=60)
        self.assertEqual(set(statuses), {200})
        wait_for("graph pool idle again",
                 lambda: metrics()["sluice_graph_pool_conns_acquired"] == 0)


class TestAsyncPerformance(unittest.TestCase):
    """Many concurrent users, throughput, pool use, memory, the seed's loop as the baseline."""

    def user(self, i):
        """One user: reads a chunk and lists jobs; returns (statuses, seconds)."""
        t0 = time.monotonic()
        a = request("GET", f"/v1/chunks/acc_perf_{i % 50:05d}?env={ENV}", timeout=60).status
        b = request("GET", f"/v1/jobs?env={ENV}&limit=5", timeout=60).status
        return (a, b), time.monotonic() - t0

    @classmethod
    def setUpClass(cls):
        wait_job(submit(chunk_file("acc_perf", 50))["job_id"])

    def test_concurrent_request_handling_1000_users(self):
        t0 = time.monotonic()
        res = parallel(self.user, range(USERS), workers=USERS)
        took = time.monotonic() - t0
        bad = [s for s, _ in res if s != (200, 200)]
        self.assertEqual(bad, [], f"{len(bad)} of {USERS} users got errors")
        lat = sorted(t for _, t in res)
        report(f"{USERS} concurrent users", f"{took:.2f}s, p50 {lat[len(lat) // 2] * 1000:.0f} ms, "
               f"p99 {lat[int(len(lat) * 0.99)] * 1000:.0f} ms")

    def test_database_operation_throughput(self):
        n = 2000
        doc = chunk_file("acc_throughput", n)
        t0 = time.monotonic()
        sub = submit(doc)
        job = wait_job(sub["job_id"])
        took = time.monotonic() - t0
        self.assertEqual(job["written"], n)
        rate = n / took
        report("load throughput (docs/s, upload to completed)", f"{rate:.0f}")
        self.assertGreater(rate, 200)  # the seed's loop writes ~48 docs/s against a 20 ms store
        ids = [c["id"] for c in doc["chunks"][::100]]
        self.assertEqual(stored_count(sub["job_id"], ids), len(ids))

    def test_connection_pool_efficiency(self):
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                m = metrics()
                samples.append((m["sluice_graph_pool_conns_open"],
                                m["sluice_graph_pool_conns_max"]))
                stop.wait(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            statuses = parallel(lambda _: request("GET", "/v1/graph/stats").status,
                                range(USERS), workers=min(USERS, 100))
        finally:
            stop.set()
            sampler.join()
        self.assertEqual(set(statuses), {200})
        self.assertTrue(samples)
        self.assertEqual([s for s in samples if s[0] > s[1]], [], "pool above its max")
        report("graph pool peak open / max", f"{max(s[0] for s in samples):.0f} / "
               f"{samples[0][1]:.0f} over {USERS} concurrent reads")
        wait_for("graph pool idle again",
                 lambda: metrics()["sluice_graph_pool_conns_acquired"] == 0)

    def test_memory_usage_scaling(self):
        small = max(USERS // 10, 10)
        parallel(self.user, range(small), workers=small)
        at_small = rss()
        parallel(self.user, range(USERS), workers=USERS)
        at_full = rss()
        per_user = (at_full - at_small) / (USERS - small)
        report(f"RSS at {small} / {USERS} users (MiB)",
               f"{at_small / MIB:.0f} / {at_full / MIB:.0f} ({per_user / 1024:.1f} KiB/user)")
        self.assertLess(at_full - at_small, RSS_GROWTH_LIMIT)
        self.assertLess(per_user, 200 * 1024)

    def test_response_time_improvement(self):
        # The seed's synchronous loader (one findOneAndReplace per chunk, in sequence) against
        # Sluice end to end, on the same Data API double: `sluice bench astra` runs both.
        out = subprocess.run([os.environ["SLUICE_BIN"], "bench", "astra", "--modes", "seed,sluice",
                              "--chunks", "200", "--runs", "1", "--json"],
                             capture_output=True, text=True, timeout=120, check=True)
        res = json.loads(out.stdout[out.stdout.index("{\n"):])
        modes = {m["mode"]: m for m in res["modes"]}
        for m in modes.values():
            self.assertEqual(m["stored"], 200, m)
        ratio = res["sluice_vs_seed"]
        report("bench astra 200 chunks docs/s seed / sluice (ratio)",
               f"{modes['seed']['docs_per_sec']:.1f} / {modes['sluice']['docs_per_sec']:.0f} "
               f"({ratio:.1f}x)")
        self.assertGreaterEqual(ratio, SPEEDUP_GOAL)


class TestAsyncIntegration(unittest.TestCase):
    """The requirement's integration tests: whole workflows through the API."""

    def test_end_to_end_async_workflow(self):
        # upload → completed → read back → roll back → gone → load again → back
        doc = chunk_file("acc_e2e", 25)
        ids = [c["id"] for c in doc["chunks"]]
        sub = submit(doc)
        self.assertEqual(wait_job(sub["job_id"])["written"], 25)
        self.assertEqual(stored_count(sub["job_id"], ids), 25)
        self.assertIn(request("DELETE", f"/v1/jobs/{sub['job_id']}").status, (200, 202))
        wait_job(sub["job_id"], states=("rolled_back",))
        self.assertEqual(stored_count(sub["job_id"], ids), 0)
        again = submit(doc)  # a rolled-back job's file loads again on a plain resubmit
        self.assertEqual(again["job_id"], sub["job_id"])
        self.assertEqual(wait_job(again["job_id"])["written"], 25)
        self.assertEqual(stored_count(again["job_id"], ids), 25)

    def test_websocket_with_async_database(self):
        # One socket open while requirements are created concurrently: each request on it sees
        # the store as it is then.
        require_seed_routes(self)
        titles = [f"acc-wsdb-{i}" for i in range(10)]

        def create_all():
            rs = parallel(create_requirement, titles, workers=10)
            self.assertEqual([r.status for r in rs if r.status not in (200, 201)], [])

        asks = [{"type": "get_requirements", "filter": {"title": t}} for t in titles]
        answers = ws_session(self, asks + [create_all] + asks)
        # the seed's client reads msg["data"]: present, [] when nothing matches
        self.assertEqual([a.get("data") for a in answers[:10]], [[]] * 10, "none before")
        for t, a in zip(titles, answers[10:]):
            self.assertEqual(a["type"], "requirements_data", a)
            self.assertEqual([d["title"] for d in a["data"]], [t])

    def test_batch_processing_reliability(self):
        # good and hostile files loaded at once: every good record stored, every bad one
        # rejected with its reason, nothing dead-lettered
        files = [chunk_file(f"acc_rel{j}", 120) for j in range(4)]
        bad = chunk_file("acc_rel_bad", 30)
        for i in (3, 17):
            bad["chunks"][i]["content"] = ""  # refused: empty content
        subs = parallel(submit, files + [bad], workers=5)
        jobs = parallel(lambda x: wait_job(x["job_id"]), subs, workers=5)
        for f, sub, job in zip(files + [bad], subs, jobs):
            n = len(f["chunks"])
            self.assertEqual((job["written"] + job["rejected"], job["dead_lettered"]), (n, 0), job)
            good = [c["id"] for c in f["chunks"] if c["content"]]
            self.assertEqual(stored_count(sub["job_id"], good), len(good))
        self.assertEqual(sorted(r["index"] for r in subs[-1]["rejections"]), [3, 17])

    def test_concurrent_user_scenarios(self):
        # readers, loaders, requirement authors and graph readers at once
        doc = chunk_file("acc_users", 20)
        wait_job(submit(doc)["job_id"])

        def scenario(i):
            kind = i % 4
            if kind == 0:
                return request("GET", f"/v1/chunks/acc_users_{i % 20:05d}?env={ENV}").status
            if kind == 1:
                job = wait_job(submit(chunk_file(f"acc_users_load{i}", 10))["job_id"])
                return 200 if job["written"] == 10 else job["written"]
            if kind == 2:
                return 200 if create_requirement(f"acc-user-{i}").status in (200, 201) else 0
            return request("GET", "/v1/graph/stats").status

        n = min(USERS, 200)
        statuses = parallel(scenario, range(n), workers=n)
        self.assertEqual([s for s in statuses if s != 200], [])
        self.assertEqual(get_json("/readyz")["status"], "ready")


def main() -> int:
    """Runs every test; prints unittest's summary, each skip's reason, then
    "N passed, M skipped, F failed". Any failure, error, skip or failing set-up/tear-down
    fails the run: every test must run and pass."""
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    total = suite.countTestCases()
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    for test, reason in result.skipped:
        print(f"skipped {test.id()}: {reason}")
    bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    not_run = total - result.testsRun
    passed = result.testsRun - len(result.skipped) - len(result.failures) - len(
        [t for t, _ in result.errors if isinstance(t, unittest.TestCase)])
    print(f"[{STORE}] {passed} passed, {len(result.skipped)} skipped, {bad + not_run} failed")
    return 0 if bad == 0 and not_run == 0 and not result.skipped else 1


if __name__ == "__main__":
    sys.exit(main())
