package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The answers, byte for byte: the shapes Pesto's SDKs decode (Go:
// PingResponse, RuntimeResponse, CodeResponse; every error as
// {"message"}).
func TestAnswers(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"ping", "GET", "/api/ping", "", 200, `{"message":"OK"}`},
		{"list runtimes", "GET", "/api/list-runtimes", "", 200,
			`{"runtime":[{"language":"Demo","version":"1.0.0","aliases":["demo"],"compiled":false}]}`},
		{"execute", "POST", "/api/execute", `{"language":"Demo","version":"1.0.0","code":"print(\"hi\")\n","compileTimeout":5000,"runTimeout":5000,"memoryLimit":134217728}`, 200,
			`{"language":"Demo","version":"1.0.0","compile":{"stdout":"","stderr":"","output":"","exitCode":0},"runtime":{"stdout":"print(\"hi\")\n","stderr":"","output":"print(\"hi\")\n","exitCode":0}}`},
		{"execute latest, defaults null", "POST", "/api/execute", `{"language":"Demo","version":"latest","code":"x","runTimeout":null}`, 200,
			`{"language":"Demo","version":"1.0.0","compile":{"stdout":"","stderr":"","output":"","exitCode":0},"runtime":{"stdout":"x","stderr":"","output":"x","exitCode":0}}`},
		{"runtime not found", "POST", "/api/execute", `{"language":"Python","version":"3.10.10","code":"print(1)"}`, 400, `{"message":"Runtime not found"}`},
		{"unknown version", "POST", "/api/execute", `{"language":"Demo","version":"2.0.0","code":"x"}`, 400, `{"message":"Runtime not found"}`},
		{"alias is not a language", "POST", "/api/execute", `{"language":"demo","version":"latest","code":"x"}`, 400, `{"message":"Runtime not found"}`},
		{"missing everything", "POST", "/api/execute", `{}`, 400, `{"message":"Missing parameters: language, version, code"}`},
		{"wrong types and limits", "POST", "/api/execute", `{"language":"Demo","version":1,"code":"","compileTimeout":"5s","runTimeout":30001,"memoryLimit":536870913}`, 400,
			`{"message":"Missing parameters: version, code, compileTimeout, runTimeout, memoryLimit"}`},
		{"limits at their maximum", "POST", "/api/execute", `{"language":"Demo","version":"latest","code":"x","compileTimeout":30000,"runTimeout":30000,"memoryLimit":536870912}`, 200,
			`{"language":"Demo","version":"1.0.0","compile":{"stdout":"","stderr":"","output":"","exitCode":0},"runtime":{"stdout":"x","stderr":"","output":"x","exitCode":0}}`},
		{"not JSON", "POST", "/api/execute", `language=Demo`, 400, `{"message":"Invalid body content with the Content-Type header specification"}`},
		{"not an object", "POST", "/api/execute", `[]`, 400, `{"message":"Invalid body content with the Content-Type header specification"}`},
		{"body too large", "POST", "/api/execute", `{"language":"Demo","version":"latest","code":"` + strings.Repeat("x", maxBody) + `"}`, 413, `{"message":"Request body too large"}`},
		{"execute is POST only", "GET", "/api/execute", "", 404, `{"message":"Not found"}`},
		{"other path", "GET", "/api/usage", "", 404, `{"message":"Not found"}`},
		{"root", "GET", "/", "", 404, `{"message":"Not found"}`},
	}
	h := newHandler()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			body, _ := io.ReadAll(w.Result().Body)
			if w.Code != tt.status || string(body) != tt.want {
				t.Errorf("%s %s: %d %.300s, want %d %s", tt.method, tt.path, w.Code, body, tt.status, tt.want)
			}
			if got := w.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q, want application/json", got)
			}
		})
	}
}

// HEAD /api/ping is answered like GET, without a body (a probe's request).
func TestPingHead(t *testing.T) {
	w := httptest.NewRecorder()
	newHandler().ServeHTTP(w, httptest.NewRequest("HEAD", "/api/ping", nil))
	if w.Code != http.StatusOK {
		t.Errorf("HEAD /api/ping: %d, want 200", w.Code)
	}
}
