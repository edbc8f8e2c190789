package server_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/cmd/kanade-backend/app"
	"kanade-backend/internal/apptest"
)

// attacker is one slow-body connection.
type attacker struct {
	conn   net.Conn
	opened time.Time
	closed chan time.Time // when the server closed it (or refused it)
}

// openSlowBody opens a connection from src and sends the headers of a POST
// whose body then trickles in a byte at a time; half carry the token.
func openSlowBody(t *testing.T, addr string, src net.IP, withToken bool) *attacker {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
	opened := time.Now()
	c, err := d.Dial("tcp", addr)
	a := &attacker{conn: c, opened: opened, closed: make(chan time.Time, 1)}
	if err != nil {
		// Reset before the dialer saw the handshake complete: the server
		// resets a connection beyond its caps as soon as it accepts it.
		a.closed <- time.Now()
		return a
	}
	auth := ""
	if withToken {
		auth = "Authorization: Bearer " + apptest.Token + "\r\n"
	}
	// A refused connection may already be reset; the reader below notices.
	_, _ = fmt.Fprintf(c, "POST /api/jobs HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", auth)
	go func() {
		_, _ = io.Copy(io.Discard, c) // returns when the server closes or resets
		a.closed <- time.Now()
	}()
	return a
}

// 1 000 connections sending a body slowly, half without a token, from one
// client address: /health stays fast from another address, the embedded
// NATS still accepts clients, and every attacking connection is closed
// within the read timeout (those beyond the per-client cap at once).
func TestSlowBodiesCannotStarveHealth(t *testing.T) {
	const readTimeout = 2 * time.Second
	b := apptest.Start(t, apptest.Options{Configure: func(c *app.Config) {
		c.Server.ReadTimeout = app.Duration{Duration: readTimeout}
	}})
	addr := strings.TrimPrefix(b.URL, "http://")
	attackerIP := net.ParseIP("127.0.0.2")

	var mu sync.Mutex
	var attackers []*attacker
	// The most connections the server held open at once, sampled.
	var mostOpen atomic.Int64
	recordOpen := func() {
		n := int64(b.HTTP.OpenConns())
		for {
			cur := mostOpen.Load()
			if n <= cur || mostOpen.CompareAndSwap(cur, n) {
				return
			}
		}
	}
	stopTrickle := make(chan struct{})
	var wg sync.WaitGroup
	allOpen := make(chan struct{})
	go func() {
		defer close(allOpen)
		for i := 0; i < 1000; i++ {
			a := openSlowBody(t, addr, attackerIP, i%2 == 0)
			mu.Lock()
			attackers = append(attackers, a)
			mu.Unlock()
		}
	}()
	// The trickle: one byte per connection every 500 ms, far too slow to
	// finish 100 000 bytes within the read timeout (and cheap for the test
	// machine, which plays attacker and server at once).
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopTrickle:
				return
			case <-tick.C:
			}
			recordOpen()
			mu.Lock()
			as := slices.Clone(attackers)
			mu.Unlock()
			for _, a := range as {
				if a.conn != nil {
					_ = a.conn.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
					_, _ = a.conn.Write([]byte(" "))
				}
			}
		}
	}()

	// A monitor polls /health from 127.0.0.1 during the attack.
	hc := &http.Client{Timeout: 5 * time.Second}
	var lat []time.Duration
	end := time.Now().Add(readTimeout + time.Second)
	natsChecked := false
	for time.Now().Before(end) {
		t0 := time.Now()
		resp, err := hc.Get(b.URL + "/health")
		if err != nil {
			t.Fatalf("/health during the attack: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/health during the attack: %d", resp.StatusCode)
		}
		lat = append(lat, time.Since(t0))
		recordOpen()
		if !natsChecked {
			nc, err := nats.Connect(b.NATSURL, nats.Timeout(2*time.Second))
			if err != nil {
				t.Fatalf("embedded NATS refuses a client during the attack: %v", err)
			}
			nc.Close()
			natsChecked = true
		}
		time.Sleep(5 * time.Millisecond)
	}
	slices.Sort(lat)
	p99 := lat[len(lat)*99/100]
	t.Logf("/health during the attack: %d requests, p50 %v, p99 %v, max %v", len(lat), lat[len(lat)/2], p99, lat[len(lat)-1])
	if p99 > 100*time.Millisecond {
		t.Errorf("/health p99 %v during the attack, want < 100ms", p99)
	}

	<-allOpen
	mu.Lock()
	as := slices.Clone(attackers)
	mu.Unlock()
	refused, held := 0, 0
	var longest time.Duration
	for _, a := range as {
		select {
		case at := <-a.closed:
			d := at.Sub(a.opened)
			longest = max(longest, d)
			if d < readTimeout/2 {
				refused++
			} else {
				held++
			}
			// The read timeout plus the scheduling slack of a loaded,
			// race-instrumented test machine.
			if d > readTimeout+1500*time.Millisecond {
				t.Errorf("a slow connection stayed open %v, read timeout %v", d, readTimeout)
			}
		case <-time.After(readTimeout + 2*time.Second):
			t.Fatalf("a slow connection opened %v ago is still open", time.Since(a.opened))
		}
	}
	close(stopTrickle)
	wg.Wait()
	for _, a := range as {
		if a.conn != nil {
			a.conn.Close()
		}
	}
	t.Logf("attack: %d connections closed at accept (over the per-client cap), %d held until the read timeout; "+
		"at most %d connections open at once (server side); longest %v", refused, held, mostOpen.Load(), longest)
	// The attacker's connections never exceed the per-client cap; the
	// monitor adds its own one or two.
	if held == 0 || mostOpen.Load() > 128+2 {
		t.Errorf("%d connections held, at most %d open at once: want some, and no more than the per-client cap of 128 (+2)", held, mostOpen.Load())
	}
	_, body := b.Do(t, "GET", "/metrics", nil)
	if !strings.Contains(string(body), `kanade_http_connections_rejected_total{limit="per_client"}`) {
		t.Errorf("no per_client rejections in /metrics")
	}
}
