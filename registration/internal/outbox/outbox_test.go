package outbox

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"pesto/registration/internal/smtptest"
	"pesto/shared/logging"
	"pesto/shared/metrics"
	"pesto/shared/redisconn"
	"pesto/shared/redistest"
	"pesto/shared/servicetest"
	"pesto/shared/wire"
)

// testWorker is one outbox worker running on its own Redis connection.
type testWorker struct {
	*Worker
	reg  *metrics.Registry
	logs *servicetest.LogBuffer
	stop func() time.Duration // cancels Run and returns how long it took to return
}

// sendFunc is a test's Sender, or nil for none (SMTP_URL empty).
type sendFunc = func(context.Context, wire.OutboxEntry) error

// startWorker runs an outbox worker against r until the test ends. tune
// may shorten its timings before it starts.
func startWorker(t *testing.T, r *redistest.Server, send sendFunc, maxAttempts int, consumer string, tune func(*Worker)) *testWorker {
	t.Helper()
	logs := &servicetest.LogBuffer{}
	log := logging.New(logs, slog.LevelDebug, "registration", "test")
	opt, err := rueidis.ParseURL(r.URL) // one server, or every node of a cluster
	if err != nil {
		t.Fatal(err)
	}
	opt.DisableCache = true
	conn := redisconn.Dial(opt, log)
	reg := metrics.NewRegistry()
	var sender Sender
	if send != nil {
		sender = SenderFunc(send)
	}
	o := New(conn, sender, log, reg, maxAttempts, consumer)
	o.RetryMin, o.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	o.Block = 500 * time.Millisecond
	o.MinIdle = 5 * time.Second
	if tune != nil {
		tune(o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	var once sync.Once
	var took time.Duration
	stop := func() time.Duration {
		once.Do(func() {
			start := time.Now()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return within 10s of its context ending")
			}
			took = time.Since(start)
			conn.Close()
		})
		return took
	}
	t.Cleanup(func() { stop() })
	return &testWorker{Worker: o, reg: reg, logs: logs, stop: stop}
}

// mailerFor is the send function of a mailer for the test server.
func mailerFor(t *testing.T, srv *smtptest.Server) sendFunc {
	t.Helper()
	return NewMailer(testMailConfig(t, srv, "tls=none")).Send
}

// queue XADDs k as approve does and returns the entry ID.
func queue(r *redistest.Server, k keyEmail) string {
	return r.Do(append([]string{"XADD", Stream, "*"}, k.Fields()...)...)
}

// pendingCount is the number of entries read by the group and not acked.
func pendingCount(t *testing.T, r *redistest.Server) int64 {
	t.Helper()
	c := r.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := c.Do(ctx, c.B().Xpending().Key(Stream).Group(Group).Build()).ToArray()
	if err != nil {
		t.Fatalf("XPENDING: %v", err)
	}
	n, _ := res[0].AsInt64()
	return n
}

// readAs reads the next entry as consumer and never acknowledges it, as a
// worker that crashes right after its read; the group is made first.
func readAs(t *testing.T, r *redistest.Server, consumer string) {
	t.Helper()
	c := r.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Do(ctx, c.B().XgroupCreate().Key(Stream).Group(Group).Id("0").Mkstream().Build()).Error(); err != nil {
		t.Fatalf("XGROUP CREATE: %v", err)
	}
	got, err := c.Do(ctx, c.B().Xreadgroup().Group(Group, consumer).Count(1).Streams().Key(Stream).Id(">").Build()).AsXRead()
	if err != nil || len(got[Stream]) != 1 {
		t.Fatalf("XREADGROUP as %s: %v %v", consumer, got, err)
	}
}

// blockedReads counts the connections blocked in XREADGROUP, on every node.
func blockedReads(t *testing.T, c rueidis.Client) int {
	t.Helper()
	n := 0
	for _, node := range c.Nodes() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		list, err := node.Do(ctx, node.B().ClientList().Build()).ToString()
		cancel()
		if err != nil {
			t.Fatalf("CLIENT LIST: %v", err)
		}
		n += strings.Count(list, "cmd=xreadgroup")
	}
	return n
}

