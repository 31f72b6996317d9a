package cli

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"pesto/shared/config"
)

func TestExitCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
		out  string
	}{
		{nil, 0, ""},
		{Exit(1), 1, ""},
		{&config.Error{Var: "PORT", Msg: "bad"}, 2, "auth: PORT: bad\n"},
		{fmt.Errorf("%w: auth [healthcheck|version]", ErrUsage), 2, "auth: usage: auth [healthcheck|version]\n"},
		{errors.New("listen: address in use"), 1, "auth: listen: address in use\n"},
	} {
		var out bytes.Buffer
		if got := ExitCode("auth", c.err, &out); got != c.code || out.String() != c.out {
			t.Errorf("%v: got %d %q, want %d %q", c.err, got, out.String(), c.code, c.out)
		}
	}
}

func TestCommon(t *testing.T) {
	var out bytes.Buffer
	if handled, err := Common([]string{"version"}, "auth", "v1.2", 3000, &out); !handled || err != nil || out.String() != "auth v1.2\n" {
		t.Fatalf("version: %v %v %q", handled, err, out.String())
	}
	if handled, _ := Common([]string{"admin-token"}, "auth", "v1", 3000, &out); handled {
		t.Fatal("admin-token handled as a common subcommand")
	}
	// Nothing listens on port 1: the healthcheck fails with exit code 1.
	if handled, err := Common([]string{"healthcheck"}, "auth", "v1", 1, &out); !handled || ExitCode("auth", err, &out) != 1 {
		t.Fatalf("healthcheck of nothing: %v %v", handled, err)
	}
}
