package httpapi

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3.1 description of every route. TestOpenAPIMatchesRoutes keeps its
// paths equal to the registered routes, and the handler tests validate real responses
// against its schemas, so it cannot drift from the handlers.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI 3.1 document the server serves at /openapi.json. The caller
// must not modify it.
func OpenAPI() []byte { return openAPI }

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(openAPI)
}