// metricsText is what /metrics would show of reg.
func metricsText(t *testing.T, reg *metrics.Registry) string {
	t.Helper()
	var b bytes.Buffer
	if _, err := reg.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func testKey(i int) keyEmail {
	return keyEmail{
		To:    fmt.Sprintf("user%d@example.com", i),
		Name:  fmt.Sprintf("User %d", i),
		Token: fmt.Sprintf("tok%02dAbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefghijklmnopqrstu", i),
		Limit: int64(100 + i),
	}
}

func TestOutboxDeliversOnce(t *testing.T) {
	r := redistest.Start(t)
	srv := smtptest.Start(t)
	w := startWorker(t, r, mailerFor(t, srv), 10, "w1", nil)
	k := testKey(1)
	queue(r, k)

	got := srv.WaitReceived(t, 1, 5*time.Second)
	servicetest.Poll(t, 5*time.Second, "the entry is acknowledged and deleted", func() bool {
		return r.Do("XLEN", Stream) == "0" && w.sent.Value() == 1
	})
	servicetest.Poll(t, 5*time.Second, "the depth gauge shows 0", func() bool {
		return strings.Contains(metricsText(t, w.reg), "\npesto_outbox_depth 0\n")
	})
	if n := pendingCount(t, r); n != 0 {
		t.Errorf("pending entries %d, want 0", n)
	}
	if got[0].To != k.To {
		t.Errorf("sent to %q, want %q", got[0].To, k.To)
	}
	m := smtptest.ParseMail(t, got[0].Data)
	if !strings.Contains(m.Text, "X-Pesto-Token: "+k.Token) || !strings.Contains(m.HTML, "X-Pesto-Token: "+k.Token) {
		t.Errorf("the email lacks the key:\n%s\n%s", m.Text, m.HTML)
	}
	text := metricsText(t, w.reg)
	for _, want := range []string{"\npesto_emails_sent_total 1\n", "\npesto_emails_dead_total 0\n",
		"\npesto_emails_failed_total{reason=\"rejected\"} 0\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q:\n%s", strings.TrimSpace(want), text)
		}
	}
	if n := len(srv.Received()); n != 1 {
		t.Errorf("received %d emails, want 1", n)
	}
	if logs := w.logs.String(); strings.Contains(logs, k.Token) {
		t.Errorf("a log holds the whole key:\n%s", logs)
	}
}

func TestOutboxSMTPOutage(t *testing.T) {
	r := redistest.Start(t)
	srv := smtptest.New(t) // down: nothing listens on its port yet
	w := startWorker(t, r, mailerFor(t, srv), 2, "w1", nil)
	k := testKey(1)
	queued := time.Now()
	queue(r, k)

	// Well past the attempts a refusal would be allowed (2), the email is
	// still queued, with no attempt counted.
	servicetest.Poll(t, 10*time.Second, "the worker retries for 2 s", func() bool {
		return time.Since(queued) >= 2*time.Second && w.unreachable.Value() >= 5
	})
	if got := r.Do("XLEN", Stream); got != "1" {
		t.Fatalf("XLEN outbox = %s during the outage, want 1", got)
	}
	if got := r.Do("HLEN", Attempts); got != "0" {
		t.Errorf("attempts counted during the outage: HLEN %s, want 0", got)
	}
	if got := r.Do("XLEN", Dead); got != "0" {
		t.Errorf("XLEN dead = %s, want 0", got)
	}
	if !strings.Contains(metricsText(t, w.reg), "\npesto_outbox_depth 1\n") {
		t.Errorf("depth gauge is not 1 during the outage:\n%s", metricsText(t, w.reg))
	}

	srv.Start()
	got := srv.WaitReceived(t, 1, 5*time.Second)
	if got[0].To != k.To {
		t.Errorf("sent to %q, want %q", got[0].To, k.To)
	}
	servicetest.Poll(t, 5*time.Second, "the entry is acknowledged", func() bool { return r.Do("XLEN", Stream) == "0" })
	if n := len(srv.Received()); n != 1 {
		t.Errorf("received %d emails, want 1", n)
	}
}

func TestOutboxTwoWorkersEachEmailOnce(t *testing.T) {
	r := redistest.Start(t)
	srv := smtptest.Start(t)
	a := startWorker(t, r, mailerFor(t, srv), 10, "a", func(o *Worker) { o.MinIdle = time.Second })
	b := startWorker(t, r, mailerFor(t, srv), 10, "b", func(o *Worker) { o.MinIdle = time.Second })
	const n = 20
	for i := range n {
		queue(r, testKey(i))
	}
	srv.WaitReceived(t, n, 10*time.Second)
	servicetest.Poll(t, 5*time.Second, "every entry is acknowledged", func() bool {
		return r.Do("XLEN", Stream) == "0" && a.sent.Value()+b.sent.Value() == n
	})
	// Past MinIdle, when each worker has run XAUTOCLAIM again: a late
	// reclaim would show as a second copy.
	sentAll := time.Now()
	servicetest.Poll(t, 5*time.Second, "MinIdle passes", func() bool {
		return time.Since(sentAll) > 1500*time.Millisecond && pendingCount(t, r) == 0
	})
	got := srv.Received()
	if len(got) != n {
		t.Fatalf("received %d emails, want %d", len(got), n)
	}
	seen := map[string]int{}
	for _, m := range got {
		seen[m.To]++
	}
	for i := range n {
		if c := seen[testKey(i).To]; c != 1 {
			t.Errorf("%s received %d emails, want 1", testKey(i).To, c)
		}
	}
	t.Logf("worker a sent %d, b sent %d", a.sent.Value(), b.sent.Value())
}

