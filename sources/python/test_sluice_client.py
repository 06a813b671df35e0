"""Tests of sluice_client.

Most tests run against a REAL ``sluice serve``: the binary named by the environment variable
SLUICE_BIN (``.ci/python-client-test`` builds it), started on a free loopback port with a
temporary data directory. Without SLUICE_BIN those tests fail (they are never skipped). A
small in-process HTTP server covers what a real server cannot show: that uploads are streamed,
which headers are sent, and answers Sluice never gives (HTML errors, flapping 503s).

Run: ``SLUICE_BIN=/path/to/sluice python3 test_sluice_client.py`` (prints unittest's summary
and a final "N passed, M failed" line), or ``python3 -m unittest test_sluice_client``.
"""

import http.server
import json
import os
import pty
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "examples"))
sys.path.insert(0, str(HERE / "src"))  # the package itself, not the compatibility file

import publish_nats  # noqa: E402  (importable without nats-py)
import sluice_client  # noqa: E402
from sluice_client import Client, JobFailed, SluiceError  # noqa: E402

REPO = HERE.parent.parent
CHUNKS = REPO / "testdata" / "chunks"
PASS_A = CHUNKS / "passA_chunks.json"
NASTY = CHUNKS / "nasty_job_1757498642_0a06fa1bc2da_pass_a_chunks.json"
PASS_C = CHUNKS / "job_1757237159_c8623a8fec21_pass_c_raw_chunks.jsonl"
NASTY_REJECTED = [13, 14, 21, 27, 34, 37]

