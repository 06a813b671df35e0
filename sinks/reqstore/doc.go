// Package reqstore stores requirements and feature requests (requirements.Store): in SQLite
// (OpenSQLite, the embedded default) or in an AstraDB collection (OpenAstra). Each applies a
// command and records its outcome and apply marker in one transaction (SQLite) or with
// per-document conditional writes that a redelivery completes (AstraDB), and keeps the
// checksum-chained audit trail. Both pass the conformance suite in reqstoretest.
package reqstore
