package deploy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v4"

	"pesto/shared/config"
)

const (
	composeFile      = "../compose.yaml"
	composeBuildFile = "../compose.build.yaml"
	envExample       = "../.env.example"
)

// loadCompose loads compose.yaml as `docker compose` does, with only the
// given env files (none: the defaults written in compose.yaml) and profiles.
func loadCompose(t *testing.T, envFiles []string, profiles ...string) *types.Project {
	t.Helper()
	return loadComposeFiles(t, []string{composeFile}, nil, envFiles, profiles...)
}

// loadComposeFiles loads compose files as `docker compose -f … -f …` does,
// with the environment env ("NAME=value") and env files given, and
// nothing else of this process's environment.
func loadComposeFiles(t *testing.T, files, env, envFiles []string, profiles ...string) *types.Project {
	t.Helper()
	opts := []cli.ProjectOptionsFn{cli.WithName("pesto"), cli.WithEnv(env)}
	if len(envFiles) > 0 {
		opts = append(opts, cli.WithEnvFiles(envFiles...), cli.WithDotEnv)
	}
	opts = append(opts, cli.WithDefaultProfiles(profiles...))
	o, err := cli.NewProjectOptions(files, opts...)
	if err != nil {
		t.Fatal(err)
	}
	p, err := o.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load %v: %v", files, err)
	}
	return p
}

// published maps the stack's services to the images of this repository
// they run (images: dockerfile_test.go).
var published = map[string]image{"auth": images[0], "registration": images[1], "api": images[2]}

// registry is where the release workflow publishes the images.
const registry = "ghcr.io/teknologi-umum/"

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("service %s: %v", name, err)
	}
	return s
}

// TestComposeStack checks the wiring the stack relies on, with no .env (the
// defaults of compose.yaml) and with .env.example.
func TestComposeStack(t *testing.T) {
	for _, tc := range []struct {
		name     string
		envFiles []string
	}{
		{"defaults", nil},
		{".env.example", []string{envExample}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkStack(t, loadCompose(t, tc.envFiles))
		})
	}
}