# How long a job of these sizes may take; generous for a loaded 2-core CI machine.
JOB_TIMEOUT = 120.0
READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SluiceServer:
    """A `sluice serve` process on a free loopback port with its own data directory."""

    def __init__(self, tokens=None, env=None):
        self.tokens = tokens
        self.extra_env = env or {}
        self.proc = None
        self.dir = None
        self.base_url = None
        self.log_path = None

    def start(self):
        binary = os.environ.get("SLUICE_BIN")
        if not binary:
            raise RuntimeError("SLUICE_BIN is not set: build the binary "
                               "(go build -o /tmp/sluice ./cmd/sluice) and set SLUICE_BIN; "
                               "these tests need a real sluice serve")
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"SLUICE_BIN={binary} is not an executable file")
        self.dir = tempfile.mkdtemp(prefix="sluice-pyclient-")
        args = [binary, "serve", "--data-dir", os.path.join(self.dir, "data")]
        env = dict(os.environ, SLUICE_LOG_LEVEL="warn", **self.extra_env)
        env.pop("SLUICE_API_TOKENS_FILE", None)
        if self.tokens is not None:
            tokens_file = os.path.join(self.dir, "tokens.json")
            with open(tokens_file, "w") as f:
                json.dump(self.tokens, f)
            args += ["--tokens-file", tokens_file]
        self.log_path = os.path.join(self.dir, "serve.log")
        # A port found free can be taken before the server binds it: try a few.
        last = None
        for _ in range(3):
            port = free_port()
            self.base_url = f"http://127.0.0.1:{port}"
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(args + ["--http-addr", f"127.0.0.1:{port}"],
                                             env=env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
            try:
                self._wait_ready()
                return self
            except RuntimeError as e:
                last = e
                self._kill()
        self.cleanup()
        raise last

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice serve exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:
                last = e
            time.sleep(0.05)  # polling a separate process; nothing to wait on instead
        raise RuntimeError(f"sluice serve not ready within {READY_TIMEOUT}s ({last}):\n"
                           + self.log_tail())

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self):
        """Stops the server with SIGTERM; returns its exit status."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self._kill()
            return None if self.proc is None else self.proc.returncode
        finally:
            self.cleanup()

    def cleanup(self):
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def get_chunk(base_url, chunk_id, env="dev", token=None):
    req = urllib.request.Request(f"{base_url}/v1/chunks/{chunk_id}?env={env}")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


class RealServerTest(unittest.TestCase):
    """A `sluice serve` without tokens (loopback only, open)."""

    server = None

    @classmethod
    def setUpClass(cls):
        # No upload rate limit: wait() follows the event stream and returns as soon as a job
        # ends, so these tests submit faster than the default 2 a second (burst 10) allows.
        # RetryAfterTest covers the limit.
        cls.server = SluiceServer(env={"SLUICE_API_RATE_LIMITS": "uploads=off"}).start()
        cls.client = Client(cls.server.base_url, token="", timeout=30)

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            status = cls.server.stop()
            if status != 0:
                raise AssertionError(f"sluice serve exited with {status} after SIGTERM")

    def test_submit_file_completes(self):
        sub = self.client.submit_file(PASS_A, env="dev")
        self.assertEqual(sub["env"], "dev")
        self.assertEqual((sub["total"], sub["published"], sub["rejected"], sub["existing"]),
                         (20, 20, 0, False))
        job = self.client.wait(sub["job_id"], timeout=JOB_TIMEOUT, poll_interval=0.05)
        self.assertEqual(job["job_id"], sub["job_id"])
        self.assertEqual(job["state"], "completed")
        self.assertEqual((job["total"], job["written"], job["rejected"], job["dead_lettered"]),
                         (20, 20, 0, 0))
        self.assertEqual(job.get("file"), "passA_chunks.json")
        want = json.loads(PASS_A.read_text("utf-8"))["chunks"][1]
        got = get_chunk(self.server.base_url, want["id"])
        self.assertEqual(got["content"], want["content"])

    def test_submit_file_ndjson(self):
        sub = self.client.submit_file(PASS_C, env="prod")
        job = self.client.wait(sub["job_id"], timeout=JOB_TIMEOUT, poll_interval=0.05)
        self.assertEqual(job["state"], "completed")
        self.assertEqual(job["written"], 400)
        self.assertEqual(job.get("format"), "jsonl")

    def test_submit_chunks_streams_a_generator(self):
        n = 5000
        produced = []
        special = ("caf\u00e9 \u2019quoted\u2019 \U0001F409 "
                   "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 NUL\x00 end")

        def chunks():
            for i in range(n):
                produced.append(i)
                yield {"chunk_id": f"py_gen_{i:05d}",
                       "content": special if i == 0 else f"Generated chunk {i}: some text.",
                       "metadata": {"i": i, "source": "generator"}}

        sub = self.client.submit_chunks(chunks(), env="dev", file_name="generated.ndjson")
        self.assertEqual(len(produced), n)
        self.assertEqual((sub["total"], sub["published"], sub["rejected"]), (n, n, 0))
        job = self.client.wait(sub["job_id"], timeout=JOB_TIMEOUT, poll_interval=0.1)
        self.assertEqual(job["state"], "completed")
        self.assertEqual((job["total"], job["written"], job["rejected"], job["dead_lettered"]),
                         (n, n, 0, 0))
        self.assertEqual(job.get("file"), "generated.ndjson")
        self.assertEqual(get_chunk(self.server.base_url, "py_gen_00000")["content"], special)
        self.assertEqual(get_chunk(self.server.base_url, "py_gen_04999")["metadata"]["i"], 4999)

    def test_nasty_file_raises_job_failed_with_rejections(self):
        with self.assertRaises(JobFailed) as cm:
            self.client.load(NASTY, env="dev", timeout=JOB_TIMEOUT, poll_interval=0.05)
        err = cm.exception
        self.assertIsInstance(err, SluiceError)
        job = err.job
        self.assertEqual(job["state"], "completed_with_errors")
        self.assertEqual((job["total"], job["written"], job["rejected"]), (42, 36, 6))
        self.assertEqual(sorted(r["index"] for r in job["rejections"]), NASTY_REJECTED)
        for idx in NASTY_REJECTED:
            self.assertIn(f"item {idx}", str(err))
        self.assertIn("empty content", str(err))
        self.assertIn("no id", str(err))

        again = self.client.wait(job["job_id"], timeout=JOB_TIMEOUT, raise_on_errors=False)
        self.assertEqual(again["state"], "completed_with_errors")
        self.assertEqual(again["job_id"], job["job_id"])
        self.assertEqual(len(again["rejections"]), 6)

    def test_resubmission_returns_the_same_job(self):
        first = self.client.submit_file(PASS_A, env="test")
        self.assertFalse(first["existing"])
        self.client.wait(first["job_id"], timeout=JOB_TIMEOUT, poll_interval=0.05)
        second = self.client.submit_file(PASS_A, env="test")
        self.assertEqual(second["job_id"], first["job_id"])
        self.assertTrue(second["existing"])
        # The nats-py example computes the same job id for the same file.
        self.assertEqual(publish_nats.job_id_for(str(PASS_A), "test"), first["job_id"])
        forced = self.client.submit_file(PASS_A, env="test", force=True)
        self.assertNotEqual(forced["job_id"], first["job_id"])
        self.assertFalse(forced["existing"])

    def test_idempotency_key_is_accepted(self):
        items = [{"chunk_id": f"idem_{i}", "content": f"idempotent {i}"} for i in range(3)]
        first = self.client.submit_chunks(iter(items), env="test", idempotency_key="py-idem-1")
        # The server recognises a resubmission once its job store has seen the seal.
        self.client.wait(first["job_id"], timeout=JOB_TIMEOUT, poll_interval=0.05)
        second = self.client.submit_chunks(iter(items), env="test", idempotency_key="py-idem-1")
        self.assertEqual(second["job_id"], first["job_id"])
        self.assertTrue(second["existing"])

    def test_progress_callback_is_called(self):
        seen = []
        items = ({"chunk_id": f"progress_{i}", "content": f"progress {i}"} for i in range(300))
        job = self.client.load(items, env="prod", progress=seen.append, poll_interval=0.02,
                               timeout=JOB_TIMEOUT)
        self.assertGreaterEqual(len(seen), 1)
        self.assertTrue(all(s["job_id"] == job["job_id"] for s in seen))
        self.assertEqual(seen[-1]["state"], "completed")
        self.assertEqual(seen[-1]["written"], 300)
        written = [s["written"] for s in seen]
        self.assertEqual(written, sorted(written))

    def test_load_without_waiting_returns_the_submission(self):
        items = [{"chunk_id": "nowait_1", "content": "no wait"}]
        sub = self.client.load(items, env="prod", wait=False)
        self.assertIn("existing", sub)
        self.assertEqual(sub["total"], 1)
        self.client.wait(sub["job_id"], timeout=JOB_TIMEOUT, poll_interval=0.05)

    def test_unknown_job_is_404(self):
        with self.assertRaises(SluiceError) as cm:
            self.client.get_job("jdoesnotexist")
        self.assertEqual(cm.exception.status, 404)
        self.assertEqual(cm.exception.problem.get("status"), 404)
        self.assertIn('No job with id "jdoesnotexist"', cm.exception.message)

    def test_not_a_loadable_file_is_400_with_detail(self):
        with self.assertRaises(SluiceError) as cm:
            # Neither a chunk file nor a graph file (graph_snapshot.json loads as a graph).
            self.client.submit_file(CHUNKS / "split_index.json", env="dev")
        self.assertEqual(cm.exception.status, 400)
        self.assertTrue(cm.exception.problem.get("detail"))
        self.assertIn(cm.exception.problem["detail"], cm.exception.message)

    def test_unencodable_chunk_abandons_the_upload(self):
        def chunks():
            yield {"chunk_id": "ok_1", "content": "fine"}
            yield {"chunk_id": "bad_1", "content": float("nan")}

        with self.assertRaises(ValueError) as cm:
            self.client.submit_chunks(chunks(), env="dev")
        self.assertIn("chunk 1", str(cm.exception))
        with self.assertRaises(urllib.error.HTTPError) as nf:
            get_chunk(self.server.base_url, "ok_1")
        self.assertEqual(nf.exception.code, 404)

    def test_client_side_argument_errors(self):
        with self.assertRaises(ValueError):
            self.client.submit_file(PASS_A, env="staging")
        with self.assertRaises(TypeError):
            self.client.submit_chunks({"chunk_id": "x", "content": "y"})
        with self.assertRaises(TypeError):
            self.client.load(PASS_A, colour="blue")
        with self.assertRaises(ValueError):
            Client("ftp://example.com")

    def test_connection_refused_is_a_sluice_error(self):
        c = Client(f"http://127.0.0.1:{free_port()}", token="", timeout=5)
        with self.assertRaises(SluiceError) as cm:
            c.get_job("jx")
        self.assertIsNone(cm.exception.status)
        self.assertIn("cannot reach Sluice", cm.exception.message)

    def run_cli(self, *args, stderr=subprocess.PIPE):
        env = dict(os.environ)
        env.pop("SLUICE_TOKEN", None)
        return subprocess.run([sys.executable, str(HERE / "sluice_client.py"), "load",
                               "--url", self.server.base_url, *args],
                              stdout=subprocess.PIPE, stderr=stderr, env=env, timeout=300)

    def test_cli_load(self):
        done = self.run_cli("--env", "prod", str(PASS_A))
        self.assertEqual(done.returncode, 0, done.stderr.decode())
        self.assertRegex(done.stdout.decode(),
                         r"passA_chunks\.json: job j\w+ completed \u2014 20 total, 20 written, "
                         r"0 rejected, 0 dead-lettered")
        self.assertNotIn(b"\x1b[K", done.stderr)  # no progress line when stderr is no TTY

        nasty = self.run_cli("--env", "prod", "--json", str(NASTY))
        self.assertEqual(nasty.returncode, 3, nasty.stderr.decode())
        job = json.loads(nasty.stdout)
        self.assertEqual((job["state"], job["rejected"]), ("completed_with_errors", 6))

        missing = self.run_cli(str(CHUNKS / "no_such_file.json"))
        self.assertEqual(missing.returncode, 1)
        self.assertIn(b"no_such_file.json", missing.stderr)

    def test_cli_progress_line_on_a_tty(self):
        master, slave = pty.openpty()
        try:
            # The package's own entry point (test_cli_load runs the compatibility file).
            proc = subprocess.Popen(
                [sys.executable, "-m", "sluice_client", "load", "--url",
                 self.server.base_url, "--env", "test", str(PASS_C)],
                stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                env=dict({k: v for k, v in os.environ.items() if k != "SLUICE_TOKEN"},
                         PYTHONPATH=str(HERE / "src")))
        finally:
            os.close(slave)
        tty_out = b""
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            tty_out += data
        os.close(master)
        out, _ = proc.communicate(timeout=300)
        self.assertEqual(proc.returncode, 0, tty_out.decode("utf-8", "replace"))
        self.assertIn(b"\r\x1b[K", tty_out)
        self.assertRegex(tty_out.decode("utf-8", "replace"), r"completed 100% 400/400")
        self.assertIn(b"completed \xe2\x80\x94 400 total, 400 written", out)




class WaitAndListingTest(unittest.TestCase):
    """wait() and the listing calls against a `sluice serve` of their own, whose upload rate
    limit is off (these tests submit more jobs than RealServerTest's token may in a burst)."""

    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = SluiceServer(env={"SLUICE_API_RATE_LIMITS": "uploads=off"}).start()
        cls.client = Client(cls.server.base_url, token="", timeout=30)

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            status = cls.server.stop()
            if status != 0:
                raise AssertionError(f"sluice serve exited with {status} after SIGTERM")

    def test_rolled_back_job_ends_the_wait(self):
        # wait() must return for a rolled_back job, and for the job of a rolled-back file
        # submitted again, whatever state that is: it hung with timeout=None.
        chunks = [{"chunk_id": f"rb_{i}", "content": f"rollback {i}"} for i in range(20)]
        sub = self.client.submit_chunks(chunks, env="test", file_name="rb.jsonl")
        self.client.wait(sub["job_id"], timeout=JOB_TIMEOUT)
        rb = self.client.rollback_job(sub["job_id"])
        self.assertEqual(rb["rollback"]["state"], "requested")
        job = self.client.wait(sub["job_id"], timeout=JOB_TIMEOUT)
        self.assertEqual(job["state"], "rolled_back")
        self.assertEqual(job["rollback"]["state"], "done")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            get_chunk(self.server.base_url, "rb_3", env="test")
        self.assertEqual(cm.exception.code, 404)
        again = self.client.submit_chunks(chunks, env="test", file_name="rb.jsonl")
        job = self.client.wait(again["job_id"], timeout=JOB_TIMEOUT)
        self.assertIn(job["state"], sluice_client.DONE_STATES)

    def test_wait_reconnects_after_a_dropped_stream(self):
        # A stream cut mid-wait (here by a proxy, after the stream's first event) is followed
        # again with Last-Event-ID; wait() returns only once the job is completed.
        port = int(self.server.base_url.rsplit(":", 1)[1])
        for attempt, n in enumerate((20000, 60000, 120000)):
            chunks = ({"chunk_id": f"drop{attempt}_{i}", "content": f"text {i}"} for i in range(n))
            sub = self.client.submit_chunks(chunks, env="dev", file_name=f"drop{attempt}.jsonl")
            with CuttingProxy(port) as proxy:
                seen = []
                job = Client(proxy.url, token="").wait(sub["job_id"], timeout=JOB_TIMEOUT,
                                                       progress=seen.append)
            self.assertEqual((job["state"], job["written"]), ("completed", n))
            if proxy.first_event_done:
                continue  # the job ended before the stream was cut: try a larger one
            self.assertGreaterEqual(len(proxy.heads), 2, "no reconnect after the cut")
            self.assertIn(b"\r\nlast-event-id: 1\r\n", proxy.heads[1].lower())
            self.assertNotEqual(seen[0]["state"], "completed")
            return
        self.fail("every job ended before its event stream could be cut")

    def test_listing_and_dead_letter_calls(self):
        # The job-listing and dead-letter calls the CLI has (jobs ls; dlq ls, show, replay,
        # delete, purge), against a real server and a real dead letter.
        subs = [self.client.submit_chunks([{"chunk_id": f"ls{k}_{i}", "content": "x"}
                                           for i in range(3)], env="test")
                for k in range(3)]
        for sub in subs:
            self.client.wait(sub["job_id"], timeout=JOB_TIMEOUT)
        ids = [j["job_id"] for j in self.client.iter_jobs(env="test", state="completed",
                                                          page_size=1)]
        for sub in subs:
            self.assertIn(sub["job_id"], ids)
        page = self.client.list_jobs(env="test", limit=1)
        self.assertEqual(len(page["jobs"]), 1)
        self.assertTrue(page.get("next_cursor"))
        with self.assertRaises(SluiceError) as cm:
            self.client.list_jobs(state="nonsense")
        self.assertEqual(cm.exception.status, 400)

        nats_publish(self.server, "sluice.v1.chunks.dev",
                     b'{"chunk_id":"pybroken","content":""}')
        deadline = time.monotonic() + JOB_TIMEOUT
        entry = None
        while entry is None and time.monotonic() < deadline:
            for e in self.client.iter_dead_letters(error_class="validation", page_size=1):
                if e.get("payload_json", {}).get("chunk_id") == "pybroken":
                    entry = e
            time.sleep(0.1)
        self.assertIsNotNone(entry, "no dead letter for the broken chunk")
        got = self.client.get_dead_letter(entry["id"])
        self.assertEqual(got["error"]["class"], "validation")
        dry = self.client.replay_dead_letters(ids=[entry["id"]], dry_run=True)
        self.assertTrue(dry["dry_run"])
        self.assertEqual([r["id"] for r in dry["replayed"]], [entry["id"]])
        self.assertEqual(self.client.get_dead_letter(entry["id"]).get("replays", 0),
                         got.get("replays", 0))
        self.assertIsNone(self.client.delete_dead_letter(entry["id"]))
        with self.assertRaises(SluiceError) as cm:
            self.client.get_dead_letter(entry["id"])
        self.assertEqual(cm.exception.status, 404)
        self.assertEqual(self.client.purge_dead_letters(job="no-such-job"), 0)


def nats_publish(server, subject, payload):
    """Publishes one message to the embedded broker of a sluice serve, with the NATS text
    protocol (nats-py is not installed here)."""
    data = os.path.join(server.dir, "data")
    url = Path(data, "nats.url").read_text().strip()
    password = Path(data, "nats.password").read_text().strip()
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        f = s.makefile("rb")
        if not f.readline().startswith(b"INFO "):
            raise RuntimeError("not a NATS server")
        connect = {"user": "sluice", "pass": password, "verbose": False, "pedantic": False}
        s.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
                  + f"PUB {subject} {len(payload)}\r\n".encode() + payload + b"\r\nPING\r\n")
        while True:
            line = f.readline()
            if not line or line.startswith(b"-ERR"):
                raise RuntimeError(f"NATS: {line!r}")
            if line.startswith(b"PONG"):
                return


