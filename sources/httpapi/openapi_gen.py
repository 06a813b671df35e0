# Generates openapi.json: python3 openapi_gen.py > openapi.json. Edit this, not the JSON; the
# tests (TestOpenAPIMatchesRoutes, the serve end-to-end test) fail when the two drift apart.
import json
ref=lambda n: {"$ref": "#/components/schemas/"+n}
def problem_resp(desc): return {"description": desc, "content": {"application/problem+json": {"schema": ref("Problem")}}}
def json_resp(desc, schema): return {"description": desc, "content": {"application/json": {"schema": schema}}}
P = lambda name, where="query", desc="", schema={"type":"string"}, required=False: {"name": name, "in": where, "description": desc, "required": required or where=="path", "schema": schema}
env_param = P("env", desc="Environment: dev (default), test or prod.", schema={"type":"string","enum":["dev","test","prod"]})
std_err = {"401": problem_resp("No valid bearer token."), "403": problem_resp("The token lacks the scope this needs."), "500": problem_resp("Internal failure; the request id identifies it in the logs.")}
def errs(*codes, **more):
    d = {c: std_err[c] for c in ("401","403","500")}
    for c in codes: d[c] = problem_resp({"400":"Bad input.","404":"Not found.","409":"Conflicts with the resource's state.","413":"Body over the size limit.","501":"Not enabled on this server."}[c])
    return d