func checkStack(t *testing.T, p *types.Project) {
	if got, want := p.ServiceNames(), []string{"api", "auth", "gateway", "redis", "registration"}; !sameSet(got, want) && !sameSet(got, append(want, "mailcatcher")) {
		t.Errorf("services = %v, want %v (and mailcatcher in profile dev)", got, want)
	}

	// Networks: Redis only on the internal one.
	if !p.Networks["backend"].Internal {
		t.Errorf("network backend is not internal")
	}
	if p.Networks["frontend"].Internal {
		t.Errorf("network frontend is internal: the gateway could not publish")
	}
	wantNetworks := map[string][]string{
		"redis":        {"backend"},
		"auth":         {"backend", "frontend"},
		"registration": {"backend", "frontend"},
		"gateway":      {"frontend"},
		"api":          {"frontend"},
	}
	for name, want := range wantNetworks {
		if got := keys(service(t, p, name).Networks); !sameSet(got, want) {
			t.Errorf("%s networks = %v, want %v", name, got, want)
		}
	}

	// Published ports: the gateway, and registration's admin on loopback.
	for _, name := range []string{"redis", "auth", "api"} {
		if s := service(t, p, name); len(s.Ports) != 0 || len(s.Expose) != 0 {
			t.Errorf("%s publishes %v %v, want nothing", name, s.Ports, s.Expose)
		}
	}
	gw := service(t, p, "gateway")
	if len(gw.Ports) != 1 || gw.Ports[0].Target != 80 || gw.Ports[0].Published == "" {
		t.Errorf("gateway ports = %+v, want one port to 80", gw.Ports)
	}
	reg := service(t, p, "registration")
	if len(reg.Ports) != 1 || reg.Ports[0].HostIP != "127.0.0.1" || reg.Ports[0].Target != 3000 {
		t.Errorf("registration ports = %+v, want only 127.0.0.1:<port>:3000 (admin from the host)", reg.Ports)
	}

	// auth: two replicas.
	auth := service(t, p, "auth")
	if auth.Deploy == nil || auth.Deploy.Replicas == nil {
		t.Errorf("auth has no replicas, want 2")
	} else if got, want := *auth.Deploy.Replicas, 2; got != want {
		t.Errorf("auth replicas = %d, want %d", got, want)
	}
	if auth.ContainerName != "" {
		t.Errorf("auth has container_name %q: replicas need none", auth.ContainerName)
	}

	// Healthchecks: exec form, the images' own binaries (the Go images
	// have no shell).
	wantHealth := map[string][]string{
		"auth":         {"CMD", "/auth", "healthcheck"},
		"registration": {"CMD", "/registration", "healthcheck"},
		"gateway":      {"CMD", "/bin/sh", "/etc/traefik/liveness.sh"},
		"api":          {"CMD", "/demo-api", "healthcheck"},
	}
	for name, want := range wantHealth {
		s := service(t, p, name)
		if s.HealthCheck == nil || !slices.Equal([]string(s.HealthCheck.Test), want) {
			t.Errorf("%s healthcheck = %v, want %v", name, s.HealthCheck, want)
		}
	}
	rh := service(t, p, "redis").HealthCheck
	if rh == nil || len(rh.Test) != 2 || rh.Test[0] != "CMD-SHELL" || !strings.Contains(rh.Test[1], "redis-cli ping | grep -q PONG") {
		t.Errorf("redis healthcheck = %v, want redis-cli ping checked for PONG", rh)
	}

	// Start order: on healthy dependencies.
	wantDeps := map[string]map[string]string{
		"auth":         {"redis": types.ServiceConditionHealthy},
		"registration": {"redis": types.ServiceConditionHealthy},
		"gateway": {
			"auth":         types.ServiceConditionHealthy,
			"registration": types.ServiceConditionHealthy,
			"api":          types.ServiceConditionStarted,
		},
	}
	for name, want := range wantDeps {
		got := map[string]string{}
		for dep, d := range service(t, p, name).DependsOn {
			got[dep] = d.Condition
		}
		if !maps.Equal(got, want) {
			t.Errorf("%s depends_on = %v, want %v", name, got, want)
		}
	}

	// Memory limits and restart policies everywhere.
	wantMemory := map[string]int64{"auth": 32 << 20, "registration": 32 << 20, "gateway": 320 << 20, "api": 16 << 20, "redis": 256 << 20}
	for _, s := range p.Services {
		if s.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s restart = %q, want unless-stopped", s.Name, s.Restart)
		}
		if s.Deploy == nil || s.Deploy.Resources.Limits == nil || s.Deploy.Resources.Limits.MemoryBytes == 0 {
			t.Errorf("%s has no memory limit", s.Name)
			continue
		}
		if want, ok := wantMemory[s.Name]; ok {
			if got := int64(s.Deploy.Resources.Limits.MemoryBytes); got != want {
				t.Errorf("%s memory limit = %d, want %d", s.Name, got, want)
			}
		}
	}

	// Redis: the production config, the AOF on a volume.
	redis := service(t, p, "redis")
	if !slices.Contains([]string(redis.Command), "/usr/local/etc/redis/redis.conf") {
		t.Errorf("redis command = %v, want it to load redis.conf", redis.Command)
	}
	var confMounted, dataVolume bool
	for _, v := range redis.Volumes {
		confMounted = confMounted || (v.Type == types.VolumeTypeBind && strings.HasSuffix(v.Source, "docker/redis/redis.conf") && v.Target == "/usr/local/etc/redis/redis.conf" && v.ReadOnly)
		dataVolume = dataVolume || (v.Type == types.VolumeTypeVolume && v.Source == "redis-data" && v.Target == "/data")
	}
	if !confMounted || !dataVolume {
		t.Errorf("redis volumes = %+v, want redis.conf read-only and the volume redis-data on /data", redis.Volumes)
	}

	// The services' environment is valid for the services themselves.
	for _, name := range []string{"auth", "registration"} {
		s := service(t, p, name)
		e := config.New(func(k string) (string, bool) {
			v, ok := s.Environment[k]
			if !ok || v == nil {
				return "", false
			}
			return *v, true
		})
		c := config.LoadCommon(e)
		if err := e.Err(); err != nil {
			t.Errorf("%s environment: %v", name, err)
		}
		if got, want := c.Port, 3000; got != want {
			t.Errorf("%s PORT = %d, want %d", name, got, want)
		}
		if got, want := c.Redis.InitAddress, []string{"redis:6379"}; !slices.Equal(got, want) {
			t.Errorf("%s Redis address = %v, want %v", name, got, want)
		}
	}
	// A new install meters trial keys too (issue 11): empty, not unset (the
	// binary's default is the old services' pattern).
	if v := auth.Environment["UNMETERED_EMAILS"]; v == nil || *v != "" {
		t.Errorf("auth UNMETERED_EMAILS = %v, want set and empty", v)
	}

	checkGateway(t, p)
}

