package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/rhysd/actionlint"
	"go.yaml.in/yaml/v4"
)

const (
	workflowsDir   = "../.github/workflows"
	releaseFile    = workflowsDir + "/release.yml"
	dependabotFile = "../.github/dependabot.yml"
)

// TestWorkflowsLint runs actionlint on every workflow, with shellcheck on
// their run: scripts, as `actionlint` would in the repository; any finding
// fails.
func TestWorkflowsLint(t *testing.T) {
	shellcheck := lookTool(t, "shellcheck")
	files, err := filepath.Glob(workflowsDir + "/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no workflows in %s (%v)", workflowsDir, err)
	}
	var out bytes.Buffer
	l, err := actionlint.NewLinter(&out, &actionlint.LinterOptions{Shellcheck: shellcheck})
	if err != nil {
		t.Fatal(err)
	}
	errs, err := l.LintFiles(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) > 0 {
		t.Errorf("actionlint: %d findings:\n%s", len(errs), out.String())
	}
}

// step and job are the parts of a workflow this test reads.
type step struct {
	ID   string            `yaml:"id"`
	Name string            `yaml:"name"`
	Uses string            `yaml:"uses"`
	Run  string            `yaml:"run"`
	With map[string]string `yaml:"with"`
	Env  map[string]string `yaml:"env"`
}

type job struct {
	Needs       any               `yaml:"needs"`
	Container   string            `yaml:"container"`
	Permissions map[string]string `yaml:"permissions"`
	Strategy    struct {
		Matrix struct {
			Image []struct {
				Name       string `yaml:"name"`
				Dockerfile string `yaml:"dockerfile"`
			} `yaml:"image"`
		} `yaml:"matrix"`
	} `yaml:"strategy"`
	Steps []step `yaml:"steps"`
}

type workflow struct {
	On struct {
		Push struct {
			Branches []string `yaml:"branches"`
			Tags     []string `yaml:"tags"`
		} `yaml:"push"`
	} `yaml:"on"`
	Permissions map[string]string `yaml:"permissions"`
	Jobs        map[string]job    `yaml:"jobs"`
}

func (j job) step(t *testing.T, match func(step) bool, what string) step {
	t.Helper()
	i := slices.IndexFunc(j.Steps, match)
	if i < 0 {
		t.Fatalf("no step %s", what)
	}
	return j.Steps[i]
}

func uses(action string) func(step) bool {
	return func(s step) bool { return strings.HasPrefix(s.Uses, action+"@") }
}