class CuttingProxy:
    """A TCP proxy to a local server that cuts the first job event stream right after its
    first event, as a restarting pod or an ingress timeout would. heads holds the request
    heads of every event stream; first_event_done says the cut stream's event was "done"."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.heads = []
        self.first_event_done = False
        self._cut = False
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._open = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._sock.close()
        for c in self._open:
            try:
                c.close()
            except OSError:
                pass

    def _accept(self):
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        up = socket.create_connection(("127.0.0.1", self.upstream_port))
        self._open += [client, up]
        head = b""
        while b"\r\n\r\n" not in head:
            part = client.recv(65536)
            if not part:
                client.close()
                up.close()
                return
            head += part
        cut = False
        if b"/events" in head.split(b"\r\n", 1)[0]:
            with self._lock:
                self.heads.append(head)
                cut, self._cut = not self._cut, True
        up.sendall(head)
        threading.Thread(target=self._pump, args=(client, up), daemon=True).start()
        sent = b""
        while True:
            try:
                data = up.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            sent += data
            body = sent.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in sent else b""
            if cut and b"\n\n" in body:
                end = len(sent) - len(body) + body.index(b"\n\n") + 2
                client.sendall(data[:len(data) - (len(sent) - end)])
                self.first_event_done = b"event: done" in body
                break
            try:
                client.sendall(data)
            except OSError:
                break
        for c in (client, up):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    @staticmethod
    def _pump(src, dst):
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            except OSError:
                break


READ_TOKEN = "read-only-token-0123456789abcdef"
WRITE_TOKEN = "write-token-0123456789abcdef0123"


class RetryAfterTest(unittest.TestCase):
    """The server's per-token rate limits answer 429 with Retry-After; the client waits them
    out and sends again (an upload once failed with 429 in this suite)."""

    def test_uploads_over_the_rate_limit_are_sent_again(self):
        server = SluiceServer(env={"SLUICE_API_RATE_LIMITS": "uploads=1:1"}).start()
        try:
            client = Client(server.base_url, token="", timeout=30)
            start = time.monotonic()
            subs = [client.submit_file(PASS_A, env="dev", force=True) for _ in range(3)]
            elapsed = time.monotonic() - start
        finally:
            self.assertEqual(server.stop(), 0)
        self.assertEqual(len({s["job_id"] for s in subs}), 3)
        # One upload a second, burst 1: the second and third each waited out a 429.
        self.assertGreaterEqual(elapsed, 1.5)


class AuthTest(unittest.TestCase):
    """A `sluice serve` with a tokens file: one read-only and one write token."""

    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = SluiceServer(tokens=[
            {"name": "reader", "token": READ_TOKEN, "scopes": ["read"]},
            {"name": "writer", "token": WRITE_TOKEN, "scopes": ["write"]},
        ]).start()

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            status = cls.server.stop()
            if status != 0:
                raise AssertionError(f"sluice serve exited with {status} after SIGTERM")

    def client(self, token):
        return Client(self.server.base_url, token=token, timeout=30)

    def test_scopes_are_enforced_and_refusals_change_nothing(self):
        with self.assertRaises(SluiceError) as cm:
            self.client(READ_TOKEN).submit_file(PASS_A, env="dev")
        self.assertEqual(cm.exception.status, 403)
        self.assertIn("token missing or lacks scope", cm.exception.message)
        self.assertIn("write", cm.exception.problem.get("detail", ""))

        with self.assertRaises(SluiceError) as cm:
            self.client("").submit_file(PASS_A, env="dev")
        self.assertEqual(cm.exception.status, 401)
        self.assertIn("token missing or lacks scope", cm.exception.message)

        # Neither refusal published anything: the writer's upload is a new job.
        sub = self.client(WRITE_TOKEN).submit_file(PASS_A, env="dev")
        self.assertFalse(sub["existing"])
        job = self.client(READ_TOKEN).wait(sub["job_id"], timeout=JOB_TIMEOUT,
                                           poll_interval=0.05)
        self.assertEqual((job["state"], job["written"]), ("completed", 20))

    def test_no_token_and_wrong_token_get_401(self):
        for token in ("", "not-a-configured-token-000000000"):
            with self.subTest(token=token):
                with self.assertRaises(SluiceError) as cm:
                    self.client(token).get_job("janything")
                self.assertEqual(cm.exception.status, 401)
                self.assertEqual(cm.exception.problem.get("status"), 401)

    def test_token_from_environment(self):
        old = os.environ.get("SLUICE_TOKEN")
        os.environ["SLUICE_TOKEN"] = READ_TOKEN
        try:
            c = Client(self.server.base_url)
        finally:
            if old is None:
                del os.environ["SLUICE_TOKEN"]
            else:
                os.environ["SLUICE_TOKEN"] = old
        self.assertNotIn(READ_TOKEN, repr(c))
        with self.assertRaises(SluiceError) as cm:
            c.get_job("jmissing")
        self.assertEqual(cm.exception.status, 404)  # authenticated, then not found

    def test_refused_large_upload_reports_403_not_a_broken_pipe(self):
        # The server answers 403 without reading the body and closes the connection while the
        # client is still sending megabytes; the client must report the 403.
        def chunks():
            for i in range(40000):
                yield {"chunk_id": f"big_{i}", "content": "x" * 200}

        with self.assertRaises(SluiceError) as cm:
            self.client(READ_TOKEN).submit_chunks(chunks(), env="dev")
        self.assertEqual(cm.exception.status, 403, cm.exception.message)


# -- an in-process fake server, for what a real Sluice cannot show --------------------------


class FakeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        fake = self.server.fake
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
                fake.first_bytes.set()
            return b"".join(parts)
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        fake.first_bytes.set()
        return body

    def answer(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        fake = self.server.fake
        body = self.read_body()
        fake.requests.append((self.command, self.path, dict(self.headers), body))
        self.answer(*fake.next_answer())

    def do_GET(self):
        fake = self.server.fake
        fake.requests.append((self.command, self.path, dict(self.headers), b""))
        if self.path.split("?")[0].endswith("/events"):
            self.events()
            return
        self.answer(*fake.next_answer())

    def do_DELETE(self):
        self.do_GET()

    def events(self):
        """A job event stream from fake.streams (one script per connection, the last one
        repeated), or 501 when the fake has none, like a server that cannot follow jobs."""
        fake = self.server.fake
        if not fake.streams:
            self.answer(501, {"status": 501, "detail": "This server cannot follow jobs."},
                        "application/problem+json")
            return
        script = fake.streams.pop(0) if len(fake.streams) > 1 else fake.streams[0]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for step in script:
            if isinstance(step, (int, float)):
                time.sleep(step)  # a stalled stream
                continue
            ident, event, job = step
            self.wfile.write(f"id: {ident}\nevent: {event}\ndata: {json.dumps(job)}\n\n"
                             .encode())
            self.wfile.flush()


class TraceTest(unittest.TestCase):
    """A `sluice serve` exporting its spans to standard error (OTEL_TRACES_EXPORTER=console):
    a job submitted with a traceparent is traced under that trace, from the API's span to the
    sink's transaction."""

    TP = "00-5bf92f3577b34da6a3ce929d0e0e4731-00f067aa0ba902b7-01"

    def test_submission_continues_the_callers_trace(self):
        server = SluiceServer(env={"OTEL_TRACES_EXPORTER": "console",
                                   "OTEL_BSP_SCHEDULE_DELAY": "100"}).start()
        try:
            client = Client(server.base_url, token="", timeout=30, traceparent=self.TP)
            job = client.load(PASS_A, env="dev", timeout=JOB_TIMEOUT, poll_interval=0.05)
            self.assertEqual(job["state"], "completed")
            trace_id = self.TP[3:35]
            want = {"POST /v1/jobs", "load job", "process sluice.v1.chunks.dev", "chunk batch",
                    "sqlite upsert ttrpg_chunks_dev"}
            names = set()
            deadline = time.monotonic() + 30
            while not want <= names and time.monotonic() < deadline:
                time.sleep(0.2)  # the exporter writes every 100 ms; nothing to wait on instead
                names = set()
                with open(server.log_path, "rb") as f:
                    for line in f:
                        if not line.startswith(b"{"):
                            continue
                        span = json.loads(line)
                        if span.get("SpanContext", {}).get("TraceID") == trace_id:
                            names.add(span.get("Name"))
            self.assertLessEqual(want, names, server.log_tail())
        finally:
            status = server.stop()
        self.assertEqual(status, 0)


