package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"kanade-backend/http/httpx"
	"kanade-backend/http/server"
)

// listen serves r with lim on a loopback port until the test ends.
func listen(t *testing.T, r *server.Router, opts server.Options, lim server.Limits) string {
	t.Helper()
	srv, err := server.Listen("127.0.0.1:0", r.Handler(opts), lim)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv.Addr()
}

// slowPost sends a POST whose 20-byte body takes 20 × gap, and returns the
// status line, or the error that ended the exchange.
func slowPost(addr, path string, gap time.Duration) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n", path); err != nil {
		return "", err
	}
	for i := 0; i < 20; i++ {
		time.Sleep(gap)
		if _, err := c.Write([]byte("x")); err != nil {
			return "", err
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// The read timeout covers the body; a route that takes uploads may allow
// its body longer.
func TestReadTimeoutAndBodyTimeout(t *testing.T) {
	r := server.NewRouter()
	read := func(w http.ResponseWriter, req *http.Request) error {
		if _, err := httpx.ReadBody(w, req, 100); err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, "read")
		return nil
	}
	r.API("POST /api/short", read)
	r.API("POST /api/upload", read, server.BodyTimeout(5*time.Second))
	addr := listen(t, r, server.Options{}, server.Limits{ReadTimeout: 300 * time.Millisecond})

	if line, err := slowPost(addr, "/api/upload", 50*time.Millisecond); err != nil || line != "HTTP/1.1 200 OK" {
		t.Fatalf("upload route: %q %v", line, err)
	}
	line, err := slowPost(addr, "/api/short", 50*time.Millisecond)
	if err == nil && strings.Contains(line, "200") {
		t.Fatalf("a 1 s body beat a 300 ms read timeout: %q", line)
	}
}

// A handler may wait longer than the write timeout before it answers (the
// timeout starts at the first byte); a client that stops reading a large
// response is cut off after it.
func TestWriteTimeoutStartsAtTheFirstByte(t *testing.T) {
	r := server.NewRouter()
	r.API("GET /api/wait", func(w http.ResponseWriter, req *http.Request) error {
		time.Sleep(600 * time.Millisecond)
		httpx.WriteJSON(w, http.StatusOK, "waited")
		return nil
	})
	writeErr := make(chan time.Duration, 1)
	r.API("GET /api/big", func(w http.ResponseWriter, req *http.Request) error {
		start := time.Now()
		chunk := make([]byte, 1<<20)
		for i := 0; i < 256; i++ {
			if _, err := w.Write(chunk); err != nil {
				writeErr <- time.Since(start)
				return nil
			}
		}
		writeErr <- -1
		return nil
	})
	addr := listen(t, r, server.Options{WriteTimeout: 300 * time.Millisecond}, server.Limits{})

	resp, err := http.Get("http://" + addr + "/api/wait")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "waited") {
		t.Fatalf("slow handler: %d %s", resp.StatusCode, body)
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /api/big HTTP/1.1\r\nHost: x\r\n\r\n") // and never read
	select {
	case d := <-writeErr:
		if d < 0 || d > 3*time.Second {
			t.Fatalf("write to a client that does not read ended after %v, want about 300ms", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler is still writing to a client that does not read")
	}
}

func TestOverlongQueryIs400(t *testing.T) {
	r := server.NewRouter()
	r.API("GET /api/things", func(w http.ResponseWriter, req *http.Request) error {
		httpx.WriteJSON(w, http.StatusOK, len(req.URL.Query().Get("q")))
		return nil
	})
	addr := listen(t, r, server.Options{}, server.Limits{})
	for _, c := range []struct {
		n    int
		want int
	}{{4000, 200}, {50001, 400}, {200000, 431}} {
		resp, err := http.Get(fmt.Sprintf("http://%s/api/things?q=%s", addr, strings.Repeat("a", c.n)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("q of %d bytes: %d %s, want %d", c.n, resp.StatusCode, body, c.want)
		}
	}
}

// Connections beyond the per-client cap are closed at accept; the others,
// and other clients, are served.
func TestConnectionCaps(t *testing.T) {
	r := server.NewRouter()
	r.Public("GET /health", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	var mu sync.Mutex
	var rejected []string
	addr := listen(t, r, server.Options{}, server.Limits{MaxConns: 6, MaxConnsPerClient: 3,
		Rejected: func(l string) { mu.Lock(); rejected = append(rejected, l); mu.Unlock() }})
	dial := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return nil
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	served := func(c net.Conn) bool {
		if c == nil {
			return false
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := fmt.Fprintf(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return false
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		return err == nil && strings.HasPrefix(line, "HTTP/1.1 200")
	}
	var held []net.Conn
	for i := 0; i < 3; i++ {
		c := dial("127.0.0.2")
		if !served(c) {
			t.Fatalf("connection %d of 127.0.0.2 not served", i)
		}
		held = append(held, c)
	}
	if served(dial("127.0.0.2")) {
		t.Fatal("a fourth connection from 127.0.0.2 was served")
	}
	for i := 0; i < 3; i++ {
		if !served(dial("127.0.0.3")) {
			t.Fatalf("127.0.0.3 connection %d not served", i)
		}
	}
	if served(dial("127.0.0.4")) {
		t.Fatal("a seventh connection overall was served")
	}
	held[0].Close()
	time.Sleep(100 * time.Millisecond)
	if !served(dial("127.0.0.4")) {
		t.Fatal("a slot freed by a closed connection was not reused")
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(rejected, ",") != "per_client,total" {
		t.Fatalf("rejected = %v", rejected)
	}
}
