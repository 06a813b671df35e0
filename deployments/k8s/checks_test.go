package k8s_test

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sources/jetstream"
)

// Names shared with the binary (docs/operations.md; the ops listener's contract).
const (
	opsPortName  = "ops"
	opsPort      = 9090
	uid          = 65532
	defaultDrain = 30 * time.Second // --drain-timeout's default
	phaseLabel   = "sluice.dev/phase"
	// permissionsFile holds the NATS users and the environment variables of their passwords.
	permissionsFile = "../nats/permissions.conf"
)

// scaledObject is the part of KEDA's ScaledObject (keda.sh/v1alpha1) these manifests use,
// decoded strictly: a field KEDA would not know is an error here too.
type scaledObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *struct {
					ScaleUp   *hpaRules `json:"scaleUp"`
					ScaleDown *hpaRules `json:"scaleDown"`
				} `json:"behavior"`
			} `json:"horizontalPodAutoscalerConfig"`
		} `json:"advanced"`
		Triggers []struct {
			Type     string            `json:"type"`
			Name     string            `json:"name"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// hpaRules is autoscaling/v2's HPAScalingRules as KEDA passes it on.
type hpaRules struct {
	StabilizationWindowSeconds *int32 `json:"stabilizationWindowSeconds"`
	SelectPolicy               string `json:"selectPolicy"`
	Policies                   []struct {
		Type          string `json:"type"`
		Value         int32  `json:"value"`
		PeriodSeconds int32  `json:"periodSeconds"`
	} `json:"policies"`
}

// natsJetStreamKeys are the metadata keys of KEDA's nats-jetstream trigger (keda.sh, scalers,
// NATS JetStream); any other key is a typo KEDA would ignore.
var natsJetStreamKeys = []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold", "activationLagThreshold", "useHttps"}

// objects are the decoded resources of one render.
type objects struct {
	deployments   []appsv1.Deployment
	jobs          []batchv1.Job
	services      []corev1.Service
	secrets       map[string]corev1.Secret
	pdbs          []policyv1.PodDisruptionBudget
	policies      []networkingv1.NetworkPolicy
	namespaces    []corev1.Namespace
	scaledObjects []scaledObject
}

// decodeStrict decodes YAML b into v as the API server's strict field validation does: an
// unknown or duplicate field is an error, and names match case-sensitively (encoding/json
// alone would take "natsbox" for natsBox, which Helm and the API server would not).
func decodeStrict(b []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(j, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// strict decodes d into v (decodeStrict) and checks its apiVersion.
func strict(d doc, v any, apiVersion string) error {
	if err := decodeStrict(d.yaml, v); err != nil {
		return fmt.Errorf("%s/%s: %w", d.kind, d.name, err)
	}
	var tm struct {
		APIVersion string `json:"apiVersion"`
	}
	if err := yaml.Unmarshal(d.yaml, &tm); err != nil || tm.APIVersion != apiVersion {
		return fmt.Errorf("%s/%s: apiVersion %q, want %q", d.kind, d.name, tm.APIVersion, apiVersion)
	}
	return nil
}

// decode sorts docs into their API types, strictly; a kind not expected is an error.
func decode(docs []doc) (objects, []error) {
	o := objects{secrets: map[string]corev1.Secret{}}
	var errs []error
	for _, d := range docs {
		var err error
		switch d.kind {
		case "Deployment":
			var v appsv1.Deployment
			if err = strict(d, &v, "apps/v1"); err == nil {
				o.deployments = append(o.deployments, v)
			}
		case "Job":
			var v batchv1.Job
			if err = strict(d, &v, "batch/v1"); err == nil {
				o.jobs = append(o.jobs, v)
			}
		case "Service":
			var v corev1.Service
			if err = strict(d, &v, "v1"); err == nil {
				o.services = append(o.services, v)
			}
		case "Secret":
			var v corev1.Secret
			if err = strict(d, &v, "v1"); err == nil {
				o.secrets[v.Name] = v
			}
		case "Namespace":
			var v corev1.Namespace
			if err = strict(d, &v, "v1"); err == nil {
				o.namespaces = append(o.namespaces, v)
			}
		case "PodDisruptionBudget":
			var v policyv1.PodDisruptionBudget
			if err = strict(d, &v, "policy/v1"); err == nil {
				o.pdbs = append(o.pdbs, v)
			}
		case "NetworkPolicy":
			var v networkingv1.NetworkPolicy
			if err = strict(d, &v, "networking.k8s.io/v1"); err == nil {
				o.policies = append(o.policies, v)
			}
		case "ScaledObject":
			var v scaledObject
			if err = strict(d, &v, "keda.sh/v1alpha1"); err == nil {
				o.scaledObjects = append(o.scaledObjects, v)
			}
		default:
			err = fmt.Errorf("%s/%s: kind not expected here (add it to decode)", d.kind, d.name)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return o, errs
}

// validate decodes docs and returns every problem found, each naming its resource.
func validate(docs []doc, want expect) []error {
	o, errs := decode(docs)
	if len(errs) > 0 {
		return errs
	}
	users, err := natsUsers()
	if err != nil {
		return []error{err}
	}
	errs = append(errs, checkPhases(docs)...)
	errs = append(errs, checkNamespaces(o)...)
	for _, d := range o.deployments {
		errs = append(errs, checkDeployment(d, o, users, want)...)
	}
	if len(o.jobs) != 1 || o.jobs[0].Name != "sluice-provision" {
		errs = append(errs, fmt.Errorf("want one Job, sluice-provision; got %d", len(o.jobs)))
	}
	for _, j := range o.jobs {
		errs = append(errs, checkJob(j, o, users, want)...)
	}
	errs = append(errs, checkServices(o)...)
	errs = append(errs, checkPDBs(o)...)
	errs = append(errs, checkNetworkPolicies(o)...)
	errs = append(errs, checkScaledObjects(o, want)...)
	return errs
}

// natsUsers maps each NATS user of deployments/nats/permissions.conf to the environment
// variable its password is read from.
func natsUsers() (map[string]string, error) {
	b, err := os.ReadFile(permissionsFile)
	if err != nil {
		return nil, err
	}
	users := map[string]string{}
	for _, m := range regexp.MustCompile(`user:\s*([\w-]+),\s*password:\s*\$(\w+)`).FindAllStringSubmatch(string(b), -1) {
		users[m[1]] = m[2]
	}
	if len(users) < 4 {
		return nil, fmt.Errorf("%s: found only %d users", permissionsFile, len(users))
	}
	return users, nil
}

// checkPhases: `kubectl apply -l sluice.dev/phase=provision` must bring what the provision Job
// needs before anything else (the namespace, the Secrets, the network policies, the Job) and
// nothing that needs provisioning done.
func checkPhases(docs []doc) []error {
	var errs []error
	for _, d := range docs {
		first := d.kind == "Namespace" || d.kind == "Secret" || d.kind == "NetworkPolicy" || d.kind == "Job"
		if got := d.labels[phaseLabel] == "provision"; got != first {
			errs = append(errs, fmt.Errorf("%s/%s: label %s=provision is %v, want %v", d.kind, d.name, phaseLabel, got, first))
		}
	}
	return errs
}

// checkNamespaces: the namespace the resources go to exists and enforces the restricted Pod
// Security Standard.
func checkNamespaces(o objects) []error {
	if len(o.namespaces) != 1 {
		return []error{fmt.Errorf("want one Namespace, got %d", len(o.namespaces))}
	}
	ns := o.namespaces[0]
	var errs []error
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		errs = append(errs, fmt.Errorf("Namespace/%s: not enforcing the restricted Pod Security Standard", ns.Name))
	}
	for _, d := range o.deployments {
		if d.Namespace != ns.Name {
			errs = append(errs, fmt.Errorf("Deployment/%s: namespace %q, want %q", d.Name, d.Namespace, ns.Name))
		}
	}
	return errs
}

// component names what a Sluice pod runs: the first argument of the binary.
func component(c corev1.Container) string {
	if len(c.Args) == 0 {
		return ""
	}
	return c.Args[0]
}

// env returns the value of environment variable name of c, and whether it is set.
func env(c corev1.Container, name string) (corev1.EnvVar, bool) {
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
	if i < 0 {
		return corev1.EnvVar{}, false
	}
	return c.Env[i], true
}

// scaledBy returns the ScaledObject that scales Deployment name, if any.
func scaledBy(o objects, name string) *scaledObject {
	for i, s := range o.scaledObjects {
		if s.Spec.ScaleTargetRef.Name == name {
			return &o.scaledObjects[i]
		}
	}
	return nil
}

// minReplicas is the fewest pods Deployment d runs: its replicas, or its ScaledObject's minimum.
func minReplicas(o objects, d appsv1.Deployment) int32 {
	if s := scaledBy(o, d.Name); s != nil && s.Spec.MinReplicaCount != nil {
		return *s.Spec.MinReplicaCount
	}
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func checkDeployment(d appsv1.Deployment, o objects, users map[string]string, want expect) []error {
	where := "Deployment/" + d.Name
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(where+": "+format, args...)) }
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		add("want one container, got %d", len(spec.Containers))
		return errs
	}
	c := spec.Containers[0]
	role := component(c)
	wantReplicas := map[string]int32{"api": want.apiReplicas, "worker": want.workerReplicas}[role]
	if wantReplicas == 0 {
		add("runs %q, want api or worker", c.Args)
	}
	if got := minReplicas(o, d); got != wantReplicas {
		add("at least %d replicas, want %d", got, wantReplicas)
	}
	if s := scaledBy(o, d.Name); s != nil && d.Spec.Replicas != nil {
		add("replicas is set although KEDA scales it: every apply would reset the autoscaler's count")
	}
	sel, err := metav1LabelSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		add("selector %v does not match its pod template's labels (%v)", d.Spec.Selector, err)
	}
	if d.Spec.Template.Labels["app.kubernetes.io/component"] != role {
		add("pod label app.kubernetes.io/component %q, want %q", d.Spec.Template.Labels["app.kubernetes.io/component"], role)
	}
	errs = append(errs, checkPod(where, spec, o, users)...)

	// The ops listener: a port named ops, on the address SLUICE_OPS_ADDR gives the binary, and
	// both probes on it (the API port needs a token for nothing here, but a worker has none).
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports[opsPortName] != opsPort {
		add("no container port named %q on %d", opsPortName, opsPort)
	}
	if e, _ := env(c, "SLUICE_OPS_ADDR"); e.Value != fmt.Sprintf("0.0.0.0:%d", opsPort) {
		add("SLUICE_OPS_ADDR %q, want 0.0.0.0:%d (the ops listener is loopback by default)", e.Value, opsPort)
	}
	if role == "api" {
		if e, _ := env(c, "SLUICE_HTTP_ADDR"); e.Value != fmt.Sprintf("0.0.0.0:%d", ports["http"]) || ports["http"] == 0 {
			add("SLUICE_HTTP_ADDR %q does not listen on the port named http (%d)", e.Value, ports["http"])
		}
	}
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"liveness", "/healthz", c.LivenessProbe}, {"readiness", "/readyz", c.ReadinessProbe}} {
		switch {
		case p.probe == nil || p.probe.HTTPGet == nil:
			add("%s probe: want an HTTP GET of %s", p.name, p.path)
		case p.probe.HTTPGet.Port != intstr.FromString(opsPortName):
			add("%s probe: port %q, want the container port named %q", p.name, p.probe.HTTPGet.Port.String(), opsPortName)
		case p.probe.HTTPGet.Path != p.path:
			add("%s probe: path %q, want %q", p.name, p.probe.HTTPGet.Path, p.path)
		}
	}

	// Drain: SIGTERM comes after preStop, and the process then needs up to the drain timeout.
	drain := defaultDrain
	if e, ok := env(c, "SLUICE_DRAIN_TIMEOUT"); ok {
		if drain, err = time.ParseDuration(e.Value); err != nil {
			add("SLUICE_DRAIN_TIMEOUT: %v", err)
		}
	}
	var preStop time.Duration
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		add("no preStop sleep (the image has no shell; Kubernetes' sleep action needs none)")
	} else {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= drain+preStop {
		add("terminationGracePeriodSeconds %v is not above the drain timeout (%v) plus preStop (%v)", ptrVal(g), drain, preStop)
	}
	if e, _ := env(c, "SLUICE_PROVISION"); e.Value != "off" {
		add("SLUICE_PROVISION %q, want off: the provision Job creates the streams, the processes need no stream-admin right", e.Value)
	}
	if role == "api" {
		errs = append(errs, checkTokensFile(where, c, spec, o)...)
	}
	if e, ok := env(c, "SLUICE_COMMAND_KEY"); !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		add("SLUICE_COMMAND_KEY must come from a Secret, the same one in the API and the workers")
	} else if e.ValueFrom.SecretKeyRef.Name != "sluice-command-key" && !strings.HasPrefix(e.ValueFrom.SecretKeyRef.Name, "sluice-command-key-") {
		add("SLUICE_COMMAND_KEY from Secret %q", e.ValueFrom.SecretKeyRef.Name)
	}
	if _, ok := env(c, "SLUICE_COMMAND_KEY_FILE"); ok {
		add("SLUICE_COMMAND_KEY_FILE: a Secret volume's file is a root-owned symbolic link, which Sluice refuses as a key file")
	}
	for _, name := range []string{"ASTRA_DB_API_ENDPOINT", "ASTRA_DB_APPLICATION_TOKEN", "SLUICE_GRAPH_DSN"} {
		if e, ok := env(c, name); !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			add("%s must come from a Secret (several workers need AstraDB and PostgreSQL)", name)
		}
	}
	if ann := d.Spec.Template.Annotations; ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(opsPort) {
		add("pod annotations do not point Prometheus at the ops port: %v", ann)
	}
	return errs
}

func ptrVal(p *int64) any {
	if p == nil {
		return "unset"
	}
	return *p
}

// checkTokensFile: SLUICE_API_TOKENS_FILE is a file of a mounted Secret, mounted as a
// directory (a subPath mount would never see a rotated file).
func checkTokensFile(where string, c corev1.Container, spec corev1.PodSpec, o objects) []error {
	e, ok := env(c, "SLUICE_API_TOKENS_FILE")
	if !ok || e.Value == "" {
		return []error{fmt.Errorf("%s: SLUICE_API_TOKENS_FILE not set: the API would serve loopback only", where)}
	}
	for _, m := range c.VolumeMounts {
		rel, found := strings.CutPrefix(e.Value, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !found {
			continue
		}
		if m.SubPath != "" {
			return []error{fmt.Errorf("%s: tokens volume mounted with subPath: rotations would never reach the file", where)}
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			key := rel
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					key = it.Key
				}
			}
			if s, ok := o.secrets[v.Secret.SecretName]; !ok || !hasKey(s, key) {
				return []error{fmt.Errorf("%s: SLUICE_API_TOKENS_FILE %s: Secret %q has no key %q", where, e.Value, v.Secret.SecretName, key)}
			}
			return nil
		}
	}
	return []error{fmt.Errorf("%s: SLUICE_API_TOKENS_FILE %s is in no mounted Secret", where, e.Value)}
}

func hasKey(s corev1.Secret, key string) bool {
	_, a := s.Data[key]
	_, b := s.StringData[key]
	return a || b
}

// checkPod checks what every Sluice pod needs: non-root uid 65532 without privileges on a
// read-only root, resources, every Secret reference resolved, every mount backed, and the NATS
// user of its role with that user's password.
func checkPod(where string, spec corev1.PodSpec, o objects, users map[string]string) []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(where+": "+format, args...)) }
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		add("automountServiceAccountToken: Sluice never calls the Kubernetes API")
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
		if v.Secret != nil {
			s, ok := o.secrets[v.Secret.SecretName]
			if !ok {
				add("volume %s: no Secret %q in the render", v.Name, v.Secret.SecretName)
			}
			for _, it := range v.Secret.Items {
				if ok && !hasKey(s, it.Key) {
					add("volume %s: Secret %q has no key %q", v.Name, v.Secret.SecretName, it.Key)
				}
			}
		}
		if v.EmptyDir != nil && v.EmptyDir.SizeLimit == nil {
			add("volume %s: emptyDir without sizeLimit", v.Name)
		}
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		nonRoot := cmpOr(sc.RunAsNonRoot, psc.RunAsNonRoot)
		user := cmpOr(sc.RunAsUser, psc.RunAsUser)
		seccomp := sc.SeccompProfile
		if seccomp == nil {
			seccomp = psc.SeccompProfile
		}
		switch {
		case nonRoot == nil || !*nonRoot:
			add("container %s: runAsNonRoot is not true", c.Name)
		case user == nil || *user != uid:
			add("container %s: runAsUser %v, want %d (the image's nonroot user, owner of /data)", c.Name, user, uid)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			add("container %s: readOnlyRootFilesystem is not true", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			add("container %s: allowPrivilegeEscalation is not false", c.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			add("container %s: capabilities must drop ALL and add none", c.Name)
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			add("container %s: seccomp profile is not RuntimeDefault", c.Name)
		}
		r := c.Resources
		if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() {
			add("container %s: cpu and memory requests must be set", c.Name)
		}
		if r.Limits.Memory().IsZero() {
			add("container %s: no memory limit (GOMEMLIMIT is 90%% of it)", c.Name)
		} else if r.Requests.Memory().Cmp(*r.Limits.Memory()) > 0 {
			add("container %s: memory request above the limit", c.Name)
		}
		if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
			add("container %s: image %q has no pinned tag (set it in the overlay's images)", c.Name, c.Image)
		}
		mounts := map[string]bool{}
		for _, m := range c.VolumeMounts {
			mounts[m.MountPath] = true
			if _, ok := volumes[m.Name]; !ok {
				add("container %s: mount %s of volume %q, which the pod does not have", c.Name, m.MountPath, m.Name)
			}
		}
		if e, _ := env(c, "SLUICE_DATA_DIR"); !mounts[e.Value] {
			add("container %s: SLUICE_DATA_DIR %q is not a mounted volume (the root file system is read-only)", c.Name, e.Value)
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if ref := e.ValueFrom.SecretKeyRef; ref != nil {
				s, ok := o.secrets[ref.Name]
				switch {
				case !ok:
					add("container %s: env %s: no Secret %q in the render", c.Name, e.Name, ref.Name)
				case !hasKey(s, ref.Key):
					add("container %s: env %s: Secret %q has no key %q", c.Name, e.Name, ref.Name, ref.Key)
				}
			}
			if e.ValueFrom.ConfigMapKeyRef != nil {
				add("container %s: env %s from a ConfigMap none of these manifests makes", c.Name, e.Name)
			}
		}
		wantUser := map[string]string{"api": "sluice-api", "worker": "sluice-worker", "provision": "sluice-operator"}[component(c)]
		u, _ := env(c, "NATS_USER")
		pw, _ := env(c, "NATS_PASSWORD")
		switch {
		case u.Value != wantUser:
			add("container %s: NATS_USER %q, want %q for %q", c.Name, u.Value, wantUser, component(c))
		case users[u.Value] == "":
			add("container %s: NATS user %q is not in %s", c.Name, u.Value, permissionsFile)
		case pw.ValueFrom == nil || pw.ValueFrom.SecretKeyRef == nil || pw.ValueFrom.SecretKeyRef.Key != users[u.Value]:
			add("container %s: NATS_PASSWORD must be the Secret key %s, the password of %s in %s", c.Name, users[u.Value], u.Value, permissionsFile)
		}
		if e, _ := env(c, "NATS_URL"); !strings.HasPrefix(e.Value, "nats://") {
			add("container %s: NATS_URL %q: want the NATS release's client Service", c.Name, e.Value)
		}
	}
	return errs
}

func cmpOr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

func checkJob(j batchv1.Job, o objects, users map[string]string, want expect) []error {
	where := "Job/" + j.Name
	errs := checkPod(where, j.Spec.Template.Spec, o, users)
	for _, c := range j.Spec.Template.Spec.Containers {
		if component(c) != "provision" {
			errs = append(errs, fmt.Errorf("%s: runs %q, want provision", where, c.Args))
		}
		if e, _ := env(c, "SLUICE_STREAM_REPLICAS"); e.Value != want.streamReplicas {
			errs = append(errs, fmt.Errorf("%s: SLUICE_STREAM_REPLICAS %q, want %q", where, e.Value, want.streamReplicas))
		}
	}
	if j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyOnFailure && j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		errs = append(errs, fmt.Errorf("%s: restartPolicy %q", where, j.Spec.Template.Spec.RestartPolicy))
	}
	return errs
}

// podsMatching returns the pod templates (with their containers) that selector sel picks.
func podsMatching(o objects, sel labels.Selector) []corev1.PodTemplateSpec {
	var out []corev1.PodTemplateSpec
	for _, d := range o.deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			out = append(out, d.Spec.Template)
		}
	}
	for _, j := range o.jobs {
		if sel.Matches(labels.Set(j.Spec.Template.Labels)) {
			out = append(out, j.Spec.Template)
		}
	}
	return out
}

// checkServices: each Service selects pods, and each of its named target ports is a port of
// every pod it selects that serves (Deployments).
func checkServices(o objects) []error {
	var errs []error
	for _, s := range o.services {
		where := "Service/" + s.Name
		if s.Spec.Type != "" && s.Spec.Type != corev1.ServiceTypeClusterIP {
			errs = append(errs, fmt.Errorf("%s: type %s: nothing of Sluice is exposed outside the cluster but through an ingress", where, s.Spec.Type))
		}
		pods := podsMatching(o, labels.SelectorFromSet(s.Spec.Selector))
		if len(s.Spec.Selector) == 0 || len(pods) == 0 {
			errs = append(errs, fmt.Errorf("%s: selects no pod", where))
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type != intstr.String {
				errs = append(errs, fmt.Errorf("%s: targetPort %s: name the container port", where, p.TargetPort.String()))
				continue
			}
			for _, pod := range pods {
				found := slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool {
					return slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == p.TargetPort.StrVal })
				})
				if !found {
					errs = append(errs, fmt.Errorf("%s: targetPort %q is no port of the pods labelled %v", where, p.TargetPort.StrVal, pod.Labels))
				}
			}
		}
	}
	return errs
}

// checkPDBs: every Deployment has a PodDisruptionBudget, and each budget lets at least one pod
// go (a budget that allows none blocks every node drain).
func checkPDBs(o objects) []error {
	var errs []error
	for _, d := range o.deployments {
		n := 0
		for _, p := range o.pdbs {
			sel, err := metav1LabelSelector(p.Spec.Selector)
			if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				continue
			}
			n++
			where := "PodDisruptionBudget/" + p.Name
			replicas := minReplicas(o, d)
			switch {
			case p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable != nil:
				errs = append(errs, fmt.Errorf("%s: both minAvailable and maxUnavailable", where))
			case p.Spec.MinAvailable != nil && (p.Spec.MinAvailable.Type != intstr.Int || p.Spec.MinAvailable.IntVal >= replicas):
				errs = append(errs, fmt.Errorf("%s: minAvailable %s leaves none of %d replicas of %s to evict", where, p.Spec.MinAvailable.String(), replicas, d.Name))
			case p.Spec.MaxUnavailable != nil && (p.Spec.MaxUnavailable.Type != intstr.Int || p.Spec.MaxUnavailable.IntVal < 1):
				errs = append(errs, fmt.Errorf("%s: maxUnavailable %s lets no pod of %s go", where, p.Spec.MaxUnavailable.String(), d.Name))
			case p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil:
				errs = append(errs, fmt.Errorf("%s: neither minAvailable nor maxUnavailable", where))
			}
		}
		if n != 1 {
			errs = append(errs, fmt.Errorf("Deployment/%s: %d PodDisruptionBudgets select it, want 1", d.Name, n))
		}
	}
	return errs
}

// checkNetworkPolicies: a default deny for the namespace, and rules that let through exactly
// the traffic Sluice needs: egress to DNS, NATS, PostgreSQL and AstraDB; ingress to the API
// port and the ops port.
func checkNetworkPolicies(o objects) []error {
	var errs []error
	deny := slices.ContainsFunc(o.policies, func(p networkingv1.NetworkPolicy) bool {
		return len(p.Spec.PodSelector.MatchLabels) == 0 && len(p.Spec.PodSelector.MatchExpressions) == 0 &&
			slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) && slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) &&
			len(p.Spec.Ingress) == 0 && len(p.Spec.Egress) == 0
	})
	if !deny {
		errs = append(errs, fmt.Errorf("NetworkPolicy: no default-deny policy (empty podSelector, Ingress and Egress, no rules)"))
	}
	egress, ingress := map[string]bool{}, map[string]bool{}
	for _, p := range o.policies {
		for _, r := range p.Spec.Egress {
			for _, port := range r.Ports {
				egress[portKey(port)] = true
			}
		}
		for _, r := range p.Spec.Ingress {
			for _, port := range r.Ports {
				ingress[portKey(port)] = true
			}
		}
	}
	for _, k := range []string{"UDP 53", "TCP 53", "TCP 4222", "TCP 5432", "TCP 443"} {
		if !egress[k] {
			errs = append(errs, fmt.Errorf("NetworkPolicy: no egress to %s", k))
		}
	}
	for _, k := range []string{"TCP 8080", fmt.Sprintf("TCP %d", opsPort)} {
		if !ingress[k] {
			errs = append(errs, fmt.Errorf("NetworkPolicy: no ingress to %s", k))
		}
	}
	return errs
}

func portKey(p networkingv1.NetworkPolicyPort) string {
	proto := corev1.ProtocolTCP
	if p.Protocol != nil {
		proto = *p.Protocol
	}
	port := "any"
	if p.Port != nil {
		port = p.Port.String()
	}
	return string(proto) + " " + port
}

// checkScaledObjects: when the overlay autoscales, one ScaledObject scales the worker
// Deployment on the chunk consumer's lag with KEDA's nats-jetstream trigger.
func checkScaledObjects(o objects, want expect) []error {
	if !want.keda {
		if len(o.scaledObjects) > 0 {
			return []error{fmt.Errorf("ScaledObject in an overlay without autoscaling")}
		}
		return nil
	}
	if len(o.scaledObjects) != 1 {
		return []error{fmt.Errorf("want one ScaledObject, got %d", len(o.scaledObjects))}
	}
	s := o.scaledObjects[0]
	where := "ScaledObject/" + s.Metadata.Name
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(where+": "+format, args...)) }
	ref := s.Spec.ScaleTargetRef
	target := slices.IndexFunc(o.deployments, func(d appsv1.Deployment) bool { return d.Name == ref.Name })
	switch {
	case ref.Kind != "" && ref.Kind != "Deployment", ref.APIVersion != "" && ref.APIVersion != "apps/v1":
		add("scales a %s %s, want a Deployment", ref.APIVersion, ref.Kind)
	case target < 0:
		add("scales Deployment %q, which is not in the render", ref.Name)
	case component(o.deployments[target].Spec.Template.Spec.Containers[0]) != "worker":
		add("scales Deployment %q, which does not run sluice worker", ref.Name)
	}
	lo, hi := s.Spec.MinReplicaCount, s.Spec.MaxReplicaCount
	if lo == nil || hi == nil || *lo < 2 || *hi < *lo {
		add("minReplicaCount and maxReplicaCount must be set, 2 <= min <= max")
	}
	if len(s.Spec.Triggers) != 1 {
		add("want one trigger, got %d", len(s.Spec.Triggers))
		return errs
	}
	tr := s.Spec.Triggers[0]
	if tr.Type != "nats-jetstream" {
		add("trigger type %q, want nats-jetstream", tr.Type)
	}
	for k := range tr.Metadata {
		if !slices.Contains(natsJetStreamKeys, k) {
			add("trigger metadata %q is not a key of the nats-jetstream scaler (%v)", k, natsJetStreamKeys)
		}
	}
	md := tr.Metadata
	if md["stream"] != schemas.StreamChunks {
		add("stream %q, want %q", md["stream"], schemas.StreamChunks)
	}
	if md["consumer"] != jetstream.ConsumerChunks {
		add("consumer %q, want %q", md["consumer"], jetstream.ConsumerChunks)
	}
	if md["account"] != "$G" {
		add("account %q: permissions.conf defines users in the global account, $G", md["account"])
	}
	if n, err := strconv.Atoi(md["lagThreshold"]); err != nil || n <= 0 {
		add("lagThreshold %q is not a positive number", md["lagThreshold"])
	}
	if !strings.HasSuffix(md["natsServerMonitoringEndpoint"], ":8222") {
		add("natsServerMonitoringEndpoint %q: want the NATS monitoring port, 8222", md["natsServerMonitoringEndpoint"])
	}
	return errs
}

// metav1LabelSelector turns a label selector into a labels.Selector; a nil one selects nothing.
func metav1LabelSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return labels.Nothing(), nil
	}
	return metav1.LabelSelectorAsSelector(s)
}