func TestOutboxReclaimsCrashedWorker(t *testing.T) {
	r := redistest.Start(t)
	srv := smtptest.Start(t)
	k := testKey(1)
	id := queue(r, k)
	read := time.Now()
	readAs(t, r, "crashed")
	if n := pendingCount(t, r); n != 1 {
		t.Fatalf("pending %d, want 1", n)
	}
	w := startWorker(t, r, mailerFor(t, srv), 10, "b", func(o *Worker) { o.MinIdle = 300 * time.Millisecond })

	got := srv.WaitReceived(t, 1, 5*time.Second)
	if got[0].To != k.To {
		t.Errorf("sent to %q, want %q", got[0].To, k.To)
	}
	// Redis counts idle time in whole milliseconds: allow that much.
	if d := time.Since(read); d < 290*time.Millisecond {
		t.Errorf("reclaimed %v after the read, before MinIdle", d)
	}
	servicetest.Poll(t, 5*time.Second, "the reclaimed entry is acknowledged", func() bool {
		return r.Do("XLEN", Stream) == "0" && pendingCount(t, r) == 0
	})
	if !strings.Contains(w.logs.String(), `"id":"`+id+`"`) {
		t.Errorf("no log of the reclaimed entry %s:\n%s", id, w.logs.String())
	}
}

func TestOutboxResumesOwnPendingAtStart(t *testing.T) {
	r := redistest.Start(t)
	srv := smtptest.Start(t)
	queue(r, testKey(1))
	// The same consumer name read it in an earlier life of the process.
	readAs(t, r, "w1")
	startWorker(t, r, mailerFor(t, srv), 10, "w1", func(o *Worker) { o.MinIdle = time.Hour })
	srv.WaitReceived(t, 1, 5*time.Second)
	servicetest.Poll(t, 5*time.Second, "the entry is acknowledged", func() bool { return r.Do("XLEN", Stream) == "0" })
}

// replayDead is the dead-letter replay command of the README (Email of the key): it
// moves every dead entry back to the outbox with its four fields.
const replayDead = `local n = 0
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local f = {}
  for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i+1] end
  redis.call('XADD', KEYS[2], '*', 'to', f.to, 'name', f.name, 'token', f.token, 'limit', f.limit)
  redis.call('XDEL', KEYS[1], e[1])
  n = n + 1
end
return n`

