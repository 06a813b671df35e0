# The requirement, feature-request, compatibility and change-feed routes of openapi.json.
# openapi_gen.py calls add(paths, schemas); regenerate with python3 openapi_gen.py > openapi.json.
ref = lambda n: {"$ref": "#/components/schemas/" + n}
def problem_resp(desc): return {"description": desc, "content": {"application/problem+json": {"schema": ref("Problem")}}}
def json_resp(desc, schema): return {"description": desc, "content": {"application/json": {"schema": schema}}}
def detail_resp(desc): return json_resp(desc, ref("CompatError"))
P = lambda name, where="query", desc="", schema={"type": "string"}: {"name": name, "in": where, "description": desc, "required": where == "path", "schema": schema}
sec = lambda scope: [{"bearer": [scope]}]
std = {"401": problem_resp("No valid bearer token."), "403": problem_resp("The token lacks the scope this needs."), "500": problem_resp("Internal failure; the request id identifies it in the logs."), "501": problem_resp("Not enabled on this server.")}
def errs(*codes):
    d = dict(std)
    texts = {"400": "Bad input.", "404": "Not found.", "409": "Refused: the command conflicts with the record's state (code: already_decided, illegal_transition, stale_version, already_exists).", "413": "Body over the size limit.", "422": "The command is invalid (code invalid)."}
    for c in codes:
        d[c] = {"description": texts[c], "content": {"application/problem+json": {"schema": ref("Refusal") if c in ("404", "409", "422") else ref("Problem")}}}
    return d
def compat_errs(*codes):
    d = dict(std)
    texts = {"400": "Invalid input (FastAPI shape).", "404": "Not found.", "409": "Refused: the request was already decided or cannot move so.", "413": "Body over the size limit.", "422": "Bad parameter."}
    for c in codes: d[c] = detail_resp(texts[c])
    return d
wait = P("wait", desc="Wait up to this long (Go duration such as 5s, or seconds; at most 1m) for the outcome instead of answering 202 at once.")
accepted = json_resp("Queued (or the outcome did not come within wait): follow the command on the change feed.", ref("CommandAccepted"))
ts = {"type": "string"}
nstr = {"type": ["string", "null"]}

