package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

// The demo's one runtime. It runs no code: executing it answers the code
// as the program's output, so a client sees every field of a real answer
// filled in without anything being run.
const (
	demoLanguage = "Demo"
	demoVersion  = "1.0.0"
)

// maxBody bounds a request body (413 beyond it): a demo is sent a short
// program, and nothing a client sends may grow the process without bound.
const maxBody = 1 << 20

// Limits of the optional fields, as the code-execution API checks them.
const (
	maxTimeoutMillis = 30_000
	maxMemoryLimit   = 512 << 20
)

// runtime is an element of GET /api/list-runtimes.
type runtime struct {
	Language string   `json:"language"`
	Version  string   `json:"version"`
	Aliases  []string `json:"aliases"`
	Compiled bool     `json:"compiled"`
}

// codeRequest is the body of POST /api/execute, each field as decoded,
// so that a wrong type is told from a missing field; null or absent
// optional numbers mean the defaults.
type codeRequest struct {
	Language       any `json:"language"`
	Version        any `json:"version"`
	Code           any `json:"code"`
	CompileTimeout any `json:"compileTimeout"`
	RunTimeout     any `json:"runTimeout"`
	MemoryLimit    any `json:"memoryLimit"`
}

// output is the compile or the run step of an execution.
type output struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	Output   string `json:"output"`
	ExitCode int    `json:"exitCode"`
}

// codeResponse is the answer of POST /api/execute.
type codeResponse struct {
	Language string `json:"language"`
	Version  string `json:"version"`
	Compile  output `json:"compile"`
	Runtime  output `json:"runtime"`
}

// message is every answer that is not a result: the SDKs read "message".
type message struct {
	Message string `json:"message"`
}

// newHandler answers the code-execution API's three routes in its JSON
// shapes, and 404 {"message":"Not found"} to anything else, as that API
// does.
func newHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/ping", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, message{"OK"})
	})
	mux.HandleFunc("GET /api/list-runtimes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, struct {
			Runtime []runtime `json:"runtime"`
		}{[]runtime{{Language: demoLanguage, Version: demoVersion, Aliases: []string{"demo"}, Compiled: false}}})
	})
	mux.HandleFunc("POST /api/execute", execute)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, message{"Not found"})
	})
	return mux
}

func execute(w http.ResponseWriter, r *http.Request) {
	var req codeRequest
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&req)
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeJSON(w, http.StatusRequestEntityTooLarge, message{"Request body too large"})
		return
	case err != nil:
		writeJSON(w, http.StatusBadRequest, message{"Invalid body content with the Content-Type header specification"})
		return
	}
	if missing := req.invalid(); len(missing) > 0 {
		writeJSON(w, http.StatusBadRequest, message{"Missing parameters: " + strings.Join(missing, ", ")})
		return
	}
	language, version, code := req.Language.(string), req.Version.(string), req.Code.(string)
	if language != demoLanguage || (version != demoVersion && version != "latest") {
		writeJSON(w, http.StatusBadRequest, message{"Runtime not found"})
		return
	}
	writeJSON(w, http.StatusOK, codeResponse{
		Language: demoLanguage,
		Version:  demoVersion,
		Runtime:  output{Stdout: code, Output: code},
	})
}

// invalid names the fields that are missing or out of range, in the
// order the code-execution API lists them.
func (req codeRequest) invalid() []string {
	var out []string
	for _, f := range []struct {
		name string
		v    any
	}{{"language", req.Language}, {"version", req.Version}, {"code", req.Code}} {
		if s, ok := f.v.(string); !ok || s == "" {
			out = append(out, f.name)
		}
	}
	for _, f := range []struct {
		name string
		v    any
		max  float64
	}{{"compileTimeout", req.CompileTimeout, maxTimeoutMillis}, {"runTimeout", req.RunTimeout, maxTimeoutMillis}, {"memoryLimit", req.MemoryLimit, maxMemoryLimit}} {
		if f.v == nil {
			continue
		}
		if n, ok := f.v.(float64); !ok || n > f.max {
			out = append(out, f.name)
		}
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}