func TestOutboxDeadLetter(t *testing.T) {
	r := redistest.Start(t)
	srv := smtptest.Start(t)
	srv.Reject(550)
	const maxAttempts = 3
	w := startWorker(t, r, mailerFor(t, srv), maxAttempts, "w1", nil)
	k := testKey(7)
	id := queue(r, k)

	servicetest.Poll(t, 10*time.Second, "the entry reaches the dead-letter stream", func() bool { return r.Do("XLEN", Dead) == "1" })
	if got := r.Do("XLEN", Stream); got != "0" {
		t.Errorf("XLEN outbox = %s, want 0", got)
	}
	if got := r.Do("HLEN", Attempts); got != "0" {
		t.Errorf("HLEN attempts = %s, want 0", got)
	}
	if n := pendingCount(t, r); n != 0 {
		t.Errorf("pending %d, want 0", n)
	}
	if got := srv.Refused(); got != maxAttempts {
		t.Errorf("server refused %d times, want %d", got, maxAttempts)
	}
	if got, want := w.rejected.Value(), uint64(maxAttempts); got != want {
		t.Errorf("pesto_emails_failed_total{reason=rejected} = %d, want %d", got, want)
	}
	if !strings.Contains(metricsText(t, w.reg), "\npesto_emails_dead_total 1\n") {
		t.Errorf("dead counter is not 1:\n%s", metricsText(t, w.reg))
	}

	// The dead entry keeps what a replay needs, and why it died.
	c := r.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	dead, err := c.Do(ctx, c.B().Xrange().Key(Dead).Start("-").End("+").Build()).AsXRange()
	if err != nil || len(dead) != 1 {
		t.Fatalf("XRANGE dead: %v %v", dead, err)
	}
	f := dead[0].FieldValues
	for field, want := range map[string]string{"to": k.To, "name": k.Name, "token": k.Token,
		"limit": fmt.Sprint(k.Limit), "id": id, "attempts": fmt.Sprint(maxAttempts)} {
		if f[field] != want {
			t.Errorf("dead entry %s = %q, want %q", field, f[field], want)
		}
	}
	if !strings.Contains(f["error"], "550") {
		t.Errorf("dead entry error %q does not hold the reply code", f["error"])
	}
	logs := w.logs.String()
	if !strings.Contains(logs, "dead-letter") || !strings.Contains(logs, logging.Token(k.Token)) {
		t.Errorf("no dead-letter log naming the key's hint:\n%s", logs)
	}
	if strings.Contains(logs, k.Token) {
		t.Errorf("a log holds the whole key:\n%s", logs)
	}

	// The replay of the README sends it once the server takes it.
	srv.Reject(0)
	if got, err := c.Do(ctx, c.B().Eval().Script(replayDead).Numkeys(2).Key(Dead, Stream).Build()).AsInt64(); err != nil || got != 1 {
		t.Fatalf("replay moved %d entries (%v), want 1", got, err)
	}
	got := srv.WaitReceived(t, 1, 5*time.Second)
	if got[0].To != k.To {
		t.Errorf("replayed email went to %q, want %q", got[0].To, k.To)
	}
	servicetest.Poll(t, 5*time.Second, "the replayed entry is acknowledged", func() bool {
		return r.Do("XLEN", Stream) == "0" && r.Do("XLEN", Dead) == "0"
	})
}

func TestOutboxRefusalDoesNotHoldOthers(t *testing.T) {
	r := redistest.Start(t)
	srv := smtptest.Start(t)
	bad, good := testKey(1), testKey(2)
	srv.RejectOnly(bad.To, 550)
	w := startWorker(t, r, mailerFor(t, srv), 5, "w1", func(o *Worker) {
		o.RetryMin, o.RetryMax = 300*time.Millisecond, time.Second
	})
	queue(r, bad)
	queue(r, good)
	got := srv.WaitReceived(t, 1, 5*time.Second)
	if got[0].To != good.To {
		t.Fatalf("sent to %q, want %q", got[0].To, good.To)
	}
	// The refused email is still waiting for its next attempt.
	if n := w.rejected.Value(); n < 1 || n >= 5 {
		t.Errorf("refusals %d when the other email went out, want 1 to 4", n)
	}
	if got := r.Do("XLEN", Stream); got != "1" {
		t.Errorf("XLEN outbox = %s, want 1 (the refused email)", got)
	}
	if got := r.Do("XLEN", Dead); got != "0" {
		t.Errorf("XLEN dead = %s, want 0", got)
	}
}

func TestOutboxMalformedEntry(t *testing.T) {
	r := redistest.Start(t)
	srv := smtptest.Start(t)
	w := startWorker(t, r, mailerFor(t, srv), 10, "w1", nil)
	bad := []struct {
		name   string
		fields []string
	}{
		{"limit not a number", []string{"to", "a@example.com", "name", "A", "token", "t", "limit", "many"}},
		{"no token", []string{"to", "a@example.com", "name", "A", "limit", "1"}},
		{"bad address", []string{"to", "a@example.com\r\nBcc: b@example.com", "name", "A", "token", "t", "limit", "1"}},
	}
	for _, b := range bad {
		r.Do(append([]string{"XADD", Stream, "*"}, b.fields...)...)
	}
	servicetest.Poll(t, 5*time.Second, "malformed entries are dead-lettered", func() bool {
		return r.Do("XLEN", Dead) == fmt.Sprint(len(bad)) && r.Do("XLEN", Stream) == "0"
	})
	if n := len(srv.Received()); n != 0 {
		t.Errorf("received %d emails, want 0", n)
	}
	if w.dead.Value() != uint64(len(bad)) {
		t.Errorf("dead counter %d, want %d", w.dead.Value(), len(bad))
	}
}

