package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/sluice-dev/sluice/sinks/graph"
)

// GraphService reads the graph store. Graph batches are written through POST /v1/graph, which
// loads a graph file as a job (JobService.SubmitJob) into the graph of the env it names.
// Optional in Config: without it the read routes answer 501. Every read names the env (dev,
// test or prod, checked by the route: dev when ?env= is absent, 400 for anything else); each
// env is a graph of its own. Methods must be safe for concurrent use.
type GraphService interface {
	// GetNode returns env's node, or an error wrapping ErrNotFound (or graph.ErrNotFound).
	GetNode(ctx context.Context, env, id string) (graph.Node, error)
	// Neighbors returns env's nodes within depth hops of id in both directions, over edges
	// of the given types (all when empty): at most 1000, the start node excluded. Depth is
	// clamped to 0..10 by the store. ctx carries Config.GraphTimeout; an error wrapping
	// graph.ErrTraversalTooLarge (the store's visit budget) answers 422.
	Neighbors(ctx context.Context, env, id string, depth int, edgeTypes []string) ([]graph.Node, error)
	// Stats counts env's nodes and edges by type.
	Stats(ctx context.Context, env string) (graph.Stats, error)
}

func (s *Server) graphRoutes() {
	s.handle("POST /v1/graph", s.require(ScopeWrite, s.submitJob))
	s.handle("GET /v1/graph/nodes/{id}", s.require(ScopeRead, s.withGraph(s.getNode)))
	s.handle("GET /v1/graph/nodes/{id}/neighbors", s.require(ScopeRead, s.withGraph(s.neighbors)))
	s.handle("GET /v1/graph/stats", s.require(ScopeRead, s.withGraph(s.graphStats)))
}

// withGraph answers 501 when the server has no GraphService, and gives every graph read
// Config.GraphTimeout.
func (s *Server) withGraph(h http.HandlerFunc) http.HandlerFunc {
	return s.ifEnabled(s.cfg.Graph != nil, "This server has no graph store.", func(w http.ResponseWriter, r *http.Request) {
		// Every graph read has a deadline: past it the store stops and the answer is 503.
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.GraphTimeout)
		defer cancel()
		h(w, r.WithContext(ctx))
	})
}

// graphEnv returns the route's env (envParam), having answered 400 when it is not valid.
func (s *Server) graphEnv(w http.ResponseWriter, r *http.Request) (string, bool) {
	env, err := envParam(r)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return "", false
	}
	return env, true
}

// notFound reports whether err says that no node has the id: the service's ErrNotFound or
// the store's own.
func notFound(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, graph.ErrNotFound)
}

// getNode handles GET /v1/graph/nodes/{id}?env=.
func (s *Server) getNode(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	env, ok := s.graphEnv(w, r)
	if !ok {
		return
	}
	n, err := s.cfg.Graph.GetNode(r.Context(), env, id)
	switch {
	case notFound(err):
		s.problem(w, r, http.StatusNotFound, fmt.Sprintf("No node %q in env %s.", id, env))
	case err != nil:
		s.internalError(w, r, "get node", err)
	default:
		s.writeJSON(w, r, http.StatusOK, n)
	}
}

type neighborsAnswer struct {
	Env       string       `json:"env"`
	Node      string       `json:"node"`
	Depth     int          `json:"depth"`
	Types     []string     `json:"types,omitempty"`
	Neighbors []graph.Node `json:"neighbors"`
	Count     int          `json:"count"`
}

// neighbors handles GET /v1/graph/nodes/{id}/neighbors?env=&depth=&types=a,b.
func (s *Server) neighbors(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	env, ok := s.graphEnv(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	depth := 1
	if v := q.Get("depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("depth %q is not a number", v))
			return
		}
		depth = max(0, min(n, graph.MaxDepth))
	}
	var types []string
	if v := q.Get("types"); v != "" {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				if !graph.IsEdgeType(t) {
					s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("%q is not an edge type (%s)", t, strings.Join(graph.EdgeTypes(), ", ")))
					return
				}
				types = append(types, t)
			}
		}
	}
	if _, err := s.cfg.Graph.GetNode(r.Context(), env, id); err != nil {
		if notFound(err) {
			s.problem(w, r, http.StatusNotFound, fmt.Sprintf("No node %q in env %s.", id, env))
			return
		}
		s.internalError(w, r, "get node", err)
		return
	}
	nodes, err := s.cfg.Graph.Neighbors(r.Context(), env, id, depth, types)
	switch {
	case errors.Is(err, graph.ErrTraversalTooLarge):
		s.problem(w, r, http.StatusUnprocessableEntity, fmt.Sprintf("The traversal from %q at depth %d visits more nodes than this server allows; ask for a smaller depth or fewer edge types.", id, depth))
		return
	case err != nil:
		s.internalError(w, r, "neighbors", err) // 503 with Retry-After past GraphTimeout
		return
	}
	if nodes == nil {
		nodes = []graph.Node{}
	}
	s.writeJSON(w, r, http.StatusOK, neighborsAnswer{Env: env, Node: id, Depth: depth, Types: types, Neighbors: nodes, Count: len(nodes)})
}

// graphStats handles GET /v1/graph/stats?env=.
func (s *Server) graphStats(w http.ResponseWriter, r *http.Request) {
	env, ok := s.graphEnv(w, r)
	if !ok {
		return
	}
	st, err := s.cfg.Graph.Stats(r.Context(), env)
	if err != nil {
		s.internalError(w, r, "graph stats", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{
		"env": env, "nodes": st.Nodes, "edges": st.Edges, "total_nodes": st.TotalNodes(), "total_edges": st.TotalEdges(),
	})
}