// TestComposePullsPublishedImages: a fresh clone's `docker compose up`
// pulls auth, registration and the demo API, at PESTO_VERSION (edge by
// default, and in .env.example), and builds one from the checkout only when
// it cannot be pulled (a service with image and build, and no pull_policy:
// Compose pulls first); the names are never the old services' images
// (ghcr.io/teknologi-umum/pesto-auth, …).
func TestComposePullsPublishedImages(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      []string
		envFiles []string
		tag      string
	}{
		{"defaults", nil, nil, "edge"},
		{".env.example", nil, []string{envExample}, "edge"},
		{"PESTO_VERSION=1.4.2", []string{"PESTO_VERSION=1.4.2"}, nil, "1.4.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := loadComposeFiles(t, []string{composeFile}, tc.env, tc.envFiles, "dev")
			for _, s := range p.Services {
				if s.PullPolicy != "" && s.PullPolicy != types.PullPolicyMissing {
					t.Errorf("%s pull_policy = %q, want unset: pulled, built only when it cannot be", s.Name, s.PullPolicy)
				}
				if _, ours := published[s.Name]; ours != (s.Build != nil) {
					t.Errorf("%s build = %v: only auth, registration and the demo API build, as a fallback", s.Name, s.Build)
				}
				if s.Image == "" {
					t.Errorf("%s has no image", s.Name)
				}
			}
			for name, img := range published {
				if got, want := service(t, p, name).Image, registry+img.published+":"+tc.tag; got != want {
					t.Errorf("%s image = %q, want %q", name, got, want)
				}
			}
		})
	}
	for _, old := range []string{"pesto-auth", "pesto-registration", "pesto-rce", "pesto-landing", "pesto-redis"} {
		for _, img := range images {
			if img.published == old {
				t.Errorf("%s is published as %s, an image of the old services", img.name, old)
			}
		}
	}
}

// TestComposeBuildOverride: compose.build.yaml builds the three images from
// the checkout, with their Dockerfiles, under local names no registry is
// asked for, and changes nothing else.
func TestComposeBuildOverride(t *testing.T) {
	base := loadComposeFiles(t, []string{composeFile}, nil, nil, "dev")
	p := loadComposeFiles(t, []string{composeFile, composeBuildFile}, nil, nil, "dev")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Services {
		img, ours := published[s.Name]
		if !ours {
			if b := service(t, base, s.Name); s.Image != b.Image || s.Build != nil {
				t.Errorf("%s: image %q build %v, want compose.yaml's %q", s.Name, s.Image, s.Build, b.Image)
			}
			continue
		}
		if s.Build == nil {
			t.Errorf("%s does not build", s.Name)
			continue
		}
		dockerfile := "docker/" + img.name + ".Dockerfile"
		if s.Build.Context != root || s.Build.Dockerfile != dockerfile {
			t.Errorf("%s builds %s in %s, want %s in %s", s.Name, s.Build.Dockerfile, s.Build.Context, dockerfile, root)
		}
		if _, err := os.Stat(filepath.Join(root, dockerfile)); err != nil {
			t.Error(err)
		}
		if got, want := s.Image, img.published+":local"; got != want {
			t.Errorf("%s image = %q, want %q (a local name, not the published one)", s.Name, got, want)
		}
		if s.PullPolicy != types.PullPolicyBuild {
			t.Errorf("%s pull_policy = %q, want build (never pulled by its local name)", s.Name, s.PullPolicy)
		}
		// The rest of the service is compose.yaml's.
		b := service(t, base, s.Name)
		s.Image, s.Build, s.PullPolicy, s.CustomLabels = b.Image, b.Build, b.PullPolicy, b.CustomLabels
		if !reflect.DeepEqual(s, b) {
			t.Errorf("%s differs from compose.yaml's beyond image and build", s.Name)
		}
	}
}

