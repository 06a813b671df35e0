// Package pipeline is the chunk worker: it drains chunk bundles, graph batches and job events
// from JetStream into a document store and a graph store with bounded concurrency, and acks
// each message only after its write, and its job's progress, are stored.
//
//	SLUICE_CHUNKS ── sjs.Subscriber.ConsumeBatches (≤100 messages, pulls only for free slots)
//	   │
//	   ▼ Worker.handleChunks: check each message; a bundle expands into its items (expandBundle);
//	   │                      build each item's documents (sinks/document)
//	   ▼ Batcher.Write: ≤100 documents a call, Concurrency calls at once, behind a breaker
//	   ▼ DocSink.WriteDocs (sinks/docstore on SQLite, sinks/astra on AstraDB): an error per document
//	   ▼ jobs.Progress.RecordAll: the items' outcomes into their jobs' records
//	   ▼ ack; or settle.Settler: retry with backoff, or dead-letter (pipeline/dlq) and terminate
//
//	SLUICE_JOBS  ── Watermill router ── Worker.handleJobEvent: open / seal / rollback (signed)
//	SLUICE_GRAPH ── Watermill router ── Worker.handleGraph: one batch, one GraphStore transaction
//
// The packages beside it hold the other parts: pipeline/intake turns files into jobs and
// publishes them, pipeline/jobs keeps job records and the change feed, pipeline/commands applies
// requirement commands, pipeline/settle and pipeline/dlq decide and record failures. The sink
// interfaces a store implements are here (DocSink, JobDocDeleter, JobRollbacker, GraphStore,
// Pinger); docs/architecture.md draws the whole path of one chunk.
package pipeline
