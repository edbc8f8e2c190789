package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
)

// StoreHealth watches the embedded server's JetStream file store and
// repairs it.
//
// nats-server keeps running when its store cannot write (disk full, I/O
// error): the stream concerned stops storing, publishers get no
// acknowledgement, and the stream stays broken until the server restarts,
// even once space is freed; on some errors (permission denied) the server
// disables JetStream altogether. The server reports a store failure only in
// its log, so StoreHealth reads it there (the embedded server's log goes
// through it, see EmbeddedOptions.Store), lists the streams that cannot
// store for fleet health, and recovers them without restarting the
// process: once the store directory takes writes again, it restarts the
// embedded server in place (Embedded.Restart), which recovers every
// stream, durable consumer and bucket from disk with everything they had
// stored; clients reconnect by themselves. (Restarting only JetStream
// inside the running server, ShutdownJetStream then EnableJetStream, also
// recovers the streams, but races with API requests in flight inside
// nats-server.)
type StoreHealth struct {
	log *slog.Logger

	mu      sync.Mutex
	emb     *Embedded
	failing map[string]StoreFailure

	recoveries atomic.Uint64
}

// StoreFailure is one stream that cannot store, or (Stream "") JetStream
// disabled as a whole.
type StoreFailure struct {
	Stream string
	Reason string
	Since  time.Time
}

// NewStoreHealth returns a StoreHealth to pass in EmbeddedOptions.Store.
func NewStoreHealth(logger *slog.Logger) *StoreHealth {
	if logger == nil {
		logger = slog.Default()
	}
	return &StoreHealth{log: logger.With("component", "jetstream-store"), failing: map[string]StoreFailure{}}
}

// attach binds the server (called by StartEmbedded).
func (h *StoreHealth) attach(e *Embedded) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.emb = e
}

// server is the current server, nil before attach or while a restart
// failed.
func (h *StoreHealth) server() *server.Server {
	h.mu.Lock()
	e := h.emb
	h.mu.Unlock()
	if e == nil {
		return nil
	}
	return e.Server()
}

// The server's log lines that mean a stream could not store a message
// (nats-server 2.10–2.12 wording; the disk-full test pins it):
//
//	JetStream failed to store a msg on stream '$G > RESULTS': write …: no space left on device
//	JetStream stream '$G > RESULTS' critical write error: …
//	Filestore [RESULTS] Critical write error: …
var (
	reStreamStore = regexp.MustCompile(`(?:failed to store a msg on stream|JetStream stream) '[^']*? > ([^']+)'(?: critical write error)?: (.*)`)
	reFilestore   = regexp.MustCompile(`Filestore \[([^\]]+)\] Critical write error: (.*)`)
)

// serverLog inspects one warning or error of the embedded server.
func (h *StoreHealth) serverLog(msg string) {
	var stream, reason string
	if m := reStreamStore.FindStringSubmatch(msg); m != nil && (strings.Contains(msg, "failed to store") || strings.Contains(msg, "critical write error")) {
		stream, reason = m[1], m[2]
	} else if m := reFilestore.FindStringSubmatch(msg); m != nil {
		stream, reason = m[1], m[2]
	} else {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.failing[stream]; ok {
		return
	}
	h.failing[stream] = StoreFailure{Stream: stream, Reason: "cannot store messages: " + reason, Since: time.Now().UTC()}
	h.log.Error("JetStream stream cannot store messages; it will be recovered once the store takes writes again",
		"stream", stream, "err", reason)
}

// Failures lists the streams that cannot store, sorted, and JetStream
// itself (Stream "") when the server has disabled it.
func (h *StoreHealth) Failures() []StoreFailure {
	ns := h.server()
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]StoreFailure, 0, len(h.failing)+1)
	switch {
	case h.emb == nil:
	case ns == nil:
		out = append(out, StoreFailure{Reason: "the embedded NATS server is not running; it is being restarted"})
	case ns.Running() && !ns.JetStreamEnabled():
		out = append(out, StoreFailure{Reason: "JetStream is disabled by the server (store errors); it will be restarted once the store takes writes again"})
	}
	for _, f := range h.failing {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stream < out[j].Stream })
	return out
}

