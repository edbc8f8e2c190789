package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/pgtest"
	"kanade-backend/storage/storagetest"
)

// The production topology on one machine (issue 13): three nats-server
// nodes clustered on loopback as child processes (so that one can be
// SIGKILLed), streams and buckets at R3, one PostgreSQL, three
// kanade-backend replicas as child processes, all configured from the
// example files in docs/examples/cluster, and 50 simulated agents.
type cluster struct {
	t        *testing.T
	dir      string
	nodes    []*natsNode
	urls     string // every node's client URL, comma-separated
	dbURL    string
	replicas []*replica
	token    string
}

type natsNode struct {
	name       string
	port       string
	conf       string
	p          *proc
	killed     bool
	clientAddr string
}

type replica struct {
	name    string
	base    string // http://host:port
	config  string
	p       *proc
	stopped bool // SIGKILLed or exited, not restarted yet
}

var (
	natsServerOnce sync.Once
	natsServerBin  string
	natsServerErr  error
)

// natsServerBinary builds the stock nats-server of go.mod's version (its
// main package is in the module cache) once per test binary.
func natsServerBinary(t *testing.T) string {
	t.Helper()
	natsServerOnce.Do(func() {
		natsServerBin = filepath.Join(filepath.Dir(binary), "nats-server")
		out, err := exec.Command("go", "build", "-o", natsServerBin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsServerErr = fmt.Errorf("build nats-server: %v\n%s", err, out)
		}
	})
	if natsServerErr != nil {
		t.Fatal(natsServerErr)
	}
	return natsServerBin
}

// render fills the example file docs/examples/cluster/name into out.
func render(t *testing.T, name, out string, data any) {
	t.Helper()
	tmpl, err := template.ParseFiles(filepath.Join("..", "..", "docs", "examples", "cluster", name))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tmpl.Execute(f, data); err != nil {
		t.Fatal(err)
	}
}

func portOf(t *testing.T) string {
	t.Helper()
	_, p, err := net.SplitHostPort(freePort(t))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startCluster starts the NATS nodes, waits for JetStream to have a meta
// leader, then starts n replicas one after another (the first leads).
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), dbURL: pgtest.URL(t), token: "cluster-token"}
	bin := natsServerBinary(t)
	var clusterPorts []string
	for i := range 3 {
		c.nodes = append(c.nodes, &natsNode{name: fmt.Sprintf("nats-%d", i+1), port: portOf(t)})
		clusterPorts = append(clusterPorts, portOf(t))
	}
	var urls []string
	for i, nd := range c.nodes {
		var routes []string
		for j, cp := range clusterPorts {
			if j != i {
				routes = append(routes, "127.0.0.1:"+cp)
			}
		}
		nd.conf = filepath.Join(c.dir, nd.name+".conf")
		render(t, "nats.conf", nd.conf, map[string]any{"Name": nd.name, "Host": "127.0.0.1", "Port": nd.port,
			"ClusterPort": clusterPorts[i], "StoreDir": filepath.Join(c.dir, nd.name), "Routes": routes})
		nd.clientAddr = "127.0.0.1:" + nd.port
		urls = append(urls, "nats://"+nd.clientAddr)
		nd.p = startBinary(t, bin, nil, "-c", nd.conf)
	}
	c.urls = strings.Join(urls, ",")
	nc := c.connect()
	js, _ := jetstream.New(nc)
	apptest.Eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err
	})
	nc.Close()
	for i := range n {
		r := &replica{name: fmt.Sprintf("backend-%d", i+1), base: "http://" + freePort(t)}
		dataDir := filepath.Join(c.dir, r.name)
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		r.config = filepath.Join(dataDir, "backend.toml")
		render(t, "backend.toml", r.config, map[string]any{"DataDir": dataDir, "Bind": strings.TrimPrefix(r.base, "http://"),
			"NATSURLs": c.urls, "DBURL": c.dbURL})
		c.replicas = append(c.replicas, r)
		c.startReplica(r)
		if i == 0 {
			c.waitLeader(30*time.Second, nil)
		}
	}
	return c
}

