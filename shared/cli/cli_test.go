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
