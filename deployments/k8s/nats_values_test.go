package k8s_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/sluice-dev/sluice/sources/httpapi"
)

// natsValues is the part of the official NATS Helm chart's values (nats-io/k8s, chart "nats"
// 1.x: config.*, container.*, podTemplate.*, natsBox.*) that nats-values.yaml sets. Decoding is
// strict, so a key misspelt or moved (which Helm would silently ignore) fails here.
type natsValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool `json:"enabled"`
			Replicas int  `json:"replicas"`
		} `json:"cluster"`
		JetStream struct {
			Enabled   bool `json:"enabled"`
			FileStore struct {
				Enabled bool   `json:"enabled"`
				Dir     string `json:"dir"`
				PVC     struct {
					Enabled          bool              `json:"enabled"`
					Size             resource.Quantity `json:"size"`
					StorageClassName *string           `json:"storageClassName"`
				} `json:"pvc"`
			} `json:"fileStore"`
			MemoryStore struct {
				Enabled bool `json:"enabled"`
			} `json:"memoryStore"`
			Merge struct {
				SyncInterval string `json:"sync_interval"`
			} `json:"merge"`
		} `json:"jetstream"`
		Monitor struct {
			Enabled bool `json:"enabled"`
			Port    int  `json:"port"`
		} `json:"monitor"`
		Merge struct {
			Include    string `json:"$include"`
			MaxPayload string `json:"max_payload"`
		} `json:"merge"`
	} `json:"config"`
	Container struct {
		Image struct {
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
		} `json:"image"`
		Env map[string]struct {
			ValueFrom *corev1.EnvVarSource `json:"valueFrom"`
		} `json:"env"`
		Patch []jsonPatchOp `json:"patch"`
	} `json:"container"`
	PodTemplate struct {
		Patch                     []jsonPatchOp `json:"patch"`
		TopologySpreadConstraints map[string]struct {
			MaxSkew           int    `json:"maxSkew"`
			WhenUnsatisfiable string `json:"whenUnsatisfiable"`
		} `json:"topologySpreadConstraints"`
	} `json:"podTemplate"`
	NatsBox struct {
		Enabled *bool `json:"enabled"` // the chart's default is true
	} `json:"natsBox"`
}

// jsonPatchOp is one JSON Patch operation, as the chart's patch values take them.
type jsonPatchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value"`
}

// chartConfigFile is where the chart mounts its nats.conf; an $include is relative to it.
const chartConfigFile = "/etc/nats-config/nats.conf"

// checkNATSValues returns every problem of the values in b: a 3-node cluster, JetStream on
// PVCs, sync always, the permissions file included where it is mounted, each password variable
// it reads set from the sluice-nats Secret, nats-box off, and the nats-server version of go.mod.
func checkNATSValues(b []byte) []error {
	var v natsValues
	if err := decodeStrict(b, &v); err != nil {
		return []error{fmt.Errorf("nats-values.yaml: %w", err)}
	}
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("nats-values.yaml: "+format, args...))
	}
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 {
		add("want a cluster of 3 (streams at R3), got enabled=%v replicas=%d", c.Cluster.Enabled, c.Cluster.Replicas)
	}
	js := c.JetStream
	if !js.Enabled || !js.FileStore.Enabled || !js.FileStore.PVC.Enabled || js.FileStore.PVC.Size.IsZero() {
		add("want JetStream file storage on a PVC per server")
	}
	if js.MemoryStore.Enabled {
		add("memory storage: Sluice's streams are file streams; memory would only take the pod's RAM")
	}
	if js.Merge.SyncInterval != "always" {
		add("jetstream sync_interval %q, want always (lazy fsync loses acknowledged messages on power loss)", js.Merge.SyncInterval)
	}
	if !c.Monitor.Enabled || c.Monitor.Port != 8222 {
		add("the monitoring port must be 8222: KEDA reads /jsz there")
	}
	if e := v.NatsBox.Enabled; e == nil || *e {
		add("natsBox must be disabled: it is a client with access to everything")
	}
	// The permissions file: included from where the container mounts the ConfigMap holding it.
	included := path.Join(path.Dir(chartConfigFile), c.Merge.Include)
	var mount corev1.VolumeMount
	var volume corev1.Volume
	if err := patchValue(v.Container.Patch, "/volumeMounts/-", &mount); err != nil {
		add("container.patch: %v", err)
	}
	if err := patchValue(v.PodTemplate.Patch, "/spec/volumes/-", &volume); err != nil {
		add("podTemplate.patch: %v", err)
	}
	switch {
	case path.Base(included) != filepath.Base(permissionsFile) || path.Dir(included) != mount.MountPath:
		add("$include %q resolves to %s, not permissions.conf in the mount %s", c.Merge.Include, included, mount.MountPath)
	case volume.Name != mount.Name || volume.ConfigMap == nil:
		add("mount %q is not the ConfigMap volume %q", mount.Name, volume.Name)
	}
	// Every password permissions.conf reads from the environment comes from the sluice-nats
	// Secret, under its own name, which nats.env.example has.
	users, err := natsUsers()
	if err != nil {
		return append(errs, err)
	}
	example, err := readEnvFile("secrets/nats.env.example")
	if err != nil {
		return append(errs, err)
	}
	var vars []string
	for _, pw := range users {
		vars = append(vars, pw)
	}
	slices.Sort(vars)
	for _, name := range vars {
		e, ok := v.Container.Env[name]
		switch {
		case !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil:
			add("container.env has no %s from a Secret (permissions.conf reads it)", name)
		case e.ValueFrom.SecretKeyRef.Name != "sluice-nats" || e.ValueFrom.SecretKeyRef.Key != name:
			add("container.env %s from Secret %s key %s, want sluice-nats key %s", name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key, name)
		case example[name] == "":
			add("%s is not in secrets/nats.env.example, from which the sluice-nats Secret is made", name)
		}
	}
	if len(v.Container.Env) != len(vars) {
		add("container.env has %d variables, permissions.conf reads %d", len(v.Container.Env), len(vars))
	}
	if want, err := testedNATSServer(); err != nil {
		errs = append(errs, err)
	} else if v.Container.Image.Repository != "nats" || !strings.HasPrefix(v.Container.Image.Tag, want+"-") {
		add("image %s:%s, want nats:%s-… (the nats-server Sluice is tested with, go.mod)", v.Container.Image.Repository, v.Container.Image.Tag, want)
	}
	return errs
}

