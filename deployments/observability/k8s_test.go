package observability_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

const (
	k8sDir             = "../k8s"
	monitoring         = "components/monitoring"
	prometheusRuleFile = k8sDir + "/" + monitoring + "/prometheusrule.yaml"
)

// prometheusRule returns the PrometheusRule of the monitoring component: alerts.yaml's groups
// under a header, in YAML.
func prometheusRule(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var alerts struct {
		Groups yaml.Node `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &alerts); err != nil {
		t.Fatalf("decode %s: %v", alertsFile, err)
	}
	rule := struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Spec struct {
			Groups *yaml.Node `yaml:"groups"`
		} `yaml:"spec"`
	}{APIVersion: "monitoring.coreos.com/v1", Kind: "PrometheusRule"}
	rule.Metadata.Name = "sluice"
	rule.Spec.Groups = &alerts.Groups
	var out bytes.Buffer
	out.WriteString("# Generated from deployments/observability/alerts.yaml by go generate ./deployments/observability/\n# (TestPrometheusRuleIsCurrent). Do not edit: change alerts.yaml and generate again.\n")
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(rule); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestPrometheusRuleIsCurrent fails when the component's PrometheusRule is not alerts.yaml;
// SLUICE_UPDATE_DASHBOARD=1 (go generate) rewrites it.
func TestPrometheusRuleIsCurrent(t *testing.T) {
	want := prometheusRule(t)
	if os.Getenv("SLUICE_UPDATE_DASHBOARD") == "1" {
		if err := os.WriteFile(prometheusRuleFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", prometheusRuleFile)
		return
	}
	got, err := os.ReadFile(prometheusRuleFile)
	if err != nil {
		t.Fatalf("%v (go generate ./deployments/observability/ writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not alerts.yaml: run go generate ./deployments/observability/ and commit it", prometheusRuleFile)
	}
}

// TestMonitoringComponentRenders adds the monitoring component to overlays/dev, renders it
// with kustomize as kubectl apply -k would, and checks that the PrometheusRule holds exactly
// alerts.yaml's groups and that the ServiceMonitor selects the ops Service, in its namespace,
// by a port the Service has.
func TestMonitoringComponentRenders(t *testing.T) {
	mem := filesys.MakeFsInMemory()
	const root = "/k8s"
	err := filepath.WalkDir(k8sDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".go") {
			return err
		}
		rel, err := filepath.Rel(k8sDir, path)
		if err != nil {
			return err
		}
		if filepath.Dir(rel) == "secrets" && rel != filepath.Join("secrets", "kustomization.yaml") && !strings.HasSuffix(rel, ".example") {
			return nil // a real secret file of this machine's user: never part of a test
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if rel == filepath.Join("overlays", "dev", "kustomization.yaml") {
			b = bytes.Replace(b, []byte("components:\n"), []byte("components:\n  - ../../"+monitoring+"\n"), 1)
		}
		rel = strings.TrimSuffix(rel, ".example") // the secret files as a user creates them
		return mem.WriteFile(filepath.Join(root, rel), b)
	})
	if err != nil {
		t.Fatal(err)
	}
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, filepath.Join(root, "overlays", "dev"))
	if err != nil {
		t.Fatalf("kustomize build overlays/dev with %s: %v", monitoring, err)
	}
	objects := map[string]map[string]any{}
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(y, &obj); err != nil {
			t.Fatal(err)
		}
		objects[r.GetKind()+"/"+r.GetName()] = obj
	}

	rule, ok := objects["PrometheusRule/sluice"]
	if !ok {
		t.Fatalf("no PrometheusRule/sluice rendered")
	}
	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var alerts map[string]any
	if err := yaml.Unmarshal(raw, &alerts); err != nil {
		t.Fatal(err)
	}
	if got, want := get(rule, "spec", "groups"), alerts["groups"]; !reflect.DeepEqual(got, want) {
		t.Errorf("the rendered PrometheusRule's groups are not those of %s", alertsFile)
	}
	if ns := get(rule, "metadata", "namespace"); ns != "sluice" {
		t.Errorf("PrometheusRule namespace %v, want sluice", ns)
	}

	sm, ok := objects["ServiceMonitor/sluice"]
	if !ok {
		t.Fatalf("no ServiceMonitor/sluice rendered")
	}
	svc, ok := objects["Service/sluice-ops"]
	if !ok {
		t.Fatalf("no Service/sluice-ops rendered")
	}
	if a, b := get(sm, "metadata", "namespace"), get(svc, "metadata", "namespace"); a != b {
		t.Errorf("ServiceMonitor in namespace %v, the ops Service in %v", a, b)
	}
	svcLabels, _ := get(svc, "metadata", "labels").(map[string]any)
	match, _ := get(sm, "spec", "selector", "matchLabels").(map[string]any)
	if len(match) == 0 {
		t.Errorf("the ServiceMonitor selects no label")
	}
	for k, v := range match {
		if svcLabels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%v; the ops Service has %v", k, v, svcLabels[k])
		}
	}
	for name, obj := range objects {
		if strings.HasPrefix(name, "Service/") && name != "Service/sluice-ops" {
			labels, _ := get(obj, "metadata", "labels").(map[string]any)
			all := true
			for k, v := range match {
				all = all && labels[k] == v
			}
			if all {
				t.Errorf("the ServiceMonitor also selects %s", name)
			}
		}
	}
	ports := map[any]bool{}
	for _, p := range asList(get(svc, "spec", "ports")) {
		ports[get(p, "name")] = true
	}
	endpoints := asList(get(sm, "spec", "endpoints"))
	if len(endpoints) == 0 {
		t.Errorf("the ServiceMonitor has no endpoint")
	}
	for _, e := range endpoints {
		if !ports[get(e, "port")] {
			t.Errorf("the ServiceMonitor scrapes port %v; the ops Service has %v", get(e, "port"), ports)
		}
		if get(e, "path") != "/metrics" {
			t.Errorf("the ServiceMonitor scrapes %v, want /metrics", get(e, "path"))
		}
	}
}

// get walks nested maps of a decoded YAML object by keys; nil when a key is missing.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}
