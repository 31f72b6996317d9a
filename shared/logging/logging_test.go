package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestToken(t *testing.T) {
	const key = "Zk3p9QxT2mA7vL0cN8rB4hY6wE1uJ5sD"
	got := Token(key)
	if strings.Contains(got, key[6:]) || !strings.HasPrefix(got, "Zk3p9Q…#") || len(got) != len("Zk3p9Q…#")+8 {
		t.Fatalf("Token(%q) = %q", key, got)
	}
	if Token(key) != got || Token(key+"x") == got {
		t.Fatal("hash is not stable or not distinct")
	}
	for key, prefix := range map[string]string{"ab": "…#", "abcdef": "a…#", "abcdefghijkl": "abc…#"} {
		if got := Token(key); !strings.HasPrefix(got, prefix) {
			t.Fatalf("Token(%q) = %q, want prefix %q", key, got, prefix)
		}
	}
}

func TestNew(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, slog.LevelWarn, "auth", "test")
	log.Info("hidden")
	log.Warn("shown", "k", 1)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	if line["msg"] != "shown" || line["service"] != "auth" || line["environment"] != "test" || line["level"] != "WARN" {
		t.Fatalf("got %v", line)
	}
}