class FakeServer:
    def __init__(self, answers, streams=None):
        self.answers = list(answers)
        self.streams = list(streams or [])
        self.requests = []
        self.first_bytes = threading.Event()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHandler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def next_answer(self):
        if len(self.answers) > 1:
            return self.answers.pop(0)
        return self.answers[0]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


SUBMITTED = (202, {"job_id": "jfake", "env": "dev", "state": "running", "total": 1,
                   "published": 1, "rejected": 0, "existing": False})


def fake_job(state, **counts):
    job = {"job_id": "jfake", "env": "dev", "state": state, "total": 3, "published": 3,
           "written": 0, "rejected": 0, "dead_lettered": 0}
    job.update(counts)
    return (200, job)


class FakeServerTest(unittest.TestCase):

    def test_submit_chunks_streams_before_the_iterator_ends(self):
        with FakeServer([SUBMITTED]) as fake:
            sent_before_end = []

            def chunks():
                for i in range(5000):
                    if i == 4000:
                        # If the client built the whole body first, nothing would have reached
                        # the server yet and this wait would time out.
                        sent_before_end.append(fake.first_bytes.wait(30))
                    yield {"chunk_id": f"c{i}", "content": f"text {i}"}

            c = Client(fake.url, token="tok-0123456789abcdef", timeout=30)
            res = c.submit_chunks(chunks(), env="test", file_name="gen.ndjson",
                                  idempotency_key="key-1", force=True)
        self.assertEqual(res["job_id"], "jfake")
        self.assertEqual(sent_before_end, [True])
        method, path, headers, body = fake.requests[0]
        self.assertEqual(method, "POST")
        self.assertEqual(path, "/v1/jobs?env=test&file=gen.ndjson&force=true")
        self.assertEqual(headers["Transfer-Encoding"], "chunked")
        self.assertNotIn("Content-Length", headers)
        self.assertEqual(headers["Content-Type"], "application/x-ndjson")
        self.assertEqual(headers["Idempotency-Key"], "key-1")
        self.assertEqual(headers["Authorization"], "Bearer tok-0123456789abcdef")
        lines = body.split(b"\n")
        self.assertEqual(lines[-1], b"")
        items = [json.loads(line) for line in lines[:-1]]
        self.assertEqual(len(items), 5000)
        self.assertEqual(items[4999], {"chunk_id": "c4999", "content": "text 4999"})

    def test_submit_file_sends_content_length_and_type(self):
        cases = [
            {"name": "json", "path": PASS_A, "ctype": "application/json"},
            {"name": "jsonl", "path": PASS_C, "ctype": "application/x-ndjson"},
        ]
        for case in cases:
            with self.subTest(case["name"]), FakeServer([SUBMITTED]) as fake:
                Client(fake.url, token="").submit_file(case["path"], env="prod")
                _, path, headers, body = fake.requests[0]
                self.assertEqual(path, f"/v1/jobs?env=prod&file={case['path'].name}")
                self.assertEqual(headers["Content-Type"], case["ctype"])
                self.assertEqual(headers["Content-Length"], str(case["path"].stat().st_size))
                self.assertNotIn("Transfer-Encoding", headers)
                self.assertNotIn("Authorization", headers)
                self.assertNotIn("Idempotency-Key", headers)
                self.assertEqual(body, case["path"].read_bytes())

    def test_submit_file_from_a_pipe_is_chunked(self):
        r, w = os.pipe()
        data = PASS_A.read_bytes()

        def feed():
            with os.fdopen(w, "wb") as f:
                f.write(data)

        writer = threading.Thread(target=feed)
        writer.start()
        try:
            with FakeServer([SUBMITTED]) as fake:
                Client(fake.url, token="").submit_file(f"/dev/fd/{r}", file_name="piped.json")
        finally:
            writer.join(10)
            os.close(r)
        _, path, headers, body = fake.requests[0]
        self.assertEqual(path, "/v1/jobs?env=dev&file=piped.json")
        self.assertEqual(headers["Transfer-Encoding"], "chunked")
        self.assertEqual(body, data)

    def test_error_answers(self):
        cases = [
            {"name": "problem json", "answer": (409, {"type": "about:blank", "title": "Conflict",
                                                       "status": 409, "detail": "Key reused.",
                                                       "request_id": "r1"},
                                                 "application/problem+json"),
             "status": 409, "in_msg": ["409 Conflict: Key reused.", "request id r1"],
             "problem_detail": "Key reused."},
            {"name": "html from a proxy", "answer": (502, b"<html>Bad gateway</html>", "text/html"),
             "status": 502, "in_msg": ["502", "<html>Bad gateway</html>"], "problem_detail": None},
            {"name": "401", "answer": (401, {"status": 401,
                                             "detail": "A valid bearer token is required."},
                                       "application/problem+json"),
             "status": 401, "in_msg": ["token missing or lacks scope", "SLUICE_TOKEN"],
             "problem_detail": "A valid bearer token is required."},
            {"name": "2xx without json", "answer": (200, b"ok", "text/plain"),
             "status": 200, "in_msg": ["not a JSON object"], "problem_detail": None},
        ]
        for case in cases:
            with self.subTest(case["name"]), FakeServer([case["answer"]]) as fake:
                with self.assertRaises(SluiceError) as cm:
                    Client(fake.url, token="").get_job("jfake")
                err = cm.exception
                self.assertEqual(err.status, case["status"])
                for s in case["in_msg"]:
                    self.assertIn(s, err.message)
                self.assertEqual(err.problem.get("detail"), case["problem_detail"])

    def test_wait(self):
        failed = fake_job("completed_with_errors", written=2, rejected=1,
                          rejections=[{"index": 2, "id": "c2", "reason": "empty content"}])
        cases = [
            {"name": "completes after running", "answers": [
                fake_job("pending"), fake_job("running", written=1),
                fake_job("completed", written=3)],
             "raise": True, "want_state": "completed", "want_progress": 3},
            {"name": "503 and recovers", "answers": [
                (503, {"status": 503, "detail": "Not ready"}, "application/problem+json"),
                fake_job("completed", written=3)],
             "raise": True, "want_state": "completed", "want_progress": 1},
            {"name": "errors raise", "answers": [failed], "raise": True,
             "want_error": JobFailed, "want_progress": 1},
            {"name": "errors returned", "answers": [failed], "raise": False,
             "want_state": "completed_with_errors", "want_progress": 1},
            {"name": "404 is not retried", "answers": [
                (404, {"status": 404, "detail": "No job"}, "application/problem+json"),
                fake_job("completed")],
             "raise": True, "want_error": SluiceError, "want_progress": 0},
            {"name": "unchanged polls report once", "answers": [
                fake_job("running"), fake_job("running"), fake_job("running"),
                fake_job("completed", written=3)],
             "raise": True, "want_state": "completed", "want_progress": 2},
        ]
        for case in cases:
            with self.subTest(case["name"]), FakeServer(case["answers"]) as fake:
                seen = []
                c = Client(fake.url, token="")
                if "want_error" in case:
                    with self.assertRaises(case["want_error"]) as cm:
                        c.wait("jfake", timeout=30, poll_interval=0.01, progress=seen.append,
                               raise_on_errors=case["raise"])
                    if case["want_error"] is JobFailed:
                        self.assertEqual(cm.exception.job["rejected"], 1)
                        self.assertIn("item 2 (c2): empty content", str(cm.exception))
                    else:
                        self.assertEqual(cm.exception.status, 404)
                else:
                    job = c.wait("jfake", timeout=30, poll_interval=0.01, progress=seen.append,
                                 raise_on_errors=case["raise"])
                    self.assertEqual(job["state"], case["want_state"])
                self.assertEqual(len(seen), case["want_progress"])

    def test_wait_times_out(self):
        with FakeServer([fake_job("running")]) as fake:
            with self.assertRaises(TimeoutError) as cm:
                Client(fake.url, token="").wait("jfake", timeout=0.2, poll_interval=0.01)
        self.assertIn("last state: running", str(cm.exception))
        self.assertGreaterEqual(len(fake.requests), 1)

    def test_wait_follows_the_event_stream_and_reconnects(self):
        # wait() polled every half second and never used the event stream; it now follows
        # GET /v1/jobs/{id}/events, and a stream that drops (a restart, an ingress timeout)
        # or stalls is followed again with Last-Event-ID instead of ending the wait.
        running = fake_job("running", written=1)[1]
        done = fake_job("completed", written=3)[1]
        cases = [
            {"name": "dropped after one event", "streams": [[(7, "progress", running)],
                                                             [(1, "done", done)]]},
            {"name": "stalled after one event", "streams": [[(7, "progress", running), 3.0],
                                                             [(1, "done", done)]]},
            {"name": "dropped before any event", "streams": [[], [(1, "done", done)]]},
        ]
        for case in cases:
            with self.subTest(case["name"]), \
                    FakeServer([fake_job("running", written=1), fake_job("completed", written=3)],
                               streams=case["streams"]) as fake:
                seen = []
                job = Client(fake.url, token="", timeout=0.5).wait(
                    "jfake", timeout=20, poll_interval=0.01, progress=seen.append)
                self.assertEqual(job["state"], "completed")
                streams = [r for r in fake.requests if r[1].endswith("/events")]
                self.assertEqual(len(streams), 2, fake.requests)
                self.assertEqual(streams[0][2].get("Accept"), "text/event-stream")
                want_id = None if case["name"].endswith("before any event") else "7"
                self.assertEqual(streams[1][2].get("Last-Event-ID"), want_id)
                self.assertEqual(seen[-1]["state"], "completed")
                # After the drop the job is read once (its end may have gone by unseen), and
                # once more at the end for its rejection list.
                self.assertEqual(sum(1 for r in fake.requests if r[1] == "/v1/jobs/jfake"), 2)

    def test_wait_returns_at_every_final_state(self):
        # A rolled_back job (and any state the server calls done) ends the wait: resubmitting
        # a rolled-back file with timeout=None must not hang.
        for state in ("completed", "completed_with_errors", "rolled_back", "failed",
                      "a_state_from_a_newer_server"):
            with self.subTest(state), \
                    FakeServer([fake_job(state)], streams=[[(1, "done", fake_job(state)[1])]]) as fake:
                job = Client(fake.url, token="").wait("jfake", timeout=None,
                                                      raise_on_errors=False)
                self.assertEqual(job["state"], state)
        # Polling (a server without the stream) knows the final states by name.
        with FakeServer([fake_job("running"), fake_job("rolled_back")]) as fake:
            job = Client(fake.url, token="").wait("jfake", timeout=None, poll_interval=0.01)
            self.assertEqual(job["state"], "rolled_back")
        # A rollback still pending is not the end, even in a final state.
        pending = fake_job("completed", rollback={"state": "requested", "requested_at": "t",
                                                  "deleted": 0})
        with FakeServer([pending, fake_job("rolled_back")]) as fake:
            job = Client(fake.url, token="").wait("jfake", timeout=None, poll_interval=0.01)
            self.assertEqual(job["state"], "rolled_back")

    def test_wait_on_a_stream_times_out(self):
        running = fake_job("running")[1]
        with FakeServer([fake_job("running")], streams=[[(1, "progress", running), 5.0]]) as fake:
            start = time.monotonic()
            with self.assertRaises(TimeoutError) as cm:
                Client(fake.url, token="").wait("jfake", timeout=0.5)
            self.assertLess(time.monotonic() - start, 4.0)
        self.assertIn("last state: running", str(cm.exception))

    def test_wait_gives_up_when_the_server_stays_away(self):
        # timeout=None never means forever against a server that is gone.
        port = free_port()
        start = time.monotonic()
        with self.assertRaises(SluiceError) as cm:
            Client(f"http://127.0.0.1:{port}", token="").wait("jfake", poll_interval=0.01)
        self.assertIsNone(cm.exception.status)
        self.assertLess(time.monotonic() - start, 10)

    def test_traceparent_is_sent_on_every_request(self):
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        with FakeServer([SUBMITTED]) as fake:
            c = Client(fake.url, token="", traceparent=tp, tracestate="vendor=1")
            c.submit_file(PASS_A, env="dev")
            c.submit_chunks([{"chunk_id": "a", "content": "x"}], env="dev", traceparent=other)
            Client(fake.url, token="").submit_file(PASS_A, env="dev")
        sent = [(h.get("traceparent"), h.get("tracestate")) for _, _, h, _ in fake.requests]
        self.assertEqual(sent, [(tp, "vendor=1"), (other, None), (None, None)])
        for bad in ["", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "nonsense"]:
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                Client("http://127.0.0.1:1", token="", traceparent=bad)
        with self.assertRaises(ValueError):
            Client("http://127.0.0.1:1", token="", tracestate="a=1")  # without a traceparent

    def test_dead_letter_and_job_listing_calls(self):
        page = {"entries": [{"id": "d1"}], "next_cursor": "c2"}
        last = {"entries": [{"id": "d2"}], "next_cursor": None}
        with FakeServer([(200, page), (200, last)]) as fake:
            got = [e["id"] for e in Client(fake.url, token="").iter_dead_letters(
                job="j1", error_class="validation", page_size=1)]
        self.assertEqual(got, ["d1", "d2"])
        self.assertEqual(fake.requests[0][1], "/v1/dlq?job=j1&error_class=validation&limit=1")
        self.assertEqual(fake.requests[1][1],
                         "/v1/dlq?job=j1&error_class=validation&limit=1&cursor=c2")
        with FakeServer([(204, b"", "text/plain")]) as fake:
            self.assertIsNone(Client(fake.url, token="").delete_dead_letter("d/1"))
        self.assertEqual(fake.requests[0][:2], ("DELETE", "/v1/dlq/d%2F1"))
        c = Client("http://127.0.0.1:1", token="")
        with self.assertRaises(ValueError):
            c.replay_dead_letters()
        with self.assertRaises(ValueError):
            c.replay_dead_letters(ids=["a"], job="j")
        with self.assertRaises(ValueError):
            c.purge_dead_letters()

    def test_base_url_path_prefix(self):
        with FakeServer([fake_job("completed")]) as fake:
            Client(fake.url + "/sluice/", token="").get_job("j/odd id")
        self.assertEqual(fake.requests[0][1], "/sluice/v1/jobs/j%2Fodd%20id")