sec = lambda scope: [{"bearer": [scope]}]
paths = {
 "/v1/jobs": {
  "post": {"operationId":"submitJob","summary":"Load a chunk file as one job","security":sec("write"),
   "parameters":[env_param, P("file",desc="Name recorded for the job."), P("force",desc="Load again even if the same content was loaded before.",schema={"type":"boolean"}), P("Idempotency-Key","header","A repeated key returns the first request's job; nothing is republished.")],
   "requestBody":{"required":True,"content":{"application/json":{"schema":{"description":"A chunk file in any accepted format (chunks, vectorized_chunks, items, enriched_chunks), plain or gzip or zstd compressed (recognised by its first bytes; 413 when it unpacks past the upload limit). An empty file, or one whose first bytes are not JSON text, is refused with 400 and no job."}},"application/x-ndjson":{"schema":{"type":"string","description":"One chunk record per line (Pass C / Pass D JSONL)."}}}},
   "responses":{"202":json_resp("Every item is published; workers write them now.",ref("SubmitResult")),"200":json_resp("The same file (or Idempotency-Key) was submitted before; nothing was republished.",ref("SubmitResult")), **errs("400","413")}},
  "get": {"operationId":"listJobs","summary":"List jobs, newest first","security":sec("read"),
   "parameters":[P("state",schema=ref("JobState")), P("env",schema={"type":"string","enum":["dev","test","prod"]}), P("limit",schema={"type":"integer","minimum":1,"maximum":1000}), P("cursor",desc="next_cursor of the previous page.")],
   "responses":{"200":json_resp("A page of jobs.",ref("JobList")), **errs("400","501")}}},
 "/v1/jobs/{id}": {
  "get": {"operationId":"getJob","summary":"A job's state and counts","security":sec("read"),"parameters":[P("id","path")],
   "responses":{"200":json_resp("The job.",ref("Job")), **errs("404")}},
  "delete": {"operationId":"rollbackJob","summary":"Roll a job back: delete the documents it wrote last (or restore the versions they replaced)","security":sec("admin"),
   "description":"The workers delete every document whose sluice_job is the job. Every earlier job whose documents went with them is named in rollback.superseded_jobs and ends in state superseded. With restore_previous=true, on a store that keeps previous versions (the embedded store), each document is put back to the version it replaced instead (deleted when it has none). A rolled-back or superseded job's file loads again on a plain POST /v1/jobs.",
   "parameters":[P("id","path"), P("restore_previous",desc="Put back the version each document replaced instead of deleting it. 400 when the document store keeps no previous versions (AstraDB).",schema={"type":"boolean"})],
   "responses":{"202":json_resp("Rollback requested; follow it on the job's rollback field.",ref("Job")), **errs("400","404","409","501")}}},
 "/v1/jobs/{id}/rollback": {
  "get": {"operationId":"previewRollback","summary":"What rolling the job back would do now (a dry run): documents deleted or restored, earlier jobs affected","security":sec("admin"),
   "description":"Computed from the document store with the same counting as the rollback itself; nothing changes. A DELETE /v1/jobs/{id} with the same restore_previous, asked while nothing else writes, does exactly this (the job's rollback field then shows the same numbers). can_roll_back is false, with a reason, while the job is still loading, once a rollback was requested or done, and when restore_previous=true is asked of a store that keeps no previous versions (AstraDB: restore_supported false; the counts are then those of a rollback that deletes). On AstraDB at most 100,000 documents are read; past that truncated is true and the counts are lower bounds.",
   "parameters":[P("id","path"), P("restore_previous",desc="Preview a rollback that puts back the version each document replaced.",schema={"type":"boolean"})],
   "responses":{"200":json_resp("What the rollback would do.",ref("RollbackPreview")), **errs("400","404","501")}}},
 "/v1/jobs/{id}/events": {
  "get": {"operationId":"jobEvents","summary":"Server-sent events: the job after every change, until it is settled","security":sec("read"),"parameters":[P("id","path")],
   "responses":{"200":{"description":"An event stream: 'progress' events, then one 'done' event; data is a Job.","content":{"text/event-stream":{"schema":{"type":"string"}}}}, **errs("404","501")}}},
 "/v1/chunks/{id}": {
  "get": {"operationId":"getChunk","summary":"A stored chunk document","security":sec("read"),"parameters":[P("id","path"), env_param],
   "responses":{"200":json_resp("The document as stored.",ref("ChunkDocument")), **errs("400","404")}}},
 "/v1/dlq": {
  "get": {"operationId":"listDeadLetters","summary":"List dead letters, oldest first","security":sec("read"),
   "parameters":[P("job"),P("subject",desc="Original subject; NATS wildcards allowed."),P("error_class",schema=ref("ErrorClass")),P("since",schema={"type":"string","format":"date-time"}),P("until",schema={"type":"string","format":"date-time"}),P("limit",schema={"type":"integer","minimum":1,"maximum":1000}),P("cursor")],
   "responses":{"200":json_resp("A page of dead letters.",ref("DeadLetterPage")), **errs("400","501")}},
  "delete": {"operationId":"purgeDeadLetters","summary":"Delete every dead letter matching a filter (at least one filter is required)","security":sec("admin"),
   "parameters":[P("job"),P("subject"),P("error_class",schema=ref("ErrorClass")),P("since",schema={"type":"string","format":"date-time"}),P("until",schema={"type":"string","format":"date-time"})],
   "responses":{"200":json_resp("How many were deleted.",{"type":"object","required":["purged"],"properties":{"purged":{"type":"integer","minimum":0}}}), **errs("400","501")}}},
 "/v1/dlq/{id}": {
  "get": {"operationId":"getDeadLetter","summary":"One dead letter with its payload and error","security":sec("read"),"parameters":[P("id","path")],
   "responses":{"200":json_resp("The dead letter.",ref("DeadLetter")), **errs("404","501")}},
  "delete": {"operationId":"deleteDeadLetter","summary":"Delete one dead letter","security":sec("admin"),"parameters":[P("id","path")],
   "responses":{"204":{"description":"Deleted."}, **errs("404","501")}}},
 "/v1/dlq/{id}/payload": {
  "get": {"operationId":"getDeadLetterPayload","summary":"The original payload of one dead letter, byte for byte (inline or stored by reference)","security":sec("read"),"parameters":[P("id","path")],
   "responses":{"200":{"description":"The original payload.","content":{"application/octet-stream":{"schema":{"type":"string","format":"binary"}}}}, **errs("404","501")}}},
 "/v1/dlq/replay": {
  "post": {"operationId":"replayDeadLetters","summary":"Republish dead letters to their original subjects","security":sec("admin"),
   "requestBody":{"required":True,"content":{"application/json":{"schema":ref("ReplayRequest")}}},
   "responses":{"200":json_resp("What was (or, with dry_run, would be) replayed.",ref("ReplayResult")), **errs("400","413","501")}}},
 "/v1/whoami": {
  "get": {"operationId":"whoami","summary":"Who the presented token is and every scope it holds, so a client can hide actions it cannot take","security":sec("read"),
   "responses":{"200":json_resp("The token's name and scopes; without configured tokens (loopback only) principal local with every scope and auth false.",ref("Whoami")), **errs()}}},
 "/v1/consumers": {
  "get": {"operationId":"listConsumers","summary":"Streams and the lag of durable consumers, from the broker statistics cached for /metrics (refreshed every 10 s)","security":sec("read"),
   "responses":{"200":json_resp("The last cached reading; read_at is null before the first refresh.",ref("BrokerReading")), **errs("501")}}},
 "/healthz": {"get":{"operationId":"health","summary":"Liveness","security":[],"responses":{"200":json_resp("Alive.",{"type":"object","required":["status"],"properties":{"status":{"const":"ok"}}})}}},
 "/readyz": {"get":{"operationId":"ready","summary":"Readiness: broker and store reachable","security":[],"responses":{"200":json_resp("Ready.",ref("Readiness")),"503":problem_resp("Not ready; checks says what each check answered. While the process starts (its port is bound before the broker and stores open) the only check is startup: what start-up does or waits for, with the last error; meanwhile /healthz answers 200 and every other route 503 with Retry-After.")}}},
 "/metrics": {"get":{"operationId":"metrics","summary":"Prometheus metrics","security":sec("read"),"responses":{"200":{"description":"Prometheus text format.","content":{"text/plain":{"schema":{"type":"string"}}}}, **errs()}}},
 "/openapi.json": {"get":{"operationId":"openapi","summary":"This document","security":[],"responses":{"200":json_resp("OpenAPI 3.1.",{"type":"object"})}}},
}
issue = {"type":"object","required":["index","reason"],"properties":{"index":{"type":"integer","minimum":0},"id":{"type":"string"},"reason":{"type":"string"}}}
ts = {"type":"string","format":"date-time"}
schemas = {
 "Problem": {"type":"object","description":"RFC 9457 problem details.","required":["type","title","status"],"properties":{"type":{"type":"string"},"title":{"type":"string"},"status":{"type":"integer"},"detail":{"type":"string"},"instance":{"type":"string"},"request_id":{"type":"string"},"checks":{"type":"object","additionalProperties":{"type":"string"},"description":"GET /readyz only: each check's answer."}}},
 "JobState": {"type":"string","enum":["pending","running","completed","completed_with_errors","superseded","rolled_back","failed"]},
 "ErrorClass": {"type":"string","enum":["validation","limit","rejected","auth","transient","exhausted"]},
 "ItemIssue": issue,
 "Rollback": {"type":"object","required":["state","requested_at","deleted"],"properties":{"state":{"type":"string","enum":["requested","done","failed"]},"requested_by":{"type":"string"},"requested_at":ts,"finished_at":ts,
   "restore_previous":{"type":"boolean"},"deleted":{"type":"integer"},"restored":{"type":"integer","description":"Documents put back to the version they replaced."},
   "superseded_jobs":{"type":"array","maxItems":100,"description":"Every earlier job whose documents this rollback deleted, with how many; each is now superseded.","items":{"type":"object","required":["job_id","documents"],"properties":{"job_id":{"type":"string"},"documents":{"type":"integer"}}}},
   "superseded_truncated":{"type":"boolean"},"error":{"type":"string"},"id":{"type":"string"}}},
 "RollbackPreview": {"type":"object","required":["job_id","env","restore_previous","restore_supported","documents","deleted","restored","superseded_jobs","truncated","state","can_roll_back","reason"],"properties":{
   "job_id":{"type":"string"},"env":{"type":"string"},"restore_previous":{"type":"boolean","description":"The mode previewed."},"restore_supported":{"type":"boolean","description":"False when the document store keeps no previous versions (AstraDB)."},
   "documents":{"type":"integer","minimum":0,"description":"Documents the job wrote last (deleted + restored); documents a later job rewrote are not counted: they stay."},"deleted":{"type":"integer","minimum":0},"restored":{"type":"integer","minimum":0,"description":"Documents that would be put back to the version they replaced."},
   "superseded_jobs":{"type":"array","description":"Earlier jobs whose documents would go with the job's, with how many; most documents first, then by job id.","items":{"type":"object","required":["job_id","documents"],"properties":{"job_id":{"type":"string"},"documents":{"type":"integer"}}}},
   "truncated":{"type":"boolean","description":"The store stopped counting at its bound; the counts are lower bounds."},"state":ref("JobState"),
   "can_roll_back":{"type":"boolean"},"reason":{"type":"string","description":"Why the rollback cannot be asked now; empty when it can."}},"additionalProperties":False},
 "Superseded": {"type":"object","description":"Rollbacks of later jobs that deleted documents of this one.","required":["documents","by"],"properties":{"documents":{"type":"integer"},
   "by":{"type":"array","maxItems":100,"items":{"type":"object","required":["job_id","rollback","documents","at"],"properties":{"job_id":{"type":"string"},"rollback":{"type":"string"},"documents":{"type":"integer"},"at":ts}}}}},
 "Job": {"type":"object","required":["job_id","env","state","sealed","total","published","written","rejected","dead_lettered","created_at","updated_at"],"properties":{
   "job_id":{"type":"string"},"env":{"type":"string"},"state":ref("JobState"),"file":{"type":"string"},"format":{"type":"string"},"source_job_id":{"type":"string"},
   "sealed":{"type":"boolean"},"total":{"type":"integer"},"published":{"type":"integer"},"written":{"type":"integer"},"rejected":{"type":"integer"},"dead_lettered":{"type":"integer"},
   "rejections":{"type":"array","items":ref("ItemIssue")},"rejections_truncated":{"type":"boolean"},"rejections_omitted":{"type":"integer","minimum":0,"description":"Rejected items the rejections list leaves out (it holds at most 1000); set with rejections_truncated."},"warnings":{"type":"array","items":ref("ItemIssue")},
   "rollback":ref("Rollback"),"superseded":ref("Superseded"),"generation":{"type":"integer","description":"Times the job was loaded again after a rollback."},"reopened_from":ref("JobState"),"failure":{"type":"object","description":"Why the job failed (state failed).","required":["reason","at"],"properties":{"reason":{"type":"string"},"at":ts}},"created_at":ts,"updated_at":ts,"completed_at":ts},"additionalProperties":False},
 "JobList": {"type":"object","required":["jobs"],"properties":{"jobs":{"type":"array","items":ref("Job")},"next_cursor":{"type":"string"}}},
 "SubmitResult": {"type":"object","required":["job_id","env","state","total","published","rejected","existing"],"properties":{"job_id":{"type":"string"},"env":{"type":"string"},"state":ref("JobState"),"total":{"type":"integer"},"published":{"type":"integer"},"rejected":{"type":"integer"},"rejections":{"type":"array","items":ref("ItemIssue")},"rejections_omitted":{"type":"integer","minimum":0,"description":"Rejected items the rejections list leaves out (it holds at most 1000)."},"existing":{"type":"boolean"}}},
 "ChunkDocument": {"type":"object","required":["_id","chunk_id","content"],"properties":{"_id":{"type":"string"},"chunk_id":{"type":"string"},"content":{"type":"string"},"part":{"type":"integer"},"parts":{"type":"integer"},"environment":{"type":"string"},"stage":{"type":"string"},"metadata":{"type":"object"},"sluice_job":{"type":"string"}}},
 "DeadLetter": {"type":"object","description":"The dead-letter envelope (schemas/dead-letter.v1.json) plus where the DLQ stores it.","required":["id","subject","headers","payload","error","attempts","stream","stream_seq","dlq_seq","stored_at"],"properties":{
   "id":{"type":"string"},"subject":{"type":"string"},"headers":{"type":"object","additionalProperties":{"type":"array","items":{"type":"string"}}},"payload":{"type":"string","contentEncoding":"base64"},
   "payload_json":{"description":"The payload itself, when it is inline and JSON."},
   "payload_ref":ref("DeadLetterRef"),"headers_ref":ref("DeadLetterRef"),
   "error":{"type":"object","required":["class","message"],"properties":{"class":ref("ErrorClass"),"message":{"type":"string"},"sink":{"type":"string"}}},
   "attempts":{"type":"integer"},"first_failure":ts,"last_failure":ts,"stream":{"type":"string"},"stream_seq":{"type":"integer"},"consumer":{"type":"string"},"trace_id":{"type":"string"},"job_id":{"type":"string"},"item":{"type":"integer"},"dead_lettered_at":ts,"replays":{"type":"integer"},"dlq_seq":{"type":"integer"},"stored_at":ts}},
 "DeadLetterRef": {"type":"object","description":"Where an original too large to embed is stored (payload empty): an object of the sluice_dlq_payloads object store bucket. GET /v1/dlq/{id}/payload serves it.","required":["bucket","object","size","sha256"],"properties":{"bucket":{"type":"string"},"object":{"type":"string"},"size":{"type":"integer","minimum":0},"sha256":{"type":"string","pattern":"^[0-9a-f]{64}$"}}},
 "DeadLetterPage": {"type":"object","required":["entries","next_cursor"],"properties":{"entries":{"type":"array","items":ref("DeadLetter")},"next_cursor":{"type":["string","null"]}}},
 "DeadLetterFilter": {"type":"object","properties":{"job":{"type":"string"},"subject":{"type":"string"},"error_class":ref("ErrorClass"),"since":ts,"until":ts},"additionalProperties":False},
 "ReplayRequest": {"type":"object","description":"ids or filter, not both.","properties":{"ids":{"type":"array","items":{"type":"string"}},"filter":ref("DeadLetterFilter"),"dry_run":{"type":"boolean"},"rate":{"type":"number","exclusiveMinimum":0,"description":"Replays per second (default 100)."},"max_replays":{"type":"integer","minimum":1,"description":"Skip entries replayed this many times already (default 3)."},"limit":{"type":"integer","minimum":1}}},
 "ReplayResult": {"type":"object","required":["replayed","skipped","failed","dry_run","truncated"],"properties":{
   "replayed":{"type":"array","items":{"type":"object","required":["id"],"properties":{"id":{"type":"string"}}}},
   "skipped":{"type":"array","items":{"type":"object","required":["id","reason"],"properties":{"id":{"type":"string"},"reason":{"type":"string"}}}},
   "failed":{"type":"array","items":{"type":"object","required":["id","error"],"properties":{"id":{"type":"string"},"error":{"type":"string"}}}},
   "dry_run":{"type":"boolean"},"truncated":{"type":"boolean"}}},
 "Whoami": {"type":"object","required":["principal","scopes","auth"],"additionalProperties":False,"properties":{
   "principal":{"type":"string","description":"The token's name from the tokens file; local without configured tokens."},
   "scopes":{"type":"array","items":{"type":"string","enum":["read","write","admin"]},"description":"Every scope the token holds: its own and all below it, in the order read, write, admin."},
   "auth":{"type":"boolean","description":"False when the API runs without tokens (loopback only)."}}},
 "BrokerReading": {"type":"object","required":["read_at","streams","consumers"],"additionalProperties":False,"properties":{
   "read_at":{"type":["string","null"],"format":"date-time","description":"When the cached reading was taken; null before the first refresh."},
   "streams":{"type":"array","items":{"type":"object","required":["stream","messages","bytes","max_bytes"],"additionalProperties":False,"properties":{
     "stream":{"type":"string"},"messages":{"type":"integer","minimum":0},"bytes":{"type":"integer","minimum":0},"max_bytes":{"type":"integer","description":"The stream's byte limit; -1 for none."}}}},
   "consumers":{"type":"array","items":{"type":"object","required":["stream","consumer","pending","ack_pending","redelivered"],"additionalProperties":False,"properties":{
     "stream":{"type":"string"},"consumer":{"type":"string"},
     "pending":{"type":"integer","minimum":0,"description":"Messages not yet delivered to the consumer (num_pending)."},
     "ack_pending":{"type":"integer","minimum":0,"description":"Messages delivered and not yet acknowledged (num_ack_pending)."},
     "redelivered":{"type":"integer","minimum":0,"description":"Messages delivered more than once and not yet acknowledged (num_redelivered)."}}}}}},
 "Readiness": {"type":"object","required":["status","checks"],"properties":{"status":{"const":"ready"},"checks":{"type":"object","additionalProperties":{"type":"string"}}}},
}
doc = {"openapi":"3.1.0","info":{"title":"Sluice API","version":"1","description":"Publish load jobs and commands; read jobs, chunks and dead letters. Errors are application/problem+json (RFC 9457). Bearer tokens carry scopes read, write and admin (admin implies write implies read); without configured tokens the API serves loopback only, without authentication. Browsers may send state-changing requests (POST, PUT, PATCH, DELETE) only from the API's own origin or a trusted origin: a cross-origin one is refused with 403 (Sec-Fetch-Site, or Origin against Host); clients that send neither header (curl, the CLI, the Python client) are not affected."},
 "servers":[{"url":"http://127.0.0.1:8080"}],
 "security":[{"bearer":["read"]}],
 "paths":paths,"components":{"schemas":schemas,"securitySchemes":{"bearer":{"type":"http","scheme":"bearer","description":"A token from SLUICE_API_TOKENS_FILE."}}}}
