// The conformance assertions live in the external test package: pipeline imports
// pipeline/requirements, whose AstraDB store imports this package.
package astra_test

import (
	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/astra"
	"github.com/sluice-dev/sluice/sinks/reqstore"
)

var (
	_ pipeline.DocSink       = (*astra.Sink)(nil)
	_ pipeline.JobDocDeleter = (*astra.Sink)(nil)
	_ requirements.Store     = (*reqstore.AstraStore)(nil)
)