// TestDotEnvIgnored: .env holds ADMIN_JWT_SECRET (the README's
// cp .env.example .env); git ignores it, and not .env.example.
func TestDotEnvIgnored(t *testing.T) {
	for file, want := range map[string]bool{".env": true, ".env.example": false} {
		cmd := exec.Command("git", "check-ignore", "-q", file)
		cmd.Dir = ".."
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil && !want:
			t.Errorf("git ignores %s", file)
		case errors.As(err, &exit) && exit.ExitCode() == 1 && want:
			t.Errorf("git does not ignore %s", file)
		case err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1):
			t.Fatalf("git check-ignore %s: %v", file, err)
		}
	}
}

// TestComposeProfileDev checks that the mail catcher runs only in profile
// dev, and that .env.example points registration at it.
func TestComposeProfileDev(t *testing.T) {
	if p := loadCompose(t, nil); slices.Contains(p.ServiceNames(), "mailcatcher") {
		t.Errorf("mailcatcher runs without profile dev")
	}
	p := loadCompose(t, nil, "dev")
	mc := service(t, p, "mailcatcher")
	if !slices.Equal(mc.Profiles, []string{"dev"}) {
		t.Errorf("mailcatcher profiles = %v, want [dev]", mc.Profiles)
	}
	for _, port := range mc.Ports {
		if port.HostIP != "127.0.0.1" {
			t.Errorf("mailcatcher publishes %+v beyond loopback", port)
		}
	}
	// Mailpit from v1.34 (a crafted message crashed the SMTP server of
	// earlier releases); its healthcheck is its own binary's readyz.
	if m := regexp.MustCompile(`^axllent/mailpit:v1\.(\d+)`).FindStringSubmatch(mc.Image); m == nil || atoi(m[1]) < 34 {
		t.Errorf("mailcatcher image = %q, want axllent/mailpit:v1.34 or later", mc.Image)
	}
	if h := mc.HealthCheck; h == nil || !slices.Equal([]string(h.Test), []string{"CMD", "/mailpit", "readyz"}) {
		t.Errorf("mailcatcher healthcheck = %v, want [CMD /mailpit readyz]", h)
	}
	if v := service(t, p, "registration").Environment["SMTP_URL"]; v == nil || *v != "" {
		t.Errorf("registration SMTP_URL by default = %v, want empty", v)
	}

	// .env.example turns profile dev on, with registration's SMTP_URL to
	// the mail catcher.
	p = loadCompose(t, []string{envExample})
	if !slices.Contains(p.ServiceNames(), "mailcatcher") {
		t.Errorf(".env.example does not start the mail catcher")
	}
	if v := service(t, p, "registration").Environment["SMTP_URL"]; v == nil || *v != "smtp://mailcatcher:1025?tls=none" {
		t.Errorf("registration SMTP_URL with .env.example = %v, want smtp://mailcatcher:1025?tls=none", v)
	}
}

// TestEnvExampleDocumentsEveryVariable checks that .env.example names every
// variable of SPEC §5 and every one compose.yaml reads, with a comment.
func TestEnvExampleDocumentsEveryVariable(t *testing.T) {
	b, err := os.ReadFile(envExample)
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	lines := strings.Split(string(b), "\n")
	for i, line := range lines {
		name, _, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "# "), "=")
		if !ok || !regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`).MatchString(name) {
			continue
		}
		// The comment above may cover a group of lines (REGISTER_RATE,
		// TRIAL_RATE).
		j := i - 1
		for j >= 0 && isVarLine.MatchString(lines[j]) {
			j--
		}
		if j < 0 || !strings.HasPrefix(strings.TrimSpace(lines[j]), "#") {
			t.Errorf(".env.example: %s has no comment above it", name)
		}
		documented[name] = true
	}
	spec := []string{
		"PORT", "REDIS_URL", "ENVIRONMENT", "LOG_LEVEL", "SENTRY_DSN", "SHUTDOWN_TIMEOUT",
		"TOKEN_CACHE_TTL", "UNMETERED_EMAILS", "SMTP_URL", "MAIL_FROM", "MAIL_MAX_ATTEMPTS",
		"TRIAL_EMAIL_DOMAIN", "REGISTER_RATE", "TRIAL_RATE", "REGISTER_GLOBAL_RATE", "TRIAL_GLOBAL_RATE",
		"IPV6_RATE_PREFIXES", "TRUSTED_PROXIES", "MAX_BODY_BYTES", "WAITING_LIST_MAX",
		"CORS_ORIGINS", "ADMIN_JWT_SECRET", "ADMIN_JWT_PUBLIC_KEY",
	}
	c, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\$\{([A-Z][A-Z0-9_]*)`).FindAllStringSubmatch(string(c), -1) {
		spec = append(spec, m[1])
	}
	for _, name := range spec {
		if !documented[name] {
			t.Errorf(".env.example does not document %s", name)
		}
	}
}

