# The graph routes of openapi.json. openapi_gen.py calls add(paths, schemas).
ref = lambda n: {"$ref": "#/components/schemas/" + n}
def problem_resp(desc): return {"description": desc, "content": {"application/problem+json": {"schema": ref("Problem")}}}
def json_resp(desc, schema): return {"description": desc, "content": {"application/json": {"schema": schema}}}
P = lambda name, where="query", desc="", schema={"type": "string"}: {"name": name, "in": where, "description": desc, "required": where == "path", "schema": schema}
sec = lambda scope: [{"bearer": [scope]}]
# Each env is a graph of its own: a load names the env it goes to, a read the env it reads.
env_param = P("env", desc="Environment whose graph this reads or writes: dev (default), test or prod. Each env is a separate graph; anything else is a 400 problem.",
              schema={"type": "string", "enum": ["dev", "test", "prod"], "default": "dev"})
def errs(*codes):
    d = {"401": problem_resp("No valid bearer token."), "403": problem_resp("The token lacks the scope this needs."), "500": problem_resp("Internal failure; the request id identifies it in the logs.")}
    for c in codes:
        d[c] = problem_resp({"400": "Bad input.", "404": "Not found.", "413": "Body over the size limit.", "501": "No graph store on this server."}[c])
    return d

def add(paths, schemas):
    schemas["GraphNode"] = {"type": "object", "required": ["id", "type", "properties", "version"], "properties": {
        "id": {"type": "string"}, "type": {"type": "string", "enum": ["Concept", "Rule", "Procedure", "Step", "Entity", "SourceDoc", "Artifact", "Decision"]},
        "properties": {"type": "object"}, "created_at": {"type": "number"}, "updated_at": {"type": "number"}, "version": {"type": "integer"}}}
    paths["/v1/graph"] = {"post": {"operationId": "loadGraph", "summary": "Load a graph file (GraphStore batch, Pass E graph_snapshot.json or legacy Pass C graph) as one job of graph batches",
        "security": sec("write"),
        "parameters": [env_param, P("file"), P("force", schema={"type": "boolean"}), P("Idempotency-Key", "header")],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": {"202": json_resp("Published; workers apply the batches in order.", ref("SubmitResult")),
                      "200": json_resp("The same file was loaded before.", ref("SubmitResult")), **errs("400", "413")}}}
    paths["/v1/graph/nodes/{id}"] = {"get": {"operationId": "getNode", "summary": "A graph node", "security": sec("read"), "parameters": [P("id", "path"), env_param],
        "responses": {"200": json_resp("The node.", ref("GraphNode")), **errs("400", "404", "501")}}}
    paths["/v1/graph/nodes/{id}/neighbors"] = {"get": {"operationId": "neighbors", "summary": "Nodes within depth hops, both directions (one recursive query; at most 1000, start excluded)",
        "security": sec("read"),
        "parameters": [P("id", "path"), env_param, P("depth", desc="0 to 10 (clamped), default 1.", schema={"type": "integer"}),
                       P("types", desc="Comma-separated edge types to follow; all when absent.")],
        "responses": {"200": json_resp("The neighbours.", {"type": "object", "required": ["env", "node", "depth", "neighbors", "count"], "properties": {
            "env": {"type": "string", "enum": ["dev", "test", "prod"]}, "node": {"type": "string"}, "depth": {"type": "integer"}, "types": {"type": "array", "items": {"type": "string"}},
            "neighbors": {"type": "array", "items": ref("GraphNode"), "maxItems": 1000}, "count": {"type": "integer"}}}), **errs("400", "404", "501")}}}
    paths["/v1/graph/stats"] = {"get": {"operationId": "graphStats", "summary": "Node and edge counts by type, in one env's graph", "security": sec("read"), "parameters": [env_param],
        "responses": {"200": json_resp("Counts.", {"type": "object", "required": ["env", "nodes", "edges", "total_nodes", "total_edges"], "properties": {
            "env": {"type": "string", "enum": ["dev", "test", "prod"]}, "nodes": {"type": "object", "additionalProperties": {"type": "integer"}}, "edges": {"type": "object", "additionalProperties": {"type": "integer"}},
            "total_nodes": {"type": "integer"}, "total_edges": {"type": "integer"}}}), **errs("400", "501")}}}