def add(paths, schemas):
    paths.update({
     "/v1/requirements": {
      "post": {"operationId": "submitRequirements", "summary": "Submit a new immutable requirements version", "security": sec("admin"), "parameters": [wait],
       "requestBody": {"required": True, "content": {"application/json": {"schema": ref("RequirementsSubmission")}}},
       "responses": {"202": accepted, "201": json_resp("Applied (with wait): the outcome with the new version.", ref("Outcome")), **errs("400", "409", "413", "422")}},
      "get": {"operationId": "listRequirementsVersions", "summary": "Every requirements version, newest first", "security": sec("read"),
       "responses": {"200": json_resp("The versions.", {"type": "object", "required": ["versions", "total"], "properties": {"versions": {"type": "array", "items": ref("VersionInfo")}, "total": {"type": "integer"}}}), **errs()}}},
     "/v1/requirements/latest": {"get": {"operationId": "latestRequirementsVersion", "summary": "The newest requirements version", "security": sec("read"),
       "responses": {"200": json_resp("The version.", ref("RequirementsVersion")), **errs("404")}}},
     "/v1/requirements/{id}": {"get": {"operationId": "getRequirementsVersion", "summary": "One requirements version", "security": sec("read"), "parameters": [P("id", "path", "version_id (Unix milliseconds).")],
       "responses": {"200": json_resp("The version.", ref("RequirementsVersion")), **errs("400", "404")}}},
     "/v1/requirements/import": {"post": {"operationId": "importLegacy", "summary": "Import files written by the Python service (requirements/{id}.json, features/FR-*.json), all or nothing", "security": sec("admin"),
       "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["name", "data"], "properties": {"name": {"type": "string"}, "data": {"description": "The file: its JSON document, or its text as a string."}}}}}}},
       "responses": {"200": json_resp("What was imported or skipped (already imported with the same content).", ref("ImportReport")), **errs("400", "409", "413")}}},
     "/v1/features": {
      "post": {"operationId": "submitFeatureRequest", "summary": "Submit a feature request (its id is assigned)", "security": sec("write"), "parameters": [wait],
       "requestBody": {"required": True, "content": {"application/json": {"schema": ref("FeatureSubmission")}}},
       "responses": {"202": accepted, "201": json_resp("Applied (with wait).", ref("Outcome")), **errs("400", "409", "413", "422")}},
      "get": {"operationId": "listFeatureRequests", "summary": "Feature requests, newest first, with cursor paging", "security": sec("read"),
       "parameters": [P("status", schema=ref("FeatureStatus")), P("cursor", desc="next_cursor of the previous page."), P("limit", schema={"type": "integer", "minimum": 1, "maximum": 1000})],
       "responses": {"200": json_resp("A page.", {"type": "object", "required": ["features"], "properties": {"features": {"type": "array", "items": ref("FeatureRequest")}, "next_cursor": {"type": "string"}}}), **errs("400")}}},
     "/v1/features/{id}": {"get": {"operationId": "getFeatureRequest", "summary": "A feature request and its audit trail (newest first)", "security": sec("read"), "parameters": [P("id", "path")],
       "responses": {"200": json_resp("The request.", {"type": "object", "required": ["feature", "audit"], "properties": {"feature": ref("FeatureRequest"), "audit": {"type": "array", "items": ref("AuditEntry")}}}), **errs("404")}}},
     "/v1/features/{id}/decision": {"post": {"operationId": "decideFeatureRequest", "summary": "Approve or reject a pending feature request", "security": sec("admin"), "parameters": [P("id", "path"), wait],
       "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["action"], "additionalProperties": False, "properties": {"action": {"enum": ["approve", "reject"]}, "reason": {"type": "string", "maxLength": 1000}, "expected_version": {"type": "integer", "minimum": 1}}}}}},
       "responses": {"202": accepted, "200": json_resp("Applied (with wait): the outcome with the request's new state.", ref("Outcome")), **errs("400", "404", "409", "413", "422")}}},
     "/v1/features/{id}/transition": {"post": {"operationId": "transitionFeatureRequest", "summary": "Move a feature request to in_progress, completed or cancelled", "security": sec("admin"), "parameters": [P("id", "path"), wait],
       "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["to"], "additionalProperties": False, "properties": {"to": {"enum": ["in_progress", "completed", "cancelled"]}, "reason": {"type": "string", "maxLength": 1000}, "expected_version": {"type": "integer", "minimum": 1}}}}}},
       "responses": {"202": accepted, "200": json_resp("Applied (with wait).", ref("Outcome")), **errs("400", "404", "409", "413", "422")}}},
     "/v1/audit/features": {"get": {"operationId": "listAudit", "summary": "Audit entries, newest first", "security": sec("read"),
       "parameters": [P("request_id", desc="A feature request id, or a version id."), P("limit", schema={"type": "integer", "minimum": 1, "maximum": 1000})],
       "responses": {"200": json_resp("The entries.", {"type": "object", "required": ["audit_entries", "total"], "properties": {"audit_entries": {"type": "array", "items": ref("AuditEntry")}, "total": {"type": "integer"}}}), **errs("400")}}},
     "/v1/audit/integrity": {"get": {"operationId": "auditIntegrity", "summary": "Verify the checksum chain of the whole audit trail", "security": sec("admin"),
       "responses": {"200": json_resp("The check's result (200 whether or not it found problems).", ref("Integrity")), **errs()}}},
     "/v1/events": {"get": {"operationId": "events", "summary": "Change feed as server-sent events: applied mutations and job progress", "security": sec("read"),
       "parameters": [P("since", desc="Resume after this event sequence (0 replays every event kept, 7 days); absent: new events only.", schema={"type": "integer", "minimum": 0}), P("Last-Event-ID", "header", "Same as since; sent by reconnecting EventSource clients."), P("types", desc="Comma-separated: mutation, job.")],
       "responses": {"200": {"description": "An event stream: id is the event's sequence, event its type (mutation, job), data its JSON payload (MutationEvent or JobEvent).", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, **errs("400")}}},
     "/v1/ws": {"get": {"operationId": "eventsWebSocket", "summary": "Change feed over a WebSocket: one JSON text frame {seq,type,subject,time,data} per event", "security": sec("read"),
       "parameters": [P("since", schema={"type": "integer", "minimum": 0}), P("types")],
       "responses": {"101": {"description": "Switching to the WebSocket protocol."}, **errs("400")}}},
     # The Python requirements service's routes (compatibility).
     "/api/requirements/versions": {"get": {"operationId": "compatVersions", "summary": "Python service: versions, newest first", "security": sec("read"),
       "responses": {"200": json_resp("Versions.", {"type": "object", "required": ["versions", "total"], "properties": {"versions": {"type": "array", "items": {"allOf": [ref("VersionInfo")], "properties": {"file_path": {"type": "string"}}}}, "total": {"type": "integer"}}}), **compat_errs()}}},
     "/api/requirements/latest": {"get": {"operationId": "compatLatest", "summary": "Python service: the newest stored document", "security": sec("read"),
       "responses": {"200": json_resp("The document as stored.", ref("RequirementsDocument")), **compat_errs("404")}}},
     "/api/requirements/{version_id}": {"get": {"operationId": "compatVersion", "summary": "Python service: one stored document", "security": sec("read"), "parameters": [P("version_id", "path")],
       "responses": {"200": json_resp("The document as stored.", ref("RequirementsDocument")), **compat_errs("404", "422")}}},
     "/api/requirements/submit": {"post": {"operationId": "compatSubmitRequirements", "summary": "Python service: submit a version (waits for it to apply)", "security": sec("admin"),
       "requestBody": {"required": True, "content": {"application/json": {"schema": ref("RequirementsSubmission")}}},
       "responses": {"200": json_resp("Saved.", {"type": "object", "required": ["success", "version_id", "message"], "properties": {"success": {"const": True}, "version_id": {"type": "integer"}, "message": {"type": "string"}}}), "202": json_resp("Not applied within the wait.", ref("CompatAccepted")), **compat_errs("400", "409", "413")}}},
     "/api/features": {"get": {"operationId": "compatFeatures", "summary": "Python service: feature requests, newest first", "security": sec("read"),
       "parameters": [P("status", schema=ref("FeatureStatus")), P("limit", schema={"type": "integer", "minimum": 1, "maximum": 100})],
       "responses": {"200": json_resp("Feature requests (without rejection_reason).", {"type": "object", "required": ["features", "total", "filtered_by_status"], "properties": {"features": {"type": "array", "items": {"type": "object"}}, "total": {"type": "integer"}, "filtered_by_status": nstr}}), **compat_errs("422")}}},
     "/api/features/{request_id}": {"get": {"operationId": "compatFeature", "summary": "Python service: one feature request (its ten stored keys)", "security": sec("read"), "parameters": [P("request_id", "path")],
       "responses": {"200": json_resp("The request.", ref("LegacyFeatureRequest")), **compat_errs("404")}}},
     "/api/features/submit": {"post": {"operationId": "compatSubmitFeature", "summary": "Python service: submit a feature request (waits for it to apply)", "security": sec("write"),
       "requestBody": {"required": True, "content": {"application/json": {"schema": ref("FeatureSubmission")}}},
       "responses": {"200": json_resp("Submitted.", {"type": "object", "required": ["success", "request_id", "message"], "properties": {"success": {"const": True}, "request_id": {"type": "string"}, "message": {"type": "string"}}}), "202": json_resp("Not applied within the wait.", ref("CompatAccepted")), **compat_errs("400", "409", "413")}}},
     "/api/features/{request_id}/approve": {"post": {"operationId": "compatApprove", "summary": "Python service: approve or reject (the body's admin is ignored; the actor is the token's name)", "security": sec("admin"), "parameters": [P("request_id", "path")],
       "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["action"], "properties": {"action": {"enum": ["approve", "reject"]}, "admin": {"type": "string", "description": "Ignored."}, "reason": {"type": "string"}}}}}},
       "responses": {"200": json_resp("Decided.", {"type": "object", "required": ["success", "message"], "properties": {"success": {"const": True}, "message": {"type": "string"}}}), "202": json_resp("Not applied within the wait.", ref("CompatAccepted")), **compat_errs("400", "404", "409", "413", "422")}}},
     "/api/audit/features": {"get": {"operationId": "compatAudit", "summary": "Python service: audit entries, newest first", "security": sec("read"),
       "parameters": [P("request_id"), P("limit", schema={"type": "integer", "minimum": 1, "maximum": 500})],
       "responses": {"200": json_resp("Entries.", {"type": "object", "required": ["audit_entries", "total", "filtered_by_request"], "properties": {"audit_entries": {"type": "array", "items": ref("AuditEntry")}, "total": {"type": "integer"}, "filtered_by_request": nstr}}), **compat_errs("422")}}},
     "/api/audit/integrity": {"get": {"operationId": "compatIntegrity", "summary": "Python service: audit integrity", "security": sec("admin"),
       "responses": {"200": json_resp("The check's result.", ref("Integrity")), **compat_errs()}}},
     "/api/validate/schema": {"post": {"operationId": "compatValidate", "summary": "Python service: validate a record against its schema", "security": sec("read"),
       "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["schema_type", "data"], "properties": {"schema_type": {"enum": ["requirements", "feature_request"]}, "data": {"type": "object"}}}}}},
       "responses": {"200": json_resp("The result.", {"type": "object", "required": ["is_valid", "errors", "schema_name", "validation_time_ms"], "properties": {"is_valid": {"type": "boolean"}, "errors": {"type": "array", "items": {"type": "object", "required": ["field_path", "message"], "properties": {"field_path": {"type": "string"}, "message": {"type": "string"}, "invalid_value": {}, "schema_path": {"type": "string"}}}}, "schema_name": {"type": "string"}, "validation_time_ms": {"type": "number"}}}), **compat_errs("400", "413")}}},
     "/api/schemas": {"get": {"operationId": "compatSchemas", "summary": "Python service: the record schemas", "security": sec("read"),
       "responses": {"200": json_resp("Schemas.", {"type": "object", "required": ["schemas", "total"], "properties": {"schemas": {"type": "array", "items": {"type": "object", "required": ["name", "title", "description", "version"], "properties": {"name": {"type": "string"}, "title": {"type": "string"}, "description": {"type": "string"}, "version": {"type": "string"}}}}, "total": {"type": "integer"}}}), **compat_errs()}}},
     # The seed's own routes (FR-PERF-405 TR-405.3): a requirement is a requirements version.
     "/requirements/": {
      "post": {"operationId": "seedCreateRequirement", "summary": "Seed (FR-PERF-405): create a requirement, i.e. submit a requirements version through the command pipeline, and wait for it", "security": sec("admin"),
       "description": "The body is RequirementCreate = the Python submission body (as POST /v1/requirements); unknown fields are ignored, as pydantic does. The answer is the stored requirement with its id (the version_id). A body that is not the expected JSON, or a submission the schema refuses, answers 422 {\"detail\": …}.",
       "requestBody": {"required": True, "content": {"application/json": {"schema": ref("RequirementsSubmission")}}},
       "responses": {"200": json_resp("Created: the stored requirement.", ref("SeedRequirement")), "202": json_resp("Not applied within the wait (10 s).", {"type": "object", "required": ["command_id", "detail"], "properties": {"command_id": {"type": "string"}, "detail": {"type": "string"}}}), **compat_errs("409", "413", "422")}},
      "get": {"operationId": "seedListRequirements", "summary": "Seed (FR-PERF-405): list requirements, newest first, archived ones excluded; the page and the total count are read concurrently", "security": sec("read"),
       "parameters": [P("limit", desc="Page size, 1-1000 (default 50).", schema={"type": "integer", "minimum": 1, "maximum": 1000}), P("offset", desc="Requirements to skip (default 0).", schema={"type": "integer", "minimum": 0})],
       "responses": {"200": {"description": "A bare JSON list, as the seed answers; the total count of non-archived requirements is in X-Total-Count.", "headers": {"X-Total-Count": {"description": "How many requirements (not archived) there are in all.", "schema": {"type": "integer", "minimum": 0}}}, "content": {"application/json": {"schema": {"type": "array", "items": ref("SeedRequirement")}}}}, **compat_errs("422")}}},
     "/ws/requirements": {"get": {"operationId": "seedRequirementsWebSocket", "summary": "Seed (FR-PERF-405): query requirements over a WebSocket, many requests per socket", "security": sec("read"),
       "description": "After the upgrade the client sends JSON text messages {\"type\": \"get_requirements\", \"filter\": {…}} and gets one {\"type\": \"requirements_data\", \"data\": [SeedRequirement, …]} per request (newest first, at most 1000), for as long as the socket is open. The filter holds equality conditions ({\"author\": \"alice\"}) or $ne ({\"archived\": {\"$ne\": true}}) on id, version_id, archived, author, timestamp, checksum, title, version and description; every condition must hold; {} matches every requirement. A message that is not JSON, has an unknown type, or a filter with another field or operator ($gt, $in, …) or a value of the wrong type answers {\"type\": \"error\", \"detail\": …} and the socket stays open; so does a request over the token's feeds rate. A message over 64 KiB closes the socket (1009); the server closes with 1001 when it shuts down. The bearer token comes in the Authorization header or, for clients that cannot set headers (browsers), as the subprotocols \"bearer\", \"<token>\" (Sec-WebSocket-Protocol: bearer, <token>; the server selects bearer). Without a valid token the upgrade is refused with 401. An open socket holds one of the token's change-feed slots.",
       "responses": {"101": {"description": "Switching to the WebSocket protocol."}, **compat_errs()}}},
    })
    schemas.update({
     "FeatureStatus": {"type": "string", "enum": ["pending", "approved", "rejected", "in_progress", "completed", "cancelled"]},
     "RefusalCode": {"type": "string", "enum": ["already_decided", "illegal_transition", "stale_version", "not_found", "already_exists", "invalid"]},
     "Refusal": {"type": "object", "description": "A problem document for a refused command, or a plain 404.", "required": ["type", "title", "status"], "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}, "instance": {"type": "string"}, "request_id": {"type": "string"}, "code": ref("RefusalCode"), "command_id": {"type": "string"}, "current_status": ref("FeatureStatus"), "current_version": {"type": "integer"}}},
     "CompatError": {"type": "object", "description": "FastAPI's error shape.", "required": ["detail"], "properties": {"detail": {}}},
     "CompatAccepted": {"type": "object", "required": ["success", "command_id", "message"], "properties": {"success": {"const": True}, "command_id": {"type": "string"}, "message": {"type": "string"}}},
     "CommandAccepted": {"type": "object", "required": ["command_id", "type", "key", "status"], "properties": {"command_id": {"type": "string"}, "type": {"type": "string"}, "key": {"type": "string"}, "request_id": {"type": "string", "description": "The new feature request's id (submissions)."}, "status": {"const": "accepted"}}},
     "FeatureRequest": {"type": "object", "required": ["request_id", "title", "description", "priority", "requester", "status", "created_at", "version", "key"], "properties": {
       "request_id": {"type": "string"}, "title": {"type": "string"}, "description": {"type": "string"}, "priority": {"type": "string"}, "requester": {"type": "string"}, "status": ref("FeatureStatus"),
       "created_at": ts, "updated_at": nstr, "approved_by": nstr, "rejection_reason": nstr, "version": {"type": "integer"}, "key": {"type": "string"}}},
     "LegacyFeatureRequest": {"type": "object", "description": "The ten keys the Python service stores.", "required": ["request_id", "title", "description", "priority", "requester", "status", "created_at", "updated_at", "approved_by", "rejection_reason"], "properties": {
       "request_id": {"type": "string"}, "title": {"type": "string"}, "description": {"type": "string"}, "priority": {"type": "string"}, "requester": {"type": "string"}, "status": ref("FeatureStatus"),
       "created_at": ts, "updated_at": nstr, "approved_by": nstr, "rejection_reason": nstr}, "additionalProperties": False},
     "AuditEntry": {"type": "object", "required": ["seq", "timestamp", "request_id", "old_status", "new_status", "admin", "reason", "prev_checksum", "checksum"], "properties": {
       "seq": {"type": "integer"}, "timestamp": ts, "request_id": {"type": "string"}, "old_status": {"type": "string"}, "new_status": {"type": "string"}, "admin": {"type": "string"}, "reason": nstr, "prev_checksum": {"type": "string"}, "checksum": {"type": "string"}}},
     "VersionInfo": {"type": "object", "required": ["version_id", "timestamp", "author", "checksum"], "properties": {"version_id": {"type": "integer"}, "timestamp": ts, "author": {"type": "string"}, "checksum": {"type": "string"}}},
     "RequirementsDocument": {"type": "object", "description": "A requirements version as stored (schemas/requirements.v1.json).", "required": ["title", "version", "description", "requirements", "metadata"]},
     "RequirementsVersion": {"type": "object", "required": ["version_id", "author", "timestamp", "checksum", "document"], "properties": {"version_id": {"type": "integer"}, "author": {"type": "string"}, "timestamp": ts, "checksum": {"type": "string"}, "document": ref("RequirementsDocument")}},
     "SeedRequirement": {"type": "object", "description": "A requirement as the seed's routes answer it: id (the version_id) and archived (always false: versions are immutable and never archived), then the stored requirements version's members in their order.", "required": ["id", "archived", "title", "version", "description", "requirements", "metadata"], "properties": {"id": {"type": "integer"}, "archived": {"const": False}, "title": {"type": "string"}, "version": {"type": "string"}, "description": {"type": "string"}, "requirements": {"type": "object"}, "stakeholders": {"type": "array", "items": {"type": "object"}}, "acceptance_criteria": {"type": "array", "items": {"type": "object"}}, "author": {"type": "string"}, "metadata": {"type": "object"}}},
     "RequirementsSubmission": {"type": "object", "required": ["title", "version", "description", "requirements"], "properties": {"title": {"type": "string"}, "version": {"type": "string"}, "description": {"type": "string"}, "requirements": {"type": "object"}, "stakeholders": {"type": "array", "items": {"type": "object"}}, "acceptance_criteria": {"type": "array", "items": {"type": "object"}}, "author": {"type": "string"}}},
     "FeatureSubmission": {"type": "object", "required": ["title", "description", "priority", "requester"], "properties": {"title": {"type": "string"}, "description": {"type": "string"}, "priority": {"type": "string"}, "requester": {"type": "string"}, "category": {"type": "string"}, "business_value": {"type": "string"}, "effort_estimate": {"type": "integer"}, "user_story": {"type": "string"}, "acceptance_criteria": {"type": "array", "items": {"type": "string"}}, "tags": {"type": "array", "items": {"type": "string"}}}},
     "Outcome": {"type": "object", "required": ["command_id", "type", "key", "applied"], "properties": {"command_id": {"type": "string"}, "type": {"type": "string"}, "key": {"type": "string"}, "applied": {"type": "boolean"}, "refusal": {"type": "object"}, "version": ref("RequirementsVersion"), "feature": ref("FeatureRequest"), "audit": ref("AuditEntry")}},
     "Integrity": {"type": "object", "required": ["integrity_valid", "compromised_entries", "entries", "total_compromised", "validation_timestamp"], "properties": {"integrity_valid": {"type": "boolean"}, "compromised_entries": {"type": "array", "items": {"type": "string"}}, "entries": {"type": "integer"}, "total_compromised": {"type": "integer"}, "validation_timestamp": ts}},
     "ImportReport": {"type": "object", "required": ["versions", "features"], "properties": {"versions": {"type": "array", "items": {"type": "integer"}}, "features": {"type": "array", "items": {"type": "string"}}, "skipped": {"type": "array", "items": {"type": "string"}}, "warnings": {"type": "array", "items": {"type": "string"}}}},
    })
