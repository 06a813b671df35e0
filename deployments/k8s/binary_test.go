package k8s_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// envOnly are the variables the binary reads that no flag mirrors: secrets, kept out of ps,
// and the logger's settings, read before the command line is.
var envOnly = []string{"NATS_PASSWORD", "ASTRA_DB_APPLICATION_TOKEN", "SLUICE_COMMAND_KEY", "SLUICE_LOG_LEVEL", "SLUICE_LOG_FORMAT"}

// envRE finds the variable a flag's help names ("[$SLUICE_OPS_ADDR]").
var envRE = regexp.MustCompile(`\[\$([A-Z0-9_]+)\]`)

// TestContainerSettingsAreSluices runs every Sluice container's command line of every overlay
// through the binary built from this tree (with --help, so nothing starts): the arguments must
// parse, and every variable the container sets must be one that command reads. A renamed flag
// or a misspelt variable would otherwise be ignored silently in production, and the manifests
// were written to names agreed before the code existed.
func TestContainerSettingsAreSluices(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "sluice")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/sluice").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/sluice: %v\n%s", err, out)
	}
	mem := manifests(t, nil)
	checked := 0
	for _, want := range overlays {
		docs, err := render(mem, want.dir)
		if err != nil {
			t.Fatal(err)
		}
		o, errs := decode(docs)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		var pods []corev1.PodSpec
		for _, d := range o.deployments {
			pods = append(pods, d.Spec.Template.Spec)
		}
		for _, j := range o.jobs {
			pods = append(pods, j.Spec.Template.Spec)
		}
		for _, p := range pods {
			for _, c := range slices.Concat(p.InitContainers, p.Containers) {
				if len(c.Args) == 0 {
					t.Errorf("%s: container %s gives sluice no command", want.dir, c.Name)
					continue
				}
				cmd := exec.Command(bin, append(slices.Clone(c.Args), "--help")...)
				cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Errorf("%s: container %s: sluice %v: %v\n%s", want.dir, c.Name, c.Args, err, out)
					continue
				}
				known := slices.Clone(envOnly)
				for _, m := range envRE.FindAllStringSubmatch(string(out), -1) {
					known = append(known, m[1])
				}
				for _, e := range c.Env {
					if !slices.Contains(known, e.Name) {
						t.Errorf("%s: container %s sets %s, which `sluice %s` does not read", want.dir, c.Name, e.Name, c.Args[0])
					}
				}
				checked++
			}
		}
	}
	if checked < 5 {
		t.Fatalf("checked only %d containers", checked)
	}
}
