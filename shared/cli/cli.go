// Package cli is what the services' main functions share: the signal
// context, and how the error a program ends with becomes one line on
// stderr and an exit code.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"pesto/shared/config"
	"pesto/shared/server"
)

// ErrUsage marks a command line that is not understood (exit 2). Wrap it
// with the usage text: fmt.Errorf("%w: auth [healthcheck|version]", ErrUsage).
var ErrUsage = errors.New("usage")

// Exit ends the program with its code and no message (the healthcheck
// subcommand's failure).
type Exit int

func (e Exit) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// Common runs the subcommands every service has, when args[0] is one:
// "version" prints the name and version; "healthcheck" asks /healthz on
// 127.0.0.1:port (server.Healthcheck) and ends with Exit(1) unless it
// answers 200 within 2 s. handled is false for any other subcommand.
func Common(args []string, name, version string, port int, stdout io.Writer) (handled bool, err error) {
	switch args[0] {
	case "version":
		fmt.Fprintln(stdout, name, version)
		return true, nil
	case "healthcheck":
		if code := server.Healthcheck(strconv.Itoa(port)); code != 0 {
			return true, Exit(code)
		}
		return true, nil
	}
	return false, nil
}

// Main runs run with the command-line arguments and a context that SIGTERM
// or SIGINT cancels, then exits with ExitCode.
func Main(name string, run func(ctx context.Context, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	os.Exit(ExitCode(name, err, os.Stderr))
}

// ExitCode prints err as one line, "name: err", and returns the exit code:
// 0 for none, 2 for a configuration (*config.Error) or usage error, the
// code of an Exit (printing nothing), and 1 for any other error.
func ExitCode(name string, err error, stderr io.Writer) int {
	var exit Exit
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return int(exit)
	}
	fmt.Fprintln(stderr, name+":", err)
	var cfgErr *config.Error
	if errors.As(err, &cfgErr) || errors.Is(err, ErrUsage) {
		return 2
	}
	return 1
}
