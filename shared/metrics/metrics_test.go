package metrics

import (
	"strings"
	"testing"
)

func TestWriteTo(t *testing.T) {
	r := NewRegistry()
	ok := r.Counter("pesto_x_total", "X.", "outcome", "ok")
	ok.Inc()
	ok.Inc()
	ok.Inc()
	r.Counter("pesto_x_total", "X.", "outcome", `a"b`).Inc()
	r.Gauge("pesto_depth", "Depth.", func() float64 { return 7 })
	h := r.Histogram("pesto_seconds", "Latency.", []float64{0.1, 1}, "route", "/")
	h.Observe(0.05)
	h.Observe(0.5)
	h.Observe(5)
	if r.Counter("pesto_x_total", "X.", "outcome", "ok").Value() != 3 {
		t.Fatal("same labels gave another counter")
	}
	var sb strings.Builder
	if _, err := r.WriteTo(&sb); err != nil {
		t.Fatal(err)
	}
	want := `# HELP pesto_depth Depth.
# TYPE pesto_depth gauge
pesto_depth 7
# HELP pesto_seconds Latency.
# TYPE pesto_seconds histogram
pesto_seconds_bucket{route="/",le="0.1"} 1
pesto_seconds_bucket{route="/",le="1"} 2
pesto_seconds_bucket{route="/",le="+Inf"} 3
pesto_seconds_sum{route="/"} 5.55
pesto_seconds_count{route="/"} 3
# HELP pesto_x_total X.
# TYPE pesto_x_total counter
pesto_x_total{outcome="a\"b"} 1
pesto_x_total{outcome="ok"} 3
`
	got := sb.String()
	if !strings.HasPrefix(got, want) {
		t.Fatalf("got\n%s\nwant prefix\n%s", got, want)
	}
	if !strings.Contains(got, "\nprocess_resident_memory_bytes ") || !strings.Contains(got, "\ngo_goroutines ") {
		t.Fatalf("no process metrics in\n%s", got)
	}
}

func BenchmarkCounterInc(b *testing.B) {
	c := NewRegistry().Counter("c", "c")
	b.ReportAllocs()
	for b.Loop() {
		c.Inc()
	}
}

func BenchmarkHistogramObserve(b *testing.B) {
	h := NewRegistry().Histogram("h", "h", DefBuckets)
	b.ReportAllocs()
	for b.Loop() {
		h.Observe(0.0003)
	}
}
