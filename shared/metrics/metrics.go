// Package metrics is a small, allocation-free set of Prometheus metrics
// (counters, gauges, histograms with fixed buckets) written in the
// Prometheus text exposition format. A Registry is made per app; there are
// no package-level metrics.
//
// Why not a library (VictoriaMetrics/metrics, the smallest): linked into
// auth it adds about 0.3 MiB of idle anonymous memory, past SPEC §7's 2 MiB,
// where auth already sits. The figures, and what would make the project
// switch: docs/dependencies.md.
package metrics

import (
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Registry holds metric families and writes them in name order.
type Registry struct {
	mu       sync.Mutex
	families map[string]*family
	start    time.Time
}

// NewRegistry returns an empty registry with process metrics.
func NewRegistry() *Registry {
	return &Registry{families: map[string]*family{}, start: time.Now()}
}

type family struct {
	name, help, typ string
	mu              sync.Mutex
	series          map[string]writer // by label string
}

type writer interface {
	write(b []byte, name, labels string) []byte
}

func (r *Registry) family(name, help, typ string) *family {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.families[name]
	if !ok {
		f = &family{name: name, help: help, typ: typ, series: map[string]writer{}}
		r.families[name] = f
	}
	if f.typ != typ {
		panic("metrics: " + name + " registered as " + f.typ + " and " + typ)
	}
	return f
}

func (f *family) get(labels []string, newW func() writer) writer {
	key := labelString(labels...)
	f.mu.Lock()
	defer f.mu.Unlock()
	w, ok := f.series[key]
	if !ok {
		w = newW()
		f.series[key] = w
	}
	return w
}

// labelString renders label pairs ("k1", "v1", "k2", "v2") as {k1="v1",k2="v2"}.
func labelString(kv ...string) string {
	if len(kv) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[i])
		b.WriteString(`="`)
		b.WriteString(escape(kv[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

func escape(v string) string { return labelEscaper.Replace(v) }

// Counter only goes up.
type Counter struct{ v atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Value returns the count.
func (c *Counter) Value() uint64 { return c.v.Load() }

func (c *Counter) write(b []byte, name, labels string) []byte {
	b = append(b, name...)
	b = append(b, labels...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, c.v.Load(), 10)
	return append(b, '\n')
}

// Counter returns the counter of name with the label pairs kv, made on first use.
func (r *Registry) Counter(name, help string, kv ...string) *Counter {
	return r.family(name, help, "counter").get(kv, func() writer { return new(Counter) }).(*Counter)
}

type gauge func() float64

func (g gauge) write(b []byte, name, labels string) []byte {
	b = append(b, name...)
	b = append(b, labels...)
	b = append(b, ' ')
	b = strconv.AppendFloat(b, g(), 'g', -1, 64)
	return append(b, '\n')
}

// Gauge registers a gauge whose value f returns when metrics are written.
func (r *Registry) Gauge(name, help string, f func() float64, kv ...string) {
	r.family(name, help, "gauge").get(kv, func() writer { return gauge(f) })
}

// DefBuckets are latency buckets in seconds, from 100 µs to 2.5 s.
var DefBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// Histogram counts observations into fixed buckets.
type Histogram struct {
	upper  []float64
	counts []atomic.Uint64 // one per bucket, plus +Inf
	sum    atomic.Uint64   // float64 bits
}

// Observe records one value.
func (h *Histogram) Observe(v float64) {
	i := sort.SearchFloat64s(h.upper, v)
	h.counts[i].Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Since records the seconds elapsed since t.
func (h *Histogram) Since(t time.Time) { h.Observe(time.Since(t).Seconds()) }

func (h *Histogram) write(b []byte, name, labels string) []byte {
	inner := strings.TrimSuffix(strings.TrimPrefix(labels, "{"), "}")
	if inner != "" {
		inner += ","
	}
	var total uint64
	for i := range h.counts {
		total += h.counts[i].Load()
		le := "+Inf"
		if i < len(h.upper) {
			le = strconv.FormatFloat(h.upper[i], 'g', -1, 64)
		}
		b = append(b, name...)
		b = append(b, "_bucket{"...)
		b = append(b, inner...)
		b = append(b, `le="`...)
		b = append(b, le...)
		b = append(b, "\"} "...)
		b = strconv.AppendUint(b, total, 10)
		b = append(b, '\n')
	}
	b = append(b, name...)
	b = append(b, "_sum"...)
	b = append(b, labels...)
	b = append(b, ' ')
	b = strconv.AppendFloat(b, math.Float64frombits(h.sum.Load()), 'g', -1, 64)
	b = append(b, '\n')
	b = append(b, name...)
	b = append(b, "_count"...)
	b = append(b, labels...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, total, 10)
	return append(b, '\n')
}

// Histogram returns the histogram of name with buckets (upper bounds,
// ascending) and the label pairs kv, made on first use.
func (r *Registry) Histogram(name, help string, buckets []float64, kv ...string) *Histogram {
	return r.family(name, help, "histogram").get(kv, func() writer {
		return &Histogram{upper: buckets, counts: make([]atomic.Uint64, len(buckets)+1)}
	}).(*Histogram)
}

// WriteTo writes every metric, and the process's, in the text format.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	fams := make([]*family, 0, len(r.families))
	for _, f := range r.families {
		fams = append(fams, f)
	}
	r.mu.Unlock()
	sort.Slice(fams, func(i, j int) bool { return fams[i].name < fams[j].name })

	b := make([]byte, 0, 4096)
	for _, f := range fams {
		b = append(b, "# HELP "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = append(b, f.help...)
		b = append(b, "\n# TYPE "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = append(b, f.typ...)
		b = append(b, '\n')
		f.mu.Lock()
		keys := make([]string, 0, len(f.series))
		for k := range f.series {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b = f.series[k].write(b, f.name, k)
		}
		f.mu.Unlock()
	}
	b = r.appendProcess(b)
	n, err := w.Write(b)
	return int64(n), err
}

func (r *Registry) appendProcess(b []byte) []byte {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	put := func(name, help, typ string, v float64) {
		b = append(b, "# HELP "+name+" "+help+"\n# TYPE "+name+" "+typ+"\n"+name+" "...)
		b = strconv.AppendFloat(b, v, 'g', -1, 64)
		b = append(b, '\n')
	}
	if rss, ok := residentBytes(); ok {
		put("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", float64(rss))
	}
	put("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.", "gauge", float64(r.start.Unix()))
	put("go_goroutines", "Number of goroutines that currently exist.", "gauge", float64(runtime.NumGoroutine()))
	put("go_memstats_heap_inuse_bytes", "Bytes in in-use heap spans.", "gauge", float64(ms.HeapInuse))
	put("go_memstats_sys_bytes", "Bytes obtained from the system.", "gauge", float64(ms.Sys))
	put("go_gc_cycles_total", "Completed GC cycles.", "counter", float64(ms.NumGC))
	return b
}

// residentBytes reads the resident set size from /proc/self/statm.
func residentBytes() (uint64, bool) {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(raw))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * uint64(os.Getpagesize()), true
}