// Recoveries is how many times the server was restarted to recover.
func (h *StoreHealth) Recoveries() uint64 { return h.recoveries.Load() }

// Recover restarts the embedded server when a stream cannot store,
// JetStream was disabled or an earlier restart failed, and the store
// directory takes writes again. It reports whether it restarted the server.
func (h *StoreHealth) Recover() (bool, error) {
	if len(h.Failures()) == 0 {
		return false, nil
	}
	h.mu.Lock()
	e := h.emb
	h.mu.Unlock()
	if e == nil {
		return false, nil
	}
	if err := probeWritable(e.StoreDir()); err != nil {
		return false, fmt.Errorf("JetStream store still not writable: %w", err)
	}
	h.log.Warn("restarting the embedded NATS server to recover its JetStream store; clients reconnect", "store_dir", e.StoreDir())
	h.mu.Lock()
	// Failures seen from now on are the new server's.
	h.failing = map[string]StoreFailure{}
	h.mu.Unlock()
	if err := e.Restart(); err != nil {
		return false, fmt.Errorf("restart the embedded NATS server: %w", err)
	}
	h.recoveries.Add(1)
	h.log.Info("embedded NATS server restarted; its streams store again")
	return true, nil
}

// probeSize is what probeWritable writes: a stream needs room for at least
// a block of messages, not just one byte.
const probeSize = 4 << 20

// probeWritable writes and deletes a probeSize file in dir.
func probeWritable(dir string) error {
	path := filepath.Join(dir, ".kanade-write-probe")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(make([]byte, probeSize))
	serr := f.Sync()
	cerr := f.Close()
	rerr := os.Remove(path)
	return errors.Join(werr, serr, cerr, rerr)
}

// maxRestartBackoff bounds the wait between two restarts of a store that
// keeps breaking right after each one.
const maxRestartBackoff = 10 * time.Minute

// Run tries Recover every interval until ctx ends. A store that breaks
// again soon after a restart (a failing device rather than a full disk) is
// restarted after a doubling wait, so that agents are not disconnected
// every interval.
func (h *StoreHealth) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	lastErr := ""
	backoff := interval
	var notBefore, lastRestart time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Now().Before(notBefore) {
			continue
		}
		if len(h.Failures()) == 0 {
			if time.Since(lastRestart) > maxRestartBackoff {
				backoff = interval // stable for a good while
			}
			continue
		}
		msg := ""
		restarted, err := h.Recover()
		if err != nil {
			msg = err.Error()
		}
		if restarted {
			lastRestart = time.Now()
			notBefore = lastRestart.Add(backoff)
			backoff = min(2*backoff, maxRestartBackoff)
		}
		// Say once why recovery waits, not every interval.
		if msg != "" && msg != lastErr {
			h.log.Warn("JetStream store not recovered yet", "err", msg)
		}
		lastErr = msg
	}
}

// Collector exports kanade_jetstream_store_failing{stream} and
// kanade_jetstream_store_recoveries_total.
func (h *StoreHealth) Collector() prometheus.Collector { return storeCollector{h} }

var (
	descStoreFailing = prometheus.NewDesc("kanade_jetstream_store_failing",
		`1 for each JetStream stream of the embedded server that cannot store messages (stream "" means JetStream is disabled); absent when all store.`, []string{"stream"}, nil)
	descStoreRecoveries = prometheus.NewDesc("kanade_jetstream_store_recoveries_total",
		"Times the embedded NATS server was restarted to recover its JetStream store from write errors.", nil, nil)
)

type storeCollector struct{ h *StoreHealth }

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descStoreFailing
	ch <- descStoreRecoveries
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, f := range c.h.Failures() {
		ch <- prometheus.MustNewConstMetric(descStoreFailing, prometheus.GaugeValue, 1, f.Stream)
	}
	ch <- prometheus.MustNewConstMetric(descStoreRecoveries, prometheus.CounterValue, float64(c.h.Recoveries()))
}
