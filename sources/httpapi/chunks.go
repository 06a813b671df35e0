package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// ChunkReader reads stored chunk documents. Implementations must be safe for concurrent use.
type ChunkReader interface {
	// GetChunk returns the stored document with id in env's collection, as JSON, or an error
	// wrapping ErrNotFound. It may block on I/O and honours ctx. The caller owns the result.
	GetChunk(ctx context.Context, env, id string) (json.RawMessage, error)
}

// getChunk handles GET /v1/chunks/{id}?env=: the stored document, as stored.
func (s *Server) getChunk(w http.ResponseWriter, r *http.Request) {
	env, err := envParam(r)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	id := r.PathValue("id")
	doc, err := s.cfg.Chunks.GetChunk(r.Context(), env, id)
	switch {
	case errors.Is(err, ErrNotFound):
		s.problem(w, r, http.StatusNotFound, fmt.Sprintf("No chunk with id %q in env %s.", id, env))
	case err != nil:
		s.internalError(w, r, "get chunk", err)
	default:
		writeRawJSON(w, http.StatusOK, doc)
	}
}