import openapi_requirements; openapi_requirements.add(paths, schemas)  # requirements, features, /api compat, change feed
import openapi_graph; openapi_graph.add(paths, schemas)  # graph store reads and graph loads
# Abuse limits (limits.go, unavailable.go): every id is checked at the door (400); expensive
# routes are rate-limited per token (429); publishing routes and graph reads answer 503 with
# Retry-After while the broker is away or past their deadline, and uploads when the spool is full.
retry_after = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 1}}}
def limited(desc):
    r = problem_resp(desc); r["headers"] = retry_after; return r
rate_limited = {("post", "/v1/jobs"), ("post", "/v1/graph"), ("get", "/v1/graph/nodes/{id}/neighbors"), ("post", "/v1/dlq/replay"), ("get", "/v1/events"), ("get", "/v1/ws"), ("get", "/v1/jobs/{id}/events"), ("get", "/ws/requirements")}
for path, ops in paths.items():
    for method, op in ops.items():
        resp = op.setdefault("responses", {})
        if "{" in path:
            resp.setdefault("400", problem_resp("Bad input; an id in the path or query that breaks the contract (control characters, over 1024 bytes; job ids: 1-128 of A-Z a-z 0-9 _ -)."))
        if (method, path) in rate_limited:
            resp["429"] = limited("Too many requests of this kind from this token (per-token rate limit), or, for change feeds, too many open at once.")
        scopes = [sc for req in op.get("security", []) for sc in req.get("bearer", [])]
        if (method != "get" and any(sc in ("write", "admin") for sc in scopes)) or path.startswith("/v1/graph/nodes"):
            resp["503"] = limited("The broker is unavailable, a dependency did not answer in time, or (uploads) the upload spool or the publish queue is full (admission: no job was created); retry after Retry-After.")
# Cross-origin protection (crossorigin.go): a browser's state-changing request from another
# origin is refused with 403 before authentication.
for path, ops in paths.items():
    for method, op in ops.items():
        if method in ("post", "put", "patch", "delete"):
            op["responses"]["403"] = problem_resp("The token lacks the scope this needs, or a browser sent this from another origin (Sec-Fetch-Site cross-site or same-site, or an Origin that is not this server and not in SLUICE_API_TRUSTED_ORIGINS): nothing was done.")
paths["/v1/graph/nodes/{id}/neighbors"]["get"]["responses"]["422"] = problem_resp("The traversal visits more nodes than the server allows (graph visit budget); ask for a smaller depth or fewer edge types.")
print(json.dumps(doc, indent=2))