// patchValue decodes strictly into v the value of the one "add" operation on path in ops.
func patchValue(ops []jsonPatchOp, path string, v any) error {
	i := slices.IndexFunc(ops, func(op jsonPatchOp) bool { return op.Op == "add" && op.Path == path })
	if i < 0 {
		return fmt.Errorf("no add of %s", path)
	}
	return decodeStrict(ops[i].Value, v)
}

// testedNATSServer returns the nats-server version go.mod requires (without the v).
func testedNATSServer() (string, error) {
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/nats-io/nats-server/v2 v(\S+)`).FindSubmatch(b)
	if m == nil {
		return "", errors.New("go.mod: no nats-server requirement")
	}
	return string(m[1]), nil
}

// readEnvFile reads KEY=VALUE lines, as kustomize's secretGenerator envs does.
func readEnvFile(name string) (map[string]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: %q is not KEY=VALUE", name, line)
		}
		out[k] = v
	}
	return out, sc.Err()
}

// TestNATSValues decodes nats-values.yaml strictly against the chart keys it uses and checks
// what Sluice needs of the cluster.
func TestNATSValues(t *testing.T) {
	b, err := os.ReadFile("nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range checkNATSValues(b) {
		t.Error(err)
	}
}

// TestNATSValuesBroken checks the checker: each change must be reported.
func TestNATSValuesBroken(t *testing.T) {
	b, err := os.ReadFile("nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, old, new, want string }{
		{"misspelt key", "      sync_interval: always", "      sync_intervall: always", `unknown field "config.jetstream.merge.sync_intervall"`},
		{"lazy fsync", "      sync_interval: always", "      sync_interval: 2m", "sync_interval"},
		{"one server", "    replicas: 3\n", "    replicas: 1\n", "cluster of 3"},
		{"key of the old 0.x chart", "natsBox:\n  enabled: false", "natsbox:\n  enabled: false", `unknown field "natsbox"`},
		{"nats-box on", "natsBox:\n  enabled: false", "natsBox:\n  enabled: true", "natsBox"},
		{"include elsewhere", "$include: ../sluice-nats/permissions.conf", "$include: ./permissions.conf", "$include"},
		{"password from another key", "key: SLUICE_NATS_LOADER_PASSWORD", "key: SLUICE_NATS_LOADER_PASS", "SLUICE_NATS_LOADER_PASSWORD"},
		{"untested server", "tag: 2.15.3-alpine", "tag: 2.12-alpine", "the nats-server Sluice is tested with"},
		{"unknown field in a patched volume", "          name: sluice-nats-permissions\n", "          name: sluice-nats-permissions\n          optinal: true\n", `unknown field "configMap.optinal"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(string(b), c.old) {
				t.Fatalf("nats-values.yaml does not contain %q", c.old)
			}
			errs := checkNATSValues([]byte(strings.Replace(string(b), c.old, c.new, 1)))
			if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), c.want) }) {
				t.Fatalf("no error mentions %q; got %v", c.want, errs)
			}
		})
	}
}

// TestSecretExamplesAreObviouslyFake: every value of every committed secret example is a
// change-me placeholder, and the API's own token loader refuses the example tokens file, so a
// copied example fails at start-up instead of running with a published token.
func TestSecretExamplesAreObviouslyFake(t *testing.T) {
	examples, err := filepath.Glob("secrets/*.env" + exampleSuffix)
	if err != nil || len(examples) < 4 {
		t.Fatalf("secret examples: %v, %v", examples, err)
	}
	for _, name := range examples {
		vars, err := readEnvFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range vars {
			if !strings.Contains(v, "change-me") {
				t.Errorf("%s: %s is not an obvious placeholder (want change-me in it)", name, k)
			}
		}
	}
	_, err = httpapi.LoadTokens("secrets/tokens.json" + exampleSuffix)
	if err == nil || !strings.Contains(err.Error(), "change-me") {
		t.Fatalf("the server accepts the example tokens: %v", err)
	}
}