func TestOutboxWithoutSMTPKeepsEmails(t *testing.T) {
	r := redistest.Start(t)
	w := startWorker(t, r, nil, 10, "w1", func(o *Worker) { o.Block = 50 * time.Millisecond })
	queue(r, testKey(1))
	servicetest.Poll(t, 5*time.Second, "the depth gauge shows the waiting email", func() bool {
		return strings.Contains(metricsText(t, w.reg), "\npesto_outbox_depth 1\n")
	})
	if n := pendingCount(t, r); n != 0 {
		t.Errorf("pending %d: the entry was read with no way to send it", n)
	}
	if got := strings.Count(w.logs.String(), "SMTP_URL is empty"); got != 1 {
		t.Errorf("the warning was logged %d times, want once", got)
	}
}

func TestOutboxRedisRestart(t *testing.T) {
	r := redistest.Start(t)
	srv := smtptest.Start(t)
	w := startWorker(t, r, mailerFor(t, srv), 10, "w1", func(o *Worker) { o.Block = 100 * time.Millisecond })
	queue(r, testKey(1))
	srv.WaitReceived(t, 1, 5*time.Second)

	// Redis comes back empty: no stream, no group. The first approve after
	// that makes the stream again (XADD); the worker makes the group.
	r.Restart()
	queue(r, testKey(2))
	got := srv.WaitReceived(t, 2, 15*time.Second)
	if got[1].To != testKey(2).To {
		t.Errorf("sent to %q, want %q", got[1].To, testKey(2).To)
	}
	servicetest.Poll(t, 5*time.Second, "the entry is acknowledged", func() bool { return r.Do("XLEN", Stream) == "0" })
	if w.sent.Value() != 2 {
		t.Errorf("sent %d, want 2", w.sent.Value())
	}
}

func TestOutboxRedisDownAtStart(t *testing.T) {
	r := redistest.Start(t)
	srv := smtptest.Start(t)
	r.Stop()
	w := startWorker(t, r, mailerFor(t, srv), 10, "w1", nil)
	servicetest.Poll(t, 5*time.Second, "the worker reports redis down", func() bool {
		return strings.Contains(w.logs.String(), "outbox: redis call failed")
	})
	r.Restart()
	queue(r, testKey(1))
	srv.WaitReceived(t, 1, 15*time.Second)
	servicetest.Poll(t, 5*time.Second, "the entry is acknowledged", func() bool { return r.Do("XLEN", Stream) == "0" })
}

func TestOutboxStopsPromptly(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) *testWorker
	}{
		{"blocked reading", func(t *testing.T) *testWorker {
			r := redistest.Start(t)
			c := r.Client()
			w := startWorker(t, r, mailerFor(t, smtptest.Start(t)), 10, "w1", func(o *Worker) { o.Block = 5 * time.Second })
			servicetest.Poll(t, 5*time.Second, "the worker blocks in XREADGROUP", func() bool {
				return blockedReads(t, c) == 1
			})
			return w
		}},
		{"paused on an SMTP outage", func(t *testing.T) *testWorker {
			r := redistest.Start(t)
			w := startWorker(t, r, mailerFor(t, smtptest.New(t)), 10, "w1", func(o *Worker) {
				o.RetryMin, o.RetryMax = time.Minute, time.Minute
			})
			queue(r, testKey(1))
			servicetest.Poll(t, 5*time.Second, "the worker pauses", func() bool { return w.unreachable.Value() == 1 })
			return w
		}},
		{"redis down", func(t *testing.T) *testWorker {
			r := redistest.Start(t)
			r.Stop()
			w := startWorker(t, r, nil, 10, "w1", nil)
			servicetest.Poll(t, 5*time.Second, "the worker reports redis down", func() bool {
				return strings.Contains(w.logs.String(), "outbox: redis call failed")
			})
			return w
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := tt.setup(t)
			if took := w.stop(); took > 500*time.Millisecond {
				t.Errorf("Run returned %v after its context ended, want under 500ms", took)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 500*time.Millisecond, time.Minute
	var got []time.Duration
	var d time.Duration
	for range 9 {
		d = backoff(d, lo, hi)
		got = append(got, d)
	}
	want := []time.Duration{lo, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, hi, hi}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("backoff steps %v, want %v", got, want)
	}
	for n, want := range map[int64]time.Duration{1: lo, 2: time.Second, 4: 4 * time.Second, 8: hi, 60: hi} {
		if got := backoffN(n, lo, hi); got != want {
			t.Errorf("backoffN(%d) = %v, want %v", n, got, want)
		}
	}
	if got := backoff(0, 0, time.Second); got <= 0 {
		t.Errorf("backoff with lo 0 = %v: a busy loop", got)
	}
}