var isVarLine = regexp.MustCompile(`^[A-Z][A-Z0-9_]*=`)

// dynamicConfig is the part of Traefik's dynamic configuration the stack
// relies on.
type dynamicConfig struct {
	HTTP struct {
		Middlewares map[string]struct {
			ForwardAuth *struct {
				Address             string   `yaml:"address"`
				AuthRequestHeaders  []string `yaml:"authRequestHeaders"`
				AuthResponseHeaders []string `yaml:"authResponseHeaders"`
				TrustForwardHeader  bool     `yaml:"trustForwardHeader"`
				MaxResponseBodySize int64    `yaml:"maxResponseBodySize"`
			} `yaml:"forwardAuth"`
			Plugin map[string]map[string]any `yaml:"plugin"`
		} `yaml:"middlewares"`
		Routers map[string]struct {
			EntryPoints []string `yaml:"entryPoints"`
			Rule        string   `yaml:"rule"`
			Middlewares []string `yaml:"middlewares"`
			Service     string   `yaml:"service"`
			Priority    int      `yaml:"priority"`
		} `yaml:"routers"`
		Services map[string]struct {
			LoadBalancer struct {
				Servers []struct {
					URL string `yaml:"url"`
				} `yaml:"servers"`
			} `yaml:"loadBalancer"`
		} `yaml:"services"`
	} `yaml:"http"`
}