// TestReleaseWorkflow checks what the release promises (README, Deploy:
// Releases): on main and version tags, the tests first; each of this
// repository's images for amd64 and arm64, pushed with an SBOM and
// provenance, signed by digest; actions pinned to commits.
func TestReleaseWorkflow(t *testing.T) {
	b, err := os.ReadFile(releaseFile)
	if err != nil {
		t.Fatal(err)
	}
	var w workflow
	if err := yaml.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(w.On.Push.Branches, []string{"main"}) || len(w.On.Push.Tags) == 0 {
		t.Errorf("on push: branches %v, tags %v; want main and version tags", w.On.Push.Branches, w.On.Push.Tags)
	}
	if len(w.Permissions) != 1 || w.Permissions["contents"] != "read" {
		t.Errorf("workflow permissions = %v, want contents: read only (jobs ask for more)", w.Permissions)
	}

	// Every action pinned to a full commit, its release named beside it.
	pinned := regexp.MustCompile(`^\s*-?\s*uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$`)
	n := 0
	for i, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "uses:") && !strings.HasPrefix(strings.TrimSpace(line), "#") {
			n++
			if !pinned.MatchString(line) {
				t.Errorf("release.yml:%d: %q is not pinned to a commit with its version (# vX.Y.Z)", i+1, strings.TrimSpace(line))
			}
		}
	}
	if n == 0 {
		t.Errorf("no uses: lines found")
	}

	test, ok := w.Jobs["test"]
	if !ok {
		t.Fatalf("no job test")
	}
	test.step(t, func(s step) bool { return strings.Contains(s.Run, "bash .ci/run test test-arm64") }, "running .ci/run test test-arm64")

	img, ok := w.Jobs["images"]
	if !ok {
		t.Fatalf("no job images")
	}
	if img.Needs != "test" {
		t.Errorf("images needs %v, want test (no image without the tests)", img.Needs)
	}
	for k, v := range map[string]string{"packages": "write", "id-token": "write", "contents": "read"} {
		if img.Permissions[k] != v {
			t.Errorf("images permissions %s = %q, want %s", k, img.Permissions[k], v)
		}
	}
	var matrix []string
	for _, m := range img.Strategy.Matrix.Image {
		matrix = append(matrix, m.Name+" "+m.Dockerfile)
	}
	var want []string
	for _, i := range images {
		want = append(want, i.published+" docker/"+i.name+".Dockerfile")
	}
	if !sameSet(matrix, want) {
		t.Errorf("images matrix = %v, want %v", matrix, want)
	}

	build := img.step(t, uses("docker/build-push-action"), "docker/build-push-action")
	for k, v := range map[string]string{
		"platforms":  "linux/amd64,linux/arm64",
		"push":       "true",
		"sbom":       "true",
		"provenance": "mode=max",
		"file":       "${{ matrix.image.dockerfile }}",
		"context":    ".",
	} {
		if build.With[k] != v {
			t.Errorf("build-push-action %s = %q, want %q", k, build.With[k], v)
		}
	}
	meta := img.step(t, uses("docker/metadata-action"), "docker/metadata-action")
	for _, tag := range []string{"type=edge,branch=main", "type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}", "type=sha"} {
		if !strings.Contains(meta.With["tags"], tag) {
			t.Errorf("metadata-action tags lack %s:\n%s", tag, meta.With["tags"])
		}
	}
	if meta.With["flavor"] != "latest=false" {
		t.Errorf("metadata-action flavor = %q, want latest=false (no floating latest: edge or a version)", meta.With["flavor"])
	}
	sign := img.step(t, func(s step) bool { return strings.Contains(s.Run, "cosign sign --yes") }, "cosign sign")
	if sign.Env["DIGEST"] != "${{ steps."+build.ID+".outputs.digest }}" || !strings.Contains(sign.Run, `"${IMAGE}@${DIGEST}"`) {
		t.Errorf("cosign signs %q with env %v, want the pushed digest", sign.Run, sign.Env)
	}
	if i, j := slices.IndexFunc(img.Steps, uses("sigstore/cosign-installer")), slices.IndexFunc(img.Steps, uses("docker/build-push-action")); i < j {
		t.Errorf("cosign is installed before the build, want after (a failed build signs nothing)")
	}
}

// TestDependabot: updates for every Go module of go.work, the Dockerfiles'
// and compose.yaml's images, and the workflows' actions.
func TestDependabot(t *testing.T) {
	b, err := os.ReadFile(dependabotFile)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Version int `yaml:"version"`
		Updates []struct {
			Ecosystem   string   `yaml:"package-ecosystem"`
			Directory   string   `yaml:"directory"`
			Directories []string `yaml:"directories"`
			Schedule    struct {
				Interval string `yaml:"interval"`
			} `yaml:"schedule"`
		} `yaml:"updates"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Version != 2 {
		t.Errorf("version = %d, want 2", cfg.Version)
	}
	dirs := map[string][]string{}
	for _, u := range cfg.Updates {
		if u.Schedule.Interval == "" {
			t.Errorf("%s has no schedule", u.Ecosystem)
		}
		if u.Directory != "" {
			dirs[u.Ecosystem] = append(dirs[u.Ecosystem], u.Directory)
		}
		dirs[u.Ecosystem] = append(dirs[u.Ecosystem], u.Directories...)
	}
	work, err := os.ReadFile("../go.work")
	if err != nil {
		t.Fatal(err)
	}
	var modules []string
	for _, m := range regexp.MustCompile(`(?m)^\s+\./(\S+)$`).FindAllStringSubmatch(string(work), -1) {
		modules = append(modules, "/"+m[1])
	}
	if len(modules) < 5 || !sameSet(dirs["gomod"], modules) {
		t.Errorf("gomod directories = %v, want go.work's modules %v", dirs["gomod"], modules)
	}
	for eco, want := range map[string]string{"docker": "/docker", "docker-compose": "/", "github-actions": "/"} {
		if !slices.Equal(dirs[eco], []string{want}) {
			t.Errorf("%s directories = %v, want [%s]", eco, dirs[eco], want)
		}
	}
	if ds, _ := filepath.Glob("../docker/*.Dockerfile"); len(ds) != len(images) {
		t.Errorf("docker/ holds %d Dockerfiles, want %d (one per image)", len(ds), len(images))
	}
}
