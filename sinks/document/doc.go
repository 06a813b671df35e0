// Package document turns chunk records into the documents every document sink stores, and
// enforces the Data API's document limits at intake, so that what loads on the embedded store
// also loads into AstraDB.
package document

import "encoding/json"

// Doc is one document ready for a document sink. It is a plain value: sinks must not retain
// or modify Body after Write returns.
type Doc struct {
	// ID is the document's _id: the chunk id, or "{chunk_id}-part{n}" for parts 2 and later
	// of a split chunk. Required.
	ID string
	// Version orders writes of the same ID: a sink ignores (and reports as success) a write
	// whose Version is lower than the stored one, so a redelivered old message never
	// overwrites a newer one. Sluice uses the JetStream stream sequence of the message the
	// document came from. 0 means unconditional.
	Version uint64
	// Body is the whole document as a JSON object, including "_id". Required.
	Body json.RawMessage
}
