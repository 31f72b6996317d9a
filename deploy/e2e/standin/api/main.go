// Command api stands in for the image compose.yaml names for the API
// (traefik/whoami) where no registry is reachable: on :80 it answers every
// request 200 with the request echoed, as whoami does ("Hostname: …", then
// the request line and headers). Built and imported by deploy/e2e/run.sh.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"slices"
	"strings"
)

func main() {
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		fmt.Fprintf(&b, "Hostname: %s\n%s %s %s\nHost: %s\n", host, r.Method, r.RequestURI, r.Proto, r.Host)
		names := make([]string, 0, len(r.Header))
		for name := range r.Header {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			for _, v := range r.Header[name] {
				fmt.Fprintf(&b, "%s: %s\n", name, v)
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, b.String())
	})
	log.Fatal(http.ListenAndServe(":80", nil))
}