// checkGateway checks Traefik's routes: what each request reaches, by
// evaluating the routers' rules.
func checkGateway(t *testing.T, p *types.Project) {
	gw := service(t, p, "gateway")
	if !strings.HasPrefix(gw.Image, "traefik:v3.") {
		t.Errorf("gateway image = %q, want traefik:v3.x", gw.Image)
	}
	// Its files: the routes, the liveness rule, the admission plugin
	// where Traefik looks for local plugins (./plugins-local/src/<module>,
	// from its working directory).
	targets := map[string]string{}
	for _, c := range gw.Configs {
		targets[c.Source] = c.Target
	}
	wantTargets := map[string]string{
		"traefik-dynamic":    "/etc/traefik/dynamic.yaml",
		"traefik-liveness":   "/etc/traefik/liveness.sh",
		"admission-plugin":   "/plugins-local/src/pesto/admission/admission.go",
		"admission-manifest": "/plugins-local/src/pesto/admission/.traefik.yml",
	}
	if !maps.Equal(targets, wantTargets) {
		t.Fatalf("gateway configs = %v, want %v", targets, wantTargets)
	}
	if gw.WorkingDir != "/" {
		t.Errorf("gateway working_dir = %q, want / (where plugins-local is)", gw.WorkingDir)
	}
	for _, want := range []string{
		"--providers.file.filename=/etc/traefik/dynamic.yaml",
		"--experimental.localplugins.admission.modulename=pesto/admission",
		"--ping=true",
	} {
		if !slices.Contains([]string(gw.Command), want) {
			t.Errorf("gateway command = %v, want %s", gw.Command, want)
		}
	}
	// The liveness rule kills Traefik, which must not be PID 1 for that,
	// and keeps its marker in /tmp.
	if gw.Init == nil || !*gw.Init {
		t.Errorf("gateway init = %v, want true", gw.Init)
	}
	if !slices.Contains(gw.Tmpfs, "/tmp") {
		t.Errorf("gateway tmpfs = %v, want /tmp", gw.Tmpfs)
	}
	if v := gw.Environment["GOMEMLIMIT"]; v == nil || *v == "" {
		t.Errorf("gateway GOMEMLIMIT unset: its Go runtime must know the limit")
	}
	for _, arg := range gw.Command {
		if strings.HasPrefix(arg, "--providers.docker") || strings.HasPrefix(arg, "--api.insecure") {
			t.Errorf("gateway command has %s", arg)
		}
	}
	for _, v := range gw.Volumes {
		if strings.Contains(v.Source, "docker.sock") {
			t.Errorf("gateway mounts the Docker socket")
		}
	}

	// A file: inline content cannot go into the read-only gateway.
	if !gw.ReadOnly {
		t.Errorf("gateway is not read_only")
	}
	file := p.Configs["traefik-dynamic"].File
	if file == "" || p.Configs["traefik-dynamic"].Content != "" {
		t.Fatalf("config traefik-dynamic = %+v, want a file", p.Configs["traefik-dynamic"])
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var dyn dynamicConfig
	if err := yaml.Unmarshal(b, &dyn); err != nil {
		t.Fatalf("traefik-dynamic: %v", err)
	}
	fa := dyn.HTTP.Middlewares["pesto-auth"].ForwardAuth
	if fa == nil {
		t.Fatalf("no forwardAuth middleware pesto-auth")
	}
	if fa.MaxResponseBodySize <= 0 {
		t.Errorf("forwardAuth maxResponseBodySize = %d, want a bound", fa.MaxResponseBodySize)
	}
	adm := dyn.HTTP.Middlewares["pesto-admission"].Plugin["admission"]
	if adm == nil {
		t.Fatalf("no admission plugin middleware pesto-admission")
	}
	if got, want := fa.Address, "http://auth:3000/"; got != want {
		t.Errorf("forwardAuth address = %q, want %q", got, want)
	}
	if !slices.Contains(fa.AuthRequestHeaders, "X-Pesto-Token") {
		t.Errorf("forwardAuth authRequestHeaders = %v, want X-Pesto-Token among them", fa.AuthRequestHeaders)
	}
	if fa.TrustForwardHeader {
		t.Errorf("forwardAuth trusts the client's X-Forwarded-* headers")
	}
	// The quota headers of a 200 reach the API (issue 13).
	for _, h := range []string{"RateLimit", "RateLimit-Policy", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} {
		if !slices.Contains(fa.AuthResponseHeaders, h) {
			t.Errorf("forwardAuth authResponseHeaders = %v, want %s among them", fa.AuthResponseHeaders, h)
		}
	}

	wantServers := map[string]string{"api": "http://api:80", "registration": "http://registration:3000"}
	for name, want := range wantServers {
		s := dyn.HTTP.Services[name].LoadBalancer.Servers
		if len(s) != 1 || s[0].URL != want {
			t.Errorf("service %s servers = %+v, want %s", name, s, want)
		}
	}

	// route returns the service a request reaches and the middlewares on
	// the way (Traefik picks, among the routers that match, the highest
	// priority, which is by default the length of the rule). The real
	// Traefik runs these routes in proxy_test.go.
	route := func(method, path string) (string, []string) {
		best, service, mws := -1, "", []string(nil)
		for name, r := range dyn.HTTP.Routers {
			ok, err := matchRule(r.Rule, method, path)
			if err != nil {
				t.Fatalf("router %s: %v", name, err)
			}
			priority := r.Priority
			if priority == 0 {
				priority = len(r.Rule)
			}
			if ok && priority > best {
				best, service, mws = priority, r.Service, r.Middlewares
			}
		}
		return service, mws
	}
	for name, r := range dyn.HTTP.Routers {
		if !slices.Equal(r.EntryPoints, []string{"web"}) {
			t.Errorf("router %s entryPoints = %v, want [web]", name, r.EntryPoints)
		}
		if r.Service == "api" && !slices.Contains(r.Middlewares, "pesto-auth") {
			t.Errorf("router %s reaches the API without the auth hook", name)
		}
		// Admission first, on every route: before the hook and the services.
		if len(r.Middlewares) == 0 || r.Middlewares[0] != "pesto-admission" {
			t.Errorf("router %s middlewares = %v, want pesto-admission first", name, r.Middlewares)
		}
		if _, ok := dyn.HTTP.Services[r.Service]; !ok {
			t.Errorf("router %s: no service %q", name, r.Service)
		}
	}
	tests := []struct {
		method, path string
		want         string // service; "" for none (404)
	}{
		{"POST", "/api/execute", "api"},
		{"GET", "/api/list-runtimes", "api"},
		{"GET", "/api/ping", "api"},
		{"GET", "/api/execute/x", "api"},
		{"GET", "/", "registration"},
		{"HEAD", "/", "registration"},
		{"POST", "/api/register", "registration"},
		{"POST", "/api/trial", "registration"},
		{"OPTIONS", "/api/register", "registration"},
		{"GET", "/api/pending", ""},
		{"PUT", "/api/approve", ""},
		{"PUT", "/api/revoke", ""},
		{"PUT", "/api/reject", ""},
		{"PUT", "/api/rotate", ""},
		{"GET", "/api/usage", "auth"},
		{"HEAD", "/api/usage", "auth"},
		{"GET", "/api/approve", ""},
		{"POST", "/api/approve", ""},
		{"GET", "/healthz", ""},
		{"GET", "/metrics", ""},
		{"POST", "/", ""},
	}
	for _, tt := range tests {
		got, mws := route(tt.method, tt.path)
		if got != tt.want {
			t.Errorf("%s %s reaches %q, want %q", tt.method, tt.path, got, tt.want)
		}
		if got == "api" && !slices.Equal(mws, []string{"pesto-admission", "pesto-auth"}) {
			t.Errorf("%s %s passes %v, want [pesto-admission pesto-auth]", tt.method, tt.path, mws)
		}
	}
}

// matchRule evaluates a Traefik v3 rule made of Path, PathPrefix and Method
// matchers, &&, ||, ! and parentheses. Any other matcher is an error, so
// that a rule this test cannot judge fails instead of passing.
func matchRule(rule, method, path string) (bool, error) {
	r := &ruleParser{s: rule, method: method, path: path}
	v, err := r.or()
	if err == nil && strings.TrimSpace(r.s[r.i:]) != "" {
		err = r.errorf("trailing %q", r.s[r.i:])
	}
	return v, err
}

type ruleParser struct {
	s            string
	i            int
	method, path string
}

func (r *ruleParser) errorf(format string, args ...any) error {
	return fmt.Errorf("rule %s: "+format, append([]any{r.s}, args...)...)
}

func (r *ruleParser) skip() {
	for r.i < len(r.s) && r.s[r.i] == ' ' {
		r.i++
	}
}

func (r *ruleParser) eat(tok string) bool {
	r.skip()
	if strings.HasPrefix(r.s[r.i:], tok) {
		r.i += len(tok)
		return true
	}
	return false
}

func (r *ruleParser) or() (bool, error) {
	v, err := r.and()
	for err == nil && r.eat("||") {
		var w bool
		w, err = r.and()
		v = v || w
	}
	return v, err
}

func (r *ruleParser) and() (bool, error) {
	v, err := r.unary()
	for err == nil && r.eat("&&") {
		var w bool
		w, err = r.unary()
		v = v && w
	}
	return v, err
}

var matcher = regexp.MustCompile("^([A-Za-z]+)\\(`([^`]*)`\\)")

func (r *ruleParser) unary() (bool, error) {
	if r.eat("!") {
		v, err := r.unary()
		return !v, err
	}
	if r.eat("(") {
		v, err := r.or()
		if err == nil && !r.eat(")") {
			err = r.errorf("missing )")
		}
		return v, err
	}
	r.skip()
	m := matcher.FindStringSubmatch(r.s[r.i:])
	if m == nil {
		return false, r.errorf("want a matcher at %q", r.s[r.i:])
	}
	r.i += len(m[0])
	switch m[1] {
	case "Path":
		return r.path == m[2], nil
	case "PathPrefix":
		return strings.HasPrefix(r.path, m[2]), nil
	case "Method":
		return r.method == m[2], nil
	}
	return false, r.errorf("matcher %s: this test cannot judge it", m[1])
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	sort.Strings(a)
	sort.Strings(b)
	return slices.Equal(a, b)
}
