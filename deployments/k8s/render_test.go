// Package k8s_test validates the Kubernetes manifests under deployments/k8s offline: every
// overlay is rendered with kustomize's Go library and every resource decoded strictly (an
// unknown field is an error) into the Kubernetes API types, then checked for what Sluice needs
// (render_test.go, checks_test.go); the NATS chart values are decoded strictly against the keys
// they use (nats_values_test.go). Nothing here talks to a cluster.
package k8s_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// root is where the manifests are copied in the in-memory file system the tests render from.
const root = "/k8s"

// exampleSuffix marks the committed placeholder of a secret file the user creates beside it.
const exampleSuffix = ".example"

// overlays are the overlays every test renders, with what each must show.
var overlays = []expect{
	{dir: "overlays/astra", apiReplicas: 2, workerReplicas: 2, keda: true, streamReplicas: "3"},
	{dir: "overlays/dev", apiReplicas: 1, workerReplicas: 1, keda: false, streamReplicas: "1"},
}

// expect is what one overlay must render: replica counts (for a KEDA-scaled worker, its
// minReplicaCount), whether a ScaledObject is there, and the provision Job's stream replicas.
type expect struct {
	dir                         string
	apiReplicas, workerReplicas int32
	keda                        bool
	streamReplicas              string
}

// manifests returns an in-memory copy of deployments/k8s (the test's working directory) as a
// user would have it after creating the secret files: each *.example under secrets/ is also
// written under its name without the suffix, and a real secret file on this disk is never
// read. mutate, when not nil, may change a file's content (path relative to deployments/k8s).
func manifests(t *testing.T, mutate func(path, content string) string) filesys.FileSystem {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".go") {
			return err
		}
		if filepath.Dir(path) == "secrets" && path != filepath.Join("secrets", "kustomization.yaml") && !strings.HasSuffix(path, exampleSuffix) {
			return nil // a real secret file of this machine's user: never part of a test
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		content := string(b)
		if mutate != nil {
			content = mutate(filepath.ToSlash(path), content)
		}
		names := []string{path}
		if strings.HasSuffix(path, exampleSuffix) {
			names = append(names, strings.TrimSuffix(path, exampleSuffix))
		}
		for _, name := range names {
			if err := mem.WriteFile(filepath.Join(root, name), []byte(content)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return mem
}

// doc is one rendered resource: its kind, name, labels and YAML.
type doc struct {
	kind, name string
	labels     map[string]string
	yaml       []byte
}

// render builds overlay dir of mem with kustomize, as `kubectl apply -k` would.
func render(mem filesys.FileSystem, dir string) ([]doc, error) {
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, filepath.Join(root, dir))
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var docs []doc
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", r.GetKind(), r.GetName(), err)
		}
		docs = append(docs, doc{kind: r.GetKind(), name: r.GetName(), labels: r.GetLabels(), yaml: y})
	}
	return docs, nil
}

