// Command harness is `make bench`: on loopback, against a redis-server of
// its own, it measures the services built by `make build` under wrk load
// next to a do-nothing fiber handler (bench/reference), checks the targets
// of SPEC §7, prints a Markdown report and writes it to docs/performance.md.
//
// It needs wrk and redis-server on PATH and bin/auth (bin/registration is
// reported "n/a" when it is missing or does not serve its routes yet). Every
// process it starts is stopped when it ends, also on failure or Ctrl-C.
// The exit status is 1 when the run failed or a target was not met.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// errTargetsMissed: the report was written, and it says a target was missed.
var errTargetsMissed = errors.New("some SPEC §7 targets were not met (see the report)")

// options are the knobs of a run; the defaults are the run SPEC §7 means.
type options struct {
	root     string        // the repository: bin/, bench/, docs/
	out      string        // the report, relative to root
	threads  int           // wrk threads
	conns    int           // wrk connections
	duration time.Duration // of each measured wrk run
	warmup   time.Duration // of the warm-up run of each server
	rounds   int           // measured runs of each server, alternating
	signups  int           // waiting-list length before the registration load
	authBin  string        // the binaries measured, relative to root unless absolute
	regBin   string
	authOnly bool // only auth against the reference: a quick run while working on auth
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("harness", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.out, "out", "docs/performance.md", "where the report is written, relative to the repository")
	fs.IntVar(&o.threads, "t", 2, "wrk threads")
	fs.IntVar(&o.conns, "c", 64, "wrk connections")
	fs.DurationVar(&o.duration, "d", 10*time.Second, "duration of each measured wrk run (whole seconds)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "duration of the warm-up run of each server")
	fs.IntVar(&o.rounds, "rounds", 3, "measured runs of auth and of the reference, alternating")
	fs.IntVar(&o.signups, "signups", 10000, "signups on the waiting list before the registration load")
	fs.StringVar(&o.authBin, "auth", "bin/auth", "the auth binary (another build can be compared this way)")
	fs.StringVar(&o.regBin, "registration", "bin/registration", "the registration binary")
	fs.BoolVar(&o.authOnly, "auth-only", false, "measure only auth against the reference (no exactness run, registration or flood): a quick run while working on auth")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.duration < time.Second || o.warmup < time.Second || o.rounds < 1 || o.conns < o.threads || o.threads < 1 {
		return o, errors.New("need -d and -warmup >= 1s, -rounds >= 1, -c >= -t >= 1")
	}
	root, err := repoRoot()
	if err != nil {
		return o, err
	}
	o.root = root
	for _, bin := range []*string{&o.authBin, &o.regBin} {
		if !filepath.IsAbs(*bin) {
			*bin = filepath.Join(root, *bin)
		}
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	for _, tool := range []string{"wrk", "redis-server", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (Debian: apt-get install wrk redis-server): %w", tool, err)
		}
	}
	if _, err := os.Stat(o.authBin); err != nil {
		return fmt.Errorf("%s is missing: run `make build` (or `make bench`): %w", o.authBin, err)
	}
	tmp, err := os.MkdirTemp("", "pesto-bench-")
	if err != nil {
		return err
	}
	sup := newSupervisor(tmp)
	defer sup.stopAll()

	b := &bench{o: o, tmp: tmp, sup: sup, log: stderr}
	rep, err := b.measure(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "bench: process logs kept in %s\n", tmp)
		return err
	}
	sup.stopAll()
	_ = os.RemoveAll(tmp)

	md := rep.markdown()
	fmt.Fprint(stdout, md)
	out := o.out
	if !filepath.IsAbs(out) {
		out = filepath.Join(o.root, out)
	}
	if err := writeFile(out, md); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nwritten to %s\n", o.out)
	if rep.missed() {
		return errTargetsMissed
	}
	return nil
}

// repoRoot is the nearest directory at or above the working directory that
// holds go.work.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the repository (no go.work found above the working directory)")
		}
		dir = parent
	}
}

// writeFile replaces path with data in one rename, so that an interrupted
// run never leaves half a report.
func writeFile(path, data string) error {
	tmp := strings.TrimSuffix(path, ".md") + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
