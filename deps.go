//go:build tools

package tools

import (
	_ "github.com/ThreeDotsLabs/watermill/message"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/santhosh-tekuri/jsonschema/v6"
	_ "github.com/sourcegraph/conc/pool"
	_ "github.com/synadia-io/orbit.go/jetstreamext"
	_ "go.uber.org/goleak"
	_ "modernc.org/sqlite"
)