// TestOverlaysRenderAndPass renders every overlay and requires every check to pass.
func TestOverlaysRenderAndPass(t *testing.T) {
	mem := manifests(t, nil)
	for _, want := range overlays {
		t.Run(want.dir, func(t *testing.T) {
			docs, err := render(mem, want.dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(docs) < 15 {
				t.Fatalf("rendered only %d resources", len(docs))
			}
			for _, err := range validate(docs, want) {
				t.Error(err)
			}
		})
	}
}

// TestSecretsAreNeededToRender: without the secret files a user creates, no overlay renders
// (so placeholders never reach a cluster by accident), and the error names the missing file.
func TestSecretsAreNeededToRender(t *testing.T) {
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".go") {
			return err
		}
		if filepath.Dir(path) == "secrets" && path != filepath.Join("secrets", "kustomization.yaml") {
			return nil // neither the examples nor anything real
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return mem.WriteFile(filepath.Join(root, path), b)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range overlays {
		if _, err := render(mem, o.dir); err == nil || !strings.Contains(err.Error(), "nats.env") {
			t.Errorf("%s rendered without secrets/nats.env: %v", o.dir, err)
		}
	}
}

// TestBrokenManifestsFail checks the checker: each change below, made to a committed file,
// must fail rendering or validation with the reason given.
func TestBrokenManifestsFail(t *testing.T) {
	cases := []struct {
		name, file, old, new, want string
	}{
		{"unknown field", "base/worker.yaml", "  revisionHistoryLimit: 5\n", "  revisionHistoryLimit: 5\n  replica: 3\n", `unknown field "spec.replica"`},
		{"field name in the wrong case", "base/api.yaml", "  revisionHistoryLimit: 5\n", "  RevisionHistoryLimit: 5\n", `unknown field "spec.RevisionHistoryLimit"`},
		{"probe on a port the container lacks", "base/api.yaml", "path: /healthz\n              port: ops", "path: /healthz\n              port: opz", `liveness probe: port "opz"`},
		{"probe on the API port", "base/worker.yaml", "path: /readyz\n              port: ops", "path: /readyz\n              port: 8080", `readiness probe: port "8080"`},
		{"secret key that does not exist", "base/worker.yaml", "key: SLUICE_NATS_WORKER_PASSWORD", "key: SLUICE_NATS_WORKERS_PASSWORD", `no key "SLUICE_NATS_WORKERS_PASSWORD"`},
		{"grace shorter than drain and preStop", "base/api.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 35", "terminationGracePeriodSeconds 35 is not above"},
		{"drain longer than the grace", "base/worker.yaml", "value: 30s", "value: 60s", "terminationGracePeriodSeconds 45 is not above"},
		{"root allowed", "base/worker.yaml", "            runAsNonRoot: true\n", "            runAsNonRoot: false\n", "runAsNonRoot"},
		{"writable root file system", "base/api.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem"},
		{"no memory limit", "base/worker.yaml", "              cpu: \"2\"\n              memory: 512Mi\n", "              cpu: \"2\"\n", "memory limit"},
		{"provisioning at start-up", "base/api.yaml", "value: \"off\"", "value: missing", "SLUICE_PROVISION"},
		{"wrong NATS user", "base/worker.yaml", "value: sluice-worker", "value: sluice-api", `NATS_USER "sluice-api"`},
		{"another role's NATS password", "base/worker.yaml", "key: SLUICE_NATS_WORKER_PASSWORD", "key: SLUICE_NATS_API_PASSWORD", "NATS_PASSWORD must be the Secret key SLUICE_NATS_WORKER_PASSWORD"},
		{"KEDA on the wrong consumer", "overlays/astra/keda-scaledobject.yaml", "consumer: sluice-chunks", "consumer: sluice-chunk", `consumer "sluice-chunk"`},
		{"KEDA on another Deployment", "overlays/astra/keda-scaledobject.yaml", "    name: sluice-worker\n  pollingInterval", "    name: sluice-api\n  pollingInterval", "worker"},
		{"KEDA metadata key misspelt", "overlays/astra/keda-scaledobject.yaml", "lagThreshold: \"4200\"", "lagTreshold: \"4200\"", "lagTreshold"},
		{"Service on a port name no pod has", "base/api.yaml", "targetPort: http", "targetPort: web", `targetPort "web"`},
		{"no default deny", "base/networkpolicy.yaml", "  podSelector: {}\n", "  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: sluice\n", "default-deny"},
		{"no egress to NATS", "base/networkpolicy.yaml", "port: 4222", "port: 4223", "egress to TCP 4222"},
		{"PDB blocking every drain", "overlays/dev/kustomization.yaml", "        value: 1\n", "        value: 0\n", "PodDisruptionBudget"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			changed := false
			mem := manifests(t, func(path, content string) string {
				if path != c.file {
					return content
				}
				if !strings.Contains(content, c.old) {
					t.Fatalf("%s does not contain %q", path, c.old)
				}
				changed = true
				return strings.Replace(content, c.old, c.new, 1)
			})
			if !changed {
				t.Fatalf("%s not found", c.file)
			}
			var errs []error
			for _, o := range overlays {
				docs, err := render(mem, o.dir)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				errs = append(errs, validate(docs, o)...)
			}
			for _, err := range errs {
				if strings.Contains(err.Error(), c.want) {
					return
				}
			}
			t.Fatalf("no error mentions %q; got %v", c.want, errs)
		})
	}
}
