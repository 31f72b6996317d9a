// Package sentry reports faults (the errors a service answers with a 5xx) to
// Sentry when SENTRY_DSN is set. It speaks the envelope protocol over the
// HTTP client the services already link (fasthttp), sends in the
// background, never blocks a request, and drops reports when Sentry is slow
// rather than queue without limit.
//
// Why not sentry-go: linked into auth, with no DSN set, it adds about
// 0.2 MiB of idle anonymous memory, past SPEC §7's 2 MiB, where auth
// already sits, and a fifth to the binary. The services report only errors,
// and an error event is one small JSON envelope: this file. The figures, and
// what would make the project switch: docs/dependencies.md.
package sentry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Reporter sends error events. A nil *Reporter (no DSN) does nothing.
type Reporter struct {
	endpoint string
	auth     string
	dsn      string
	base     event
	log      *slog.Logger
	client   *fasthttp.Client
	queue    chan []byte
	wg       sync.WaitGroup
	once     sync.Once

	mu   sync.Mutex
	seen map[string]time.Time // message -> last report, for quiet
}

const (
	// queueLen bounds the reports waiting to be sent.
	queueLen = 64
	// quiet is how long the same message is not reported again: an outage
	// is one report every quiet, not one per request.
	quiet = 10 * time.Second
)

type event struct {
	EventID     string            `json:"event_id"`
	Timestamp   string            `json:"timestamp"`
	Level       string            `json:"level"`
	Platform    string            `json:"platform"`
	Logger      string            `json:"logger"`
	ServerName  string            `json:"server_name,omitempty"`
	Environment string            `json:"environment"`
	Release     string            `json:"release"`
	Message     string            `json:"message"`
	Exception   *exceptions       `json:"exception,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
}

type exceptions struct {
	Values []exception `json:"values"`
}

type exception struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// New returns a reporter for dsn, or nil when dsn is the zero DSN (no
// SENTRY_DSN). Call Close to flush it.
func New(dsn DSN, service, environment, release string, log *slog.Logger) *Reporter {
	if dsn.raw == "" {
		return nil
	}
	r := &Reporter{
		endpoint: dsn.endpoint,
		auth:     "Sentry sentry_version=7, sentry_client=pesto/" + release + ", sentry_key=" + dsn.key,
		dsn:      dsn.raw,
		base: event{
			Level: "error", Platform: "go", Logger: service,
			Environment: environment, Release: service + "@" + release,
		},
		log:    log,
		client: &fasthttp.Client{Name: "pesto-" + service, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second},
		queue:  make(chan []byte, queueLen),
		seen:   map[string]time.Time{},
	}
	r.wg.Add(1)
	go r.send()
	return r
}

// DSN is a checked Sentry DSN. The zero DSN means no reporting.
type DSN struct {
	raw, endpoint, key string
}

// ParseDSN checks a DSN, http(s)://KEY@HOST[:PORT][/PATH]/PROJECT; an empty
// string is the zero DSN. Its errors never quote the DSN.
func ParseDSN(dsn string) (DSN, error) {
	if dsn == "" {
		return DSN{}, nil
	}
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		u.User == nil || u.User.Username() == "" {
		return DSN{}, errors.New("want https://KEY@HOST/PROJECT")
	}
	i := strings.LastIndexByte(u.Path, '/')
	project := u.Path[i+1:]
	if i < 0 || project == "" {
		return DSN{}, errors.New("want https://KEY@HOST/PROJECT: no project")
	}
	return DSN{
		raw:      dsn,
		endpoint: fmt.Sprintf("%s://%s%s/api/%s/envelope/", u.Scheme, u.Host, u.Path[:i], project),
		key:      u.User.Username(),
	}, nil
}

// Report queues err with its tags (never secrets). It never blocks: when the
// queue is full the report is dropped and logged.
func (r *Reporter) Report(err error, tags map[string]string) {
	if r == nil || err == nil || r.repeated(err.Error()) {
		return
	}
	ev := r.base
	ev.EventID = newID()
	ev.Timestamp = time.Now().UTC().Format(time.RFC3339Nano)
	ev.Message = err.Error()
	ev.Exception = &exceptions{Values: []exception{{Type: fmt.Sprintf("%T", err), Value: err.Error()}}}
	ev.Tags = tags
	body, _ := json.Marshal(ev) // plain strings: cannot fail
	header, _ := json.Marshal(map[string]string{"event_id": ev.EventID, "sent_at": ev.Timestamp, "dsn": r.dsn})
	envelope := make([]byte, 0, len(header)+len(body)+32)
	envelope = append(envelope, header...)
	envelope = append(envelope, "\n{\"type\":\"event\"}\n"...)
	envelope = append(envelope, body...)
	envelope = append(envelope, '\n')
	select {
	case r.queue <- envelope:
	default:
		r.log.Warn("sentry queue full, report dropped")
	}
}

// repeated reports whether msg was reported within quiet, and notes it.
func (r *Reporter) repeated(msg string) bool {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if last, ok := r.seen[msg]; ok && now.Sub(last) < quiet {
		return true
	}
	if len(r.seen) >= 1024 {
		clear(r.seen)
	}
	r.seen[msg] = now
	return false
}

func (r *Reporter) send() {
	defer r.wg.Done()
	for envelope := range r.queue {
		req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(r.endpoint)
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.SetContentType("application/x-sentry-envelope")
		req.Header.Set("X-Sentry-Auth", r.auth)
		req.SetBody(envelope)
		err := r.client.DoTimeout(req, res, 5*time.Second)
		if err == nil && res.StatusCode() >= 300 {
			err = fmt.Errorf("status %d", res.StatusCode())
		}
		if err != nil {
			r.log.Warn("sentry report failed", "err", err.Error())
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(res)
	}
}

// Flush sends what is queued, waiting two seconds at most; for a deferred
// call at the end of main.
func (r *Reporter) Flush() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r.Close(ctx)
}

// Close sends what is queued, waiting until ctx is done at most.
func (r *Reporter) Close(ctx context.Context) {
	if r == nil {
		return
	}
	r.once.Do(func() { close(r.queue) })
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
