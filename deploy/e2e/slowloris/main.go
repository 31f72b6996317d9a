// Command slowloris holds many connections open to an HTTP server by
// sending a request's head a line at a time and never finishing it: the
// slow-client flood of the end-to-end test (make e2e), run in a container
// of its own so that the gateway sees it as one client.
//
//	slowloris -c 1000 -d 20s -every 5s gateway:80
//
// It prints how many connections it opened, how many the server closed
// (with or without an answer) and how many were still open at the end.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	conns := flag.Int("c", 1000, "connections to hold")
	duration := flag.Duration("d", 20*time.Second, "how long to hold them")
	every := flag.Duration("every", 5*time.Second, "a header line on each connection this often")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: slowloris [-c N] [-d D] [-every D] host:port")
		os.Exit(2)
	}
	addr := flag.Arg(0)
	end := time.Now().Add(*duration)
	var opened, closed, failed atomic.Int64
	var wg sync.WaitGroup
	for i := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				failed.Add(1)
				return
			}
			defer c.Close()
			opened.Add(1)
			// The server closing the connection (or answering, which a
			// server does only when it gives up on the request) ends it.
			gone := make(chan struct{})
			go func() {
				var b [512]byte
				c.Read(b[:])
				close(gone)
			}()
			line := fmt.Sprintf("GET /api/ping HTTP/1.1\r\nHost: %s\r\nX-Pesto-Token: slow-%d\r\n", addr, i)
			tick := time.NewTicker(*every)
			defer tick.Stop()
			for {
				if _, err := c.Write([]byte(line)); err != nil {
					closed.Add(1)
					return
				}
				line = "X-Slow: 1\r\n"
				select {
				case <-gone:
					closed.Add(1)
					return
				case <-time.After(time.Until(end)):
					return
				case <-tick.C:
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("slowloris: %d opened, %d closed by the server, %d still open at the end, %d failed to connect\n",
		opened.Load(), closed.Load(), opened.Load()-closed.Load(), failed.Load())
}
