// Package tools is the module root of Sluice, an event-driven ingestion worker (README.md). It
// holds no code: deps.go (build tag tools) pins the modules the build relies on, and
// layout_test.go enforces the one-way import layering drawn in docs/architecture.md.
package tools