class PublishNatsExampleTest(unittest.TestCase):
    """The parts of examples/publish_nats.py that need no NATS (nats-py is not installed here)."""

    def setUp(self):
        import re
        schema = json.loads((REPO / "schemas" / "job.v1.json").read_text("utf-8"))
        self.defs = schema["$defs"]
        self.timestamp = re.compile(self.defs["timestamp"]["pattern"])
        self.job_id = re.compile(self.defs["job_id"]["pattern"])

    def assert_event(self, ev, kind):
        d = self.defs[kind]
        self.assertLessEqual(set(ev), set(d["properties"]))  # additionalProperties: false
        self.assertLessEqual(set(d["required"]), set(ev))
        self.assertRegex(ev["job_id"], self.job_id)
        stamp = ev["created_at" if kind == "open" else "sealed_at"]
        self.assertRegex(stamp, self.timestamp)

    def test_nasty_file(self):
        src = publish_nats.read_items(str(NASTY))
        self.assertEqual((src.format, src.source_job_id), ("chunks", "job_1757498642_0a06fa1bc2da"))
        job_id = publish_nats.job_id_for(str(NASTY), "dev")
        issues = publish_nats.Issues()
        msgs = list(publish_nats.prepare(src.items, job_id, issues))
        reasons = {r["index"]: r["reason"] for r in issues.rejections}
        # Rejected at intake here; 14 (depth) and 27 (array length) are left to Sluice, which
        # dead-letters them with class limit.
        self.assertEqual(sorted(reasons), [13, 21, 34, 37])
        self.assertEqual(reasons[13], "empty content")
        self.assertEqual(reasons[34], "no id")
        self.assertEqual(reasons[37], "id must be a string, got number")
        self.assertIn("record too large", reasons[21])
        self.assertEqual(len(msgs) + issues.rejected, 42)
        by_index = {m.index: m for m in msgs}
        dup = f"{job_id}/job_1757498642_0a06fa1bc2da_chunk_006"
        self.assertEqual(by_index[7].headers["Nats-Msg-Id"], dup)
        self.assertEqual(by_index[12].headers["Nats-Msg-Id"], dup + "#12")
        self.assertEqual([w["index"] for w in issues.warnings], [12])
        for m in msgs:
            self.assertEqual(m.headers["Sluice-Item"], str(m.index))
            self.assertEqual(m.headers["Sluice-Job"], job_id)
            self.assertEqual(m.headers["Sluice-Schema"], "sluice.chunk.v1")
            self.assertLessEqual(len(m.data), publish_nats.MAX_MESSAGE_BYTES)
            m.data.decode("ascii")
        # The lone surrogates of item 2 are kept as escapes, as Sluice expects them.
        self.assertIn(b"\\ud83d", by_index[2].data)

        self.assert_event(publish_nats.open_event(job_id, "dev", NASTY.name, src.format,
                                                  src.source_job_id), "open")
        seal = publish_nats.seal_event(job_id, "dev", len(msgs), issues)
        self.assert_event(seal, "seal")
        self.assertEqual(seal["total"], seal["published"] + seal["rejected"])
        self.assertEqual(len(seal["rejections"]), seal["rejected"])
        self.assertNotIn("rejections_truncated", seal)

    def test_jsonl_file(self):
        src = publish_nats.read_items(str(PASS_C))
        self.assertEqual(src.format, "jsonl")
        issues = publish_nats.Issues()
        msgs = list(publish_nats.prepare(src.items, "jtest", issues))
        self.assertEqual([m.index for m in msgs], list(range(400)))
        self.assertEqual((issues.rejected, issues.warnings), (0, []))
        seal = publish_nats.seal_event("jtest", "dev", len(msgs), issues)
        self.assert_event(seal, "seal")
        self.assertNotIn("rejections", seal)

    def test_traceparent_on_every_message(self):
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        src = publish_nats.read_items(str(PASS_C))
        msgs = list(publish_nats.prepare(src.items, "jtest", publish_nats.Issues(),
                                         trace=sluice_client._trace_headers(tp, None)))
        self.assertEqual({m.headers.get("traceparent") for m in msgs}, {tp})

    def test_not_a_chunk_file(self):
        with self.assertRaises(ValueError):
            publish_nats.read_items(str(CHUNKS / "graph_snapshot.json"))

    def test_many_rejections_are_truncated(self):
        issues = publish_nats.Issues()
        items = ((i, {"content": "no id"}, None) for i in range(1500))
        self.assertEqual(list(publish_nats.prepare(items, "jtest", issues)), [])
        seal = publish_nats.seal_event("jtest", "dev", 0, issues)
        self.assert_event(seal, "seal")
        self.assertEqual((seal["rejected"], len(seal["rejections"]), seal["rejections_truncated"]),
                         (1500, 1000, True))


def main() -> int:
    """Runs every test, prints unittest's summary and then "N passed, M failed".

    A test that did not run because its class or module set-up failed counts as failed, and so
    does a skip (nothing is skipped on purpose) and a failing tear-down (the server's exit).
    """
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    total = suite.countTestCases()
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    test_errors = [t for t, _ in result.errors if isinstance(t, unittest.TestCase)]
    fixture_errors = [t for t, _ in result.errors if not isinstance(t, unittest.TestCase)]
    passed = max(result.testsRun - len(result.failures) - len(test_errors)
                 - len(result.skipped) - len(result.unexpectedSuccesses), 0)
    teardown_errors = sum(1 for t in fixture_errors if "tearDown" in str(t))
    failed = total - passed + teardown_errors
    if result.skipped:
        print(f"{len(result.skipped)} skipped (counted as failed)")
    if total > result.testsRun:
        print(f"{total - result.testsRun} tests did not run because a set-up failed "
              "(counted as failed)")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
