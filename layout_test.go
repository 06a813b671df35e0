package tools_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// module is the import path of this module; imports under it are the project's own.
const module = "github.com/sluice-dev/sluice"

// layers places every package of the module, from the bottom up. A package may import
// packages of its own layer and of the layers below it, never one above: sources and the API
// → pipeline → sinks, with the leaves usable by every layer (docs/architecture.md draws it).
// "x/..." stands for every package under x (not x itself). A new package must be placed here
// before it builds in CI, which is the point: where it goes is a decision, not an accident.
var layers = []struct {
	name string
	pkgs []string
}{
	// Leaves: wire shapes and subjects, fault classes, secrets, signing, tracing, the shared
	// metric families, and the requirement domain (types, state machine, audit chain), which
	// knows no storage.
	{"leaves", []string{"schemas", "schemas/...", "pipeline/fault", "pipeline/secret", "pipeline/sign", "pipeline/telemetry", "pipeline/instrument", "pipeline/instrument/...",
		"pipeline/requirements", "pipeline/requirements/..."}},
	// Adapters: where messages come from (the broker, files) and where they go (document,
	// graph and requirement stores). Sources and sinks never import each other (apart).
	{"adapters", []string{"sinks/...", "sources/jetstream", "sources/files", "sources/embedded", "sources/embedded/..."}},
	// The pipeline, in the order its parts build on each other.
	{"pipeline/jobs, pipeline/dlq", []string{"pipeline/jobs", "pipeline/dlq"}},
	{"pipeline/settle", []string{"pipeline/settle"}},
	{"pipeline", []string{"pipeline"}},
	{"pipeline/intake, pipeline/commands", []string{"pipeline/intake", "pipeline/commands"}},
	// Edges: the HTTP API and the benchmark harness, which drive the pipeline.
	{"edges", []string{"sources/httpapi", "sources/httpapi/...", "pipeline/bench"}},
	// The binary wires everything; deployments/ tests check what ships around it.
	{"main", []string{"cmd/...", "deployments", "deployments/..."}},
}

// apart lists prefixes whose packages may not import one another although they share a layer
// (the HTTP API, an edge above the pipeline, may read the stores below it).
var apart = [][2]string{{"sources/", "sinks/"}}

// layerOf returns the index in layers of package pkg (module-relative), or -1.
func layerOf(pkg string) int {
	for i, l := range layers {
		for _, p := range l.pkgs {
			if p == pkg || strings.HasSuffix(p, "/...") && strings.HasPrefix(pkg, strings.TrimSuffix(p, "...")) {
				return i
			}
		}
	}
	return -1
}

// violations returns one line per import that breaks the layering, for imports mapping each
// module-relative package to the module-relative packages its non-test files import.
func violations(imports map[string][]string) []string {
	var out []string
	for pkg, deps := range imports {
		from := layerOf(pkg)
		if from < 0 {
			out = append(out, pkg+": not placed in any layer (add it to layers in layout_test.go)")
			continue
		}
		for _, dep := range deps {
			to := layerOf(dep)
			switch {
			case to < 0:
				out = append(out, pkg+" imports "+dep+", which is not placed in any layer")
			case to > from:
				out = append(out, pkg+" ("+layers[from].name+") imports "+dep+" ("+layers[to].name+"), a layer above it")
			}
			for _, a := range apart {
				if to == from && (strings.HasPrefix(pkg, a[0]) && strings.HasPrefix(dep, a[1]) || strings.HasPrefix(pkg, a[1]) && strings.HasPrefix(dep, a[0])) {
					out = append(out, pkg+" imports "+dep+": sources and sinks never import each other")
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// projectImports parses the non-test Go files under root and returns, for each package, the
// project packages it imports (module-relative; "" is the module root, skipped: it holds
// only the tools file and this test).
func projectImports(t *testing.T, root string) map[string][]string {
	t.Helper()
	imports := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil || rel == "." {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(rel)
		if _, ok := imports[pkg]; !ok {
			imports[pkg] = nil
		}
		for _, spec := range f.Imports {
			p, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return err
			}
			if dep, ok := strings.CutPrefix(p, module+"/"); ok && !slices.Contains(imports[pkg], dep) {
				imports[pkg] = append(imports[pkg], dep)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return imports
}

// TestLayering fails when a package imports one of a layer above it (or a source a sink, or
// a sink a source), so the layering cannot rot one convenient import at a time.
func TestLayering(t *testing.T) {
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	imports := projectImports(t, root)
	if len(imports) < 20 {
		t.Fatalf("found only %d packages under %s: is this the module root?", len(imports), root)
	}
	for _, v := range violations(imports) {
		t.Error(v)
	}
}

// TestLayeringCatchesUpwardImports checks the checker: an upward import, an unplaced package
// and a source importing a sink are each reported, a downward import is not.
func TestLayeringCatchesUpwardImports(t *testing.T) {
	got := violations(map[string][]string{
		"sinks/graph":     {"pipeline/fault", "pipeline"},         // upward
		"pipeline/jobs":   {"pipeline/commands", "schemas"},       // upward within the pipeline
		"sources/files":   {"sinks/document"},                     // a source importing a sink
		"pipeline/intake": {"pipeline/jobs", "sources/files"},     // fine
		"pipeline/nosuch": {"schemas"},                            // not placed
		"cmd/sluice":      {"pipeline", "sources/httpapi/client"}, // fine
	})
	want := []string{
		"pipeline/jobs (pipeline/jobs, pipeline/dlq) imports pipeline/commands (pipeline/intake, pipeline/commands), a layer above it",
		"pipeline/nosuch: not placed in any layer (add it to layers in layout_test.go)",
		"sinks/graph (adapters) imports pipeline (pipeline), a layer above it",
		"sources/files imports sinks/document: sources and sinks never import each other",
	}
	if !slices.Equal(got, want) {
		t.Errorf("violations:\n got %q\nwant %q", got, want)
	}
}
