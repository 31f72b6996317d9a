// Command mailcatcher stands in for the image compose.yaml names for the
// mail catcher (axllent/mailpit) where no registry is reachable: SMTP on
// :1025 keeps every message in memory, and :8025 serves the part of
// Mailpit's API the end-to-end test reads: GET /api/v1/messages (newest
// first: ID, From, To, Subject) and GET /api/v1/message/{ID}/raw, and
// GET /readyz. As Mailpit's binary, it answers the subcommand "readyz"
// (exit 0 when GET /readyz on :8025 answers 200), compose.yaml's
// healthcheck. Built and imported by deploy/e2e/run.sh.
package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"mime"
	"net/http"
	"net/mail"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

type address struct {
	Name    string
	Address string
}

type message struct {
	ID      string
	From    address
	To      []address
	Subject string
	Created time.Time
	raw     []byte
}

type store struct {
	mu       sync.Mutex
	messages []message // oldest first
}

func (s *store) add(from string, to []string, raw []byte) {
	m := message{From: address{Address: from}, Created: time.Now().UTC(), raw: raw}
	for _, t := range to {
		m.To = append(m.To, address{Address: t})
	}
	if parsed, err := mail.ReadMessage(bytes.NewReader(raw)); err == nil {
		dec := new(mime.WordDecoder)
		m.Subject = parsed.Header.Get("Subject")
		if s, err := dec.DecodeHeader(m.Subject); err == nil {
			m.Subject = s
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m.ID = strconv.Itoa(len(s.messages) + 1)
	s.messages = append(s.messages, m)
}

// backend is go-smtp's server side: one session per connection.
type backend struct{ store *store }

func (b backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{store: b.store}, nil }

type session struct {
	store *store
	from  string
	to    []string
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error   { s.to = append(s.to, to); return nil }
func (s *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.store.add(s.from, s.to, raw)
	return nil
}
func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "readyz" {
		c := &http.Client{Timeout: 2 * time.Second}
		res, err := c.Get("http://127.0.0.1:8025/readyz")
		if err != nil || res.StatusCode != http.StatusOK {
			log.Fatalf("readyz: %v %v", err, res)
		}
		return
	}
	st := &store{}
	srv := smtp.NewServer(backend{store: st})
	srv.Addr = ":1025"
	srv.Domain = "mailcatcher"
	srv.AllowInsecureAuth = true
	go func() { log.Fatal(srv.ListenAndServe()) }()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/messages", func(w http.ResponseWriter, r *http.Request) {
		st.mu.Lock()
		list := make([]message, 0, len(st.messages))
		for i := len(st.messages) - 1; i >= 0; i-- {
			list = append(list, st.messages[i])
		}
		st.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"total": len(list), "messages_count": len(list), "messages": list})
	})
	mux.HandleFunc("GET /api/v1/message/{id}/raw", func(w http.ResponseWriter, r *http.Request) {
		st.mu.Lock()
		defer st.mu.Unlock()
		for _, m := range st.messages {
			if m.ID == r.PathValue("id") {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.Write(m.raw)
				return
			}
		}
		http.NotFound(w, r)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {})
	log.Fatal(http.ListenAndServe(":8025", mux))
}