// connect is a client of the whole cluster (it follows the nodes).
func (c *cluster) connect() *nats.Conn {
	c.t.Helper()
	nc, err := nats.Connect(c.urls, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

func (c *cluster) startReplica(r *replica) {
	c.t.Helper()
	r.p = start(c.t, []string{"KANADE_AUTH_STATIC_TOKEN=" + c.token}, "--config", r.config)
	r.stopped = false
	waitHealth(c.t, r.base, 30*time.Second)
}

// isLeader asks r's /metrics (false when r does not answer).
func (r *replica) isLeader() bool {
	if r.stopped {
		return false
	}
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get(r.base + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return slices.Contains(strings.Split(string(b), "\n"), "kanade_leader 1")
}

// waitLeader returns the one replica that leads, other than not.
func (c *cluster) waitLeader(within time.Duration, not *replica) *replica {
	c.t.Helper()
	var leader *replica
	apptest.Eventually(c.t, within, func() error {
		var ls []*replica
		for _, r := range c.replicas {
			if r != not && r.isLeader() {
				ls = append(ls, r)
			}
		}
		if len(ls) != 1 {
			return fmt.Errorf("%d leaders", len(ls))
		}
		leader = ls[0]
		return nil
	})
	return leader
}

func (c *cluster) post(path, body string) {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.replicas[len(c.replicas)-1].base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		c.t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
	}
}

// fireLog is what a plain NATS subscriber sees of the fleet's traffic:
// every Command (by subject and exec id) and every result.
type fireLog struct {
	mu       sync.Mutex
	ticks    map[string]int       // every_tick: exec id → Commands on commands.all
	tickAt   []time.Time          // arrival of each new every_tick exec
	pcFires  map[string][]fireAt  // once_per_pc: pc → Commands
	okAt     map[string]time.Time // pc → its first successful result
	results  map[string]int       // request id/pc → results published
	requests map[string]string    // request id → subject
}

type fireAt struct {
	exec string
	at   time.Time
}

func newFireLog(t *testing.T, nc *nats.Conn) *fireLog {
	t.Helper()
	l := &fireLog{ticks: map[string]int{}, pcFires: map[string][]fireAt{}, okAt: map[string]time.Time{},
		results: map[string]int{}, requests: map[string]string{}}
	if _, err := nc.Subscribe("commands.>", func(m *nats.Msg) {
		if strings.HasPrefix(m.Subject, "commands.exec.") {
			return // the engine's exec records
		}
		var cmd messages.Command
		if json.Unmarshal(m.Data, &cmd) != nil || cmd.JobID == nil {
			t.Errorf("unexpected command on %s: %s", m.Subject, m.Data)
			return
		}
		now := time.Now()
		l.mu.Lock()
		defer l.mu.Unlock()
		l.requests[cmd.RequestID] = m.Subject
		switch {
		case m.Subject == messages.SubjectCommandsAll:
			if l.ticks[*cmd.JobID] == 0 {
				l.tickAt = append(l.tickAt, now)
			}
			l.ticks[*cmd.JobID]++
		case strings.HasPrefix(m.Subject, "commands.pc."):
			pc := strings.TrimPrefix(m.Subject, "commands.pc.")
			l.pcFires[pc] = append(l.pcFires[pc], fireAt{exec: *cmd.JobID, at: now})
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("results.>", func(m *nats.Msg) {
		var r messages.ExecResult
		if json.Unmarshal(m.Data, &r) != nil {
			t.Errorf("unexpected result %s", m.Data)
			return
		}
		now := time.Now()
		l.mu.Lock()
		defer l.mu.Unlock()
		l.results[r.RequestID+"/"+r.PcID]++
		if strings.HasPrefix(l.requests[r.RequestID], "commands.pc.") && r.ExitCode == 0 {
			if _, ok := l.okAt[r.PcID]; !ok {
				l.okAt[r.PcID] = now
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return l
}

// firstTickAfter is when the first every_tick exec not seen before t
// arrived (zero if none yet).
func (l *fireLog) firstTickAfter(t time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, at := range l.tickAt {
		if at.After(t) {
			return at
		}
	}
	return time.Time{}
}

// check requires every tick instant fired once, and no once_per_pc
// Command to a PC whose success came in over a second before it (time
// enough for the leader to project it).
func (l *fireLog) check(t *testing.T) (ticks, pcs int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, n := range l.ticks {
		if n != 1 {
			t.Errorf("every_tick exec %s: %d Commands, want 1", id, n)
		}
	}
	for pc, fs := range l.pcFires {
		ok, succeeded := l.okAt[pc]
		for _, f := range fs {
			if succeeded && f.at.After(ok.Add(time.Second)) {
				t.Errorf("once_per_pc fired %s again (exec %s) %v after its success", pc, f.exec, f.at.Sub(ok))
			}
		}
	}
	return len(l.ticks), len(l.pcFires)
}

// published is how many results the agents published (and whether one
// was published twice, which the sim never does).
func (l *fireLog) published() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.results)
}

// Three replicas on a three-node NATS cluster and PostgreSQL, 50 agents,
// a */2 s every_tick schedule and a once_per_pc schedule:
//   - the leader SIGKILLed five times: each time another replica fires
//     within 10 s (the takeover times are logged), and the killed one
//     comes back as a standby;
//   - the leader SIGSTOPped for 15 s: another takes over, and once
//     resumed the old one steps down (it exits, see the README);
//   - the NATS node leading the lease bucket SIGKILLed: scheduling pauses
//     and resumes;
//
// and throughout, no instant fired twice, once_per_pc never fires a PC
// that succeeded, and every result is projected exactly once (every one
// published before the NATS node died, then every one the stream stored).
func TestClusterTakeoverFiresOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS cluster, PostgreSQL and three backends")
	}
	c := startCluster(t, 3)
	watcher := c.connect()
	fires := newFireLog(t, watcher)

	fleet, err := sim.Start(t.Context(), sim.Config{NATSURL: c.urls, Agents: 50, Heartbeat: 2 * time.Second,
		Ramp: 90 * time.Second, Seed: 13, RunTime: sim.Range{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = fleet.Stop(ctx)
	})
	c.post("/api/jobs", `{"id":"hello","version":"1","execute":{"shell":"powershell","script":"echo hi","timeout":"1m"}}`)
	c.post("/api/schedules", `{"id":"tick","cron":"*/2 * * * * *","job_id":"hello","mode":"every_tick","target":{"all":true}}`)
	c.post("/api/schedules", `{"id":"each-pc","cron":"*/2 * * * * *","job_id":"hello","mode":"once_per_pc","target":{"all":true}}`)
	apptest.Eventually(t, 15*time.Second, func() error {
		if at := fires.firstTickAfter(time.Time{}); at.IsZero() {
			return fmt.Errorf("no tick fired yet")
		}
		return nil
	})

	// SIGKILL the leader, five times.
	var takeovers []time.Duration
	for trial := range 5 {
		leader := c.waitLeader(15*time.Second, nil)
		if err := leader.p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		leader.stopped = true
		<-leader.p.done
		var fired time.Time
		apptest.Eventually(t, 12*time.Second, func() error {
			if fired = fires.firstTickAfter(killed.Add(50 * time.Millisecond)); fired.IsZero() {
				return fmt.Errorf("no tick since the kill")
			}
			return nil
		})
		d := fired.Sub(killed)
		takeovers = append(takeovers, d)
		next := c.waitLeader(5*time.Second, leader)
		t.Logf("trial %d: killed %s, %s fired %v later", trial+1, leader.name, next.name, d.Round(time.Millisecond))
		if d > 10*time.Second {
			t.Errorf("trial %d: takeover took %v, want ≤ 10s", trial+1, d)
		}
		c.startReplica(leader) // back as a standby
	}
	t.Logf("takeover times: %v", takeovers)

	// SIGSTOP the leader for 15 s (three lease TTLs), then SIGCONT.
	leader := c.waitLeader(15*time.Second, nil)
	if err := leader.p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	next := c.waitLeader(12*time.Second, leader)
	time.Sleep(15*time.Second - time.Since(stopped))
	if err := leader.p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-leader.p.done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
			t.Fatalf("the resumed leader exited with %v, want non-zero", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the resumed leader %s did not step down", leader.name)
	}
	leader.stopped = true
	if !next.isLeader() {
		t.Fatalf("%s no longer leads after %s resumed", next.name, leader.name)
	}
	t.Logf("SIGSTOP: %s took over from %s, which exited on SIGCONT", next.name, leader.name)
	c.startReplica(leader)

	// Every result the agents published so far (NATS whole throughout)
	// is projected exactly once, across five takeovers and a pause.
	st := storagetest.OpenURL(t, c.dbURL)
	js, _ := jetstream.New(watcher)
	apptest.Eventually(t, 40*time.Second, func() error {
		rows, distinct, err := projected(st)
		if err != nil {
			return err
		}
		if p := fires.published(); rows != p || distinct != p {
			return fmt.Errorf("%d results projected (%d distinct), %d published; %s", rows, distinct, p, resultsState(js))
		}
		return nil
	})

	// SIGKILL the NATS node that leads the lease bucket's stream.
	var lead string
	apptest.Eventually(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, "KV_kanade_leases")
		if err != nil {
			return err
		}
		if ci := s.CachedInfo().Cluster; ci == nil || ci.Leader == "" || len(ci.Replicas) != 2 {
			return fmt.Errorf("lease bucket cluster %+v", ci)
		} else {
			lead = ci.Leader
		}
		return nil
	})
	var node *natsNode
	for _, nd := range c.nodes {
		if nd.name == lead {
			node = nd
		}
	}
	if node == nil {
		t.Fatalf("no node named %q", lead)
	}
	if err := node.p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	nodeKilled := time.Now()
	node.killed = true
	apptest.Eventually(t, 30*time.Second, func() error {
		if at := fires.firstTickAfter(nodeKilled.Add(3 * time.Second)); at.IsZero() {
			return fmt.Errorf("no tick since the lease stream's node was killed")
		}
		return nil
	})
	fires.mu.Lock()
	var gap time.Duration
	for i := 1; i < len(fires.tickAt); i++ {
		if fires.tickAt[i].After(nodeKilled) && fires.tickAt[i-1].Before(nodeKilled.Add(time.Second)) {
			gap = max(gap, fires.tickAt[i].Sub(fires.tickAt[i-1]))
		}
	}
	fires.mu.Unlock()
	t.Logf("killed NATS node %s (lease stream leader): scheduling resumed, longest gap between ticks %v", lead, gap.Round(time.Millisecond))
	c.waitLeader(15*time.Second, nil)

	// Every result the RESULTS stream stored is projected exactly once.
	// Agents publish results with core NATS (the wire contract): those
	// published while the stream had no leader, after its node died, were
	// never stored, and are counted apart.
	apptest.Eventually(t, 40*time.Second, func() error {
		rows, distinct, err := projected(st)
		if err != nil {
			return err
		}
		stored, err := streamMsgs(js)
		if err != nil {
			return err
		}
		if rows != int(stored) || distinct != rows {
			return fmt.Errorf("%d results projected (%d distinct), stream stored %d; %s", rows, distinct, stored, resultsState(js))
		}
		return nil
	})
	stored, _ := streamMsgs(js)
	t.Logf("%d results published, %d stored by RESULTS (the rest while its node was dead), all projected once", fires.published(), stored)
	ticks, pcs := fires.check(t)
	stats := fleet.Stats()
	var execs int
	if err := st.R.NewSelect().Model((*storage.Execution)(nil)).ColumnExpr("count(*)").Scan(context.Background(), &execs); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d tick instants fired once each, %d PCs fired by once_per_pc, %d execs; fleet: %s", ticks, pcs, execs, stats)
	// The agents come on over 90 s; the once_per_pc schedule reaches them
	// as the leader learns of them (12 to 27 PCs in a run).
	if pcs < 5 {
		t.Errorf("once_per_pc fired only %d PCs", pcs)
	}
}

// resultsState says how far the results stream and its projector are.
func resultsState(js jetstream.JetStream) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, messages.StreamResults)
	if err != nil {
		return err.Error()
	}
	out := fmt.Sprintf("stream %s holds %d", messages.StreamResults, s.CachedInfo().State.Msgs)
	if c, err := s.Consumer(ctx, "kanade-projector-results"); err == nil {
		ci := c.CachedInfo()
		out += fmt.Sprintf(", consumer delivered %d acked %d pending %d ack-pending %d", ci.Delivered.Stream, ci.AckFloor.Stream, ci.NumPending, ci.NumAckPending)
	}
	return out
}

// projected counts the result rows, and their distinct keys.
func projected(st *storage.Store) (rows, distinct int, err error) {
	err = st.R.NewSelect().TableExpr("execution_results").ColumnExpr("count(*)").
		ColumnExpr("count(DISTINCT request_id || '/' || pc_id)").Scan(context.Background(), &rows, &distinct)
	return rows, distinct, err
}

// streamMsgs is how many results the RESULTS stream holds.
func streamMsgs(js jetstream.JetStream) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, messages.StreamResults)
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.Msgs, nil
}
