// Package dataapitest is a strict in-process double of the Astra DB Data API (collections),
// for tests and benchmarks. It serves the wire protocol described in
// /work/shared/reference/data-api.md over an httptest server: it rejects what the real server
// rejects, with the real error envelope and HTTP status, records every request a correct
// client should never send as a violation, and can inject the failures a writer must survive
// (gateway 429/503/504, timeouts, retryable database errors, applied-but-lost writes, 401).
//
// Where things are:
//
//   - server.go: Config, Server, fault injection and the HTTP handler; start.go: Start, a
//     Server owned by a test that fails on protocol violations.
//   - json.go: the strict JSON parser (duplicate keys, number length, key order).
//   - dispatch.go: the command table, field and option checks, and dispatch (request.run).
//   - options.go: reading a command's clauses and options.
//   - collections.go: createCollection, findCollections, deleteCollection and their options.
//   - storage.go: a collection's documents, _id generation and candidate lookup.
//   - insert.go, find.go, count.go, modify.go, delete.go: the document commands.
//   - filter.go, sort.go, vector.go, update.go: filter, sort (vector similarity), update
//     and projection clauses.
//   - shred.go, values.go: document limits (the shredder) and JSON value semantics.
//   - errors.go: the server's error codes and messages.
package dataapitest
