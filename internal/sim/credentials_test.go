package sim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/messages"
)

// kit mints a credential for each pc_id through the API and reads the CSV
// the way kanade-fleet --credentials does.
func kit(t testing.TB, b *apptest.Backend, pcIDs []string) []sim.Credential {
	t.Helper()
	resp, out := b.Do(t, "POST", "/api/agents/credentials", map[string]any{"pc_ids": pcIDs})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("bulk mint: %d %s", resp.StatusCode, out)
	}
	creds, err := sim.ReadCredentials(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

type execution struct {
	Status       string `json:"status"`
	SuccessCount int    `json:"success_count"`
	ExpectedPcs  int    `json:"expected_pcs"`
}

// execAndWait fires job at target and waits for the exec to complete with
// every expected PC successful.
func execAndWait(t *testing.T, b *apptest.Backend, job, target string, want int) {
	t.Helper()
	var fired struct {
		ExecID string `json:"exec_id"`
	}
	b.JSON(t, "POST", "/api/exec/"+job, `{"target":`+target+`}`, http.StatusOK, &fired)
	apptest.Eventually(t, 30*time.Second, func() error {
		var ex execution
		b.JSON(t, "GET", "/api/executions/"+fired.ExecID, nil, http.StatusOK, &ex)
		if ex.Status != "completed" || ex.SuccessCount != want || ex.ExpectedPcs != want {
			return fmt.Errorf("exec at %s: %+v, want completed %d/%d", target, ex, want, want)
		}
		return nil
	})
}

// Every simulated agent on its own connection with its own token, against
// a whole backend whose embedded NATS enforces agent credentials:
// heartbeats, broadcast, group and per-PC Commands, results and kills all
// work, and no agent can step outside its own subjects.
func TestFleetWithPerPCCredentials(t *testing.T) {
	t.Parallel()
	const n = 60
	b := apptest.Start(t)
	ids := sim.PCIDs("KIT-", n)
	creds := kit(t, b, ids)
	b.JSON(t, "POST", "/api/jobs", map[string]any{"id": "hello", "version": "1.0.0",
		"execute": map[string]any{"shell": "powershell", "script": "echo hi", "timeout": "30s"}}, http.StatusOK, nil)
	f := b.StartFleet(t, sim.Config{Credentials: creds, Heartbeat: time.Second})
	if got := f.PCIDs(); len(got) != n || got[0] != "KIT-0001" {
		t.Fatalf("fleet pc_ids %v", got[:3])
	}

	// Heartbeats: every agent appears.
	apptest.Eventually(t, 15*time.Second, func() error {
		resp, _ := b.Do(t, "GET", "/api/agents?limit=1", nil)
		if got := resp.Header.Get("X-Total-Count"); got != fmt.Sprint(n) {
			return fmt.Errorf("%s agents", got)
		}
		return nil
	})

	// Groups, set after the agents started: their own watches follow.
	for _, pc := range ids[:10] {
		b.JSON(t, "PUT", "/api/agents/"+pc+"/groups", `{"groups":["canary"]}`, http.StatusOK, nil)
	}
	time.Sleep(300 * time.Millisecond) // the agents' watches deliver the change
	execAndWait(t, b, "hello", `{"all":true}`, n)
	execAndWait(t, b, "hello", `{"groups":["canary"]}`, 10)
	execAndWait(t, b, "hello", `{"pcs":["KIT-0042"]}`, 1)
	if s := f.Stats(); s.ResultsSent != n+10+1 || s.CommandsReceived != n+10+1 {
		t.Fatalf("fleet stats %+v", s)
	}

	// A kill reaches only the agents running the job.
	b.JSON(t, "POST", "/api/jobs", map[string]any{"id": "slow", "version": "1", "execute": map[string]any{"shell": "powershell", "script": "sleep 30s", "timeout": "60s"}}, http.StatusOK, nil)
	var fired struct {
		ExecID string `json:"exec_id"`
	}
	b.JSON(t, "POST", "/api/exec/slow", `{"target":{"pcs":["KIT-0001","KIT-0002"]}}`, http.StatusOK, &fired)
	apptest.Eventually(t, 10*time.Second, func() error {
		if got := f.Stats().CommandsReceived; got != n+10+1+2 {
			return fmt.Errorf("%d commands received", got)
		}
		return nil
	})
	b.JSON(t, "POST", "/api/executions/"+fired.ExecID+"/kill", nil, http.StatusNoContent, nil)
	apptest.Eventually(t, 10*time.Second, func() error {
		if k := f.Stats().Killed; k != 2 {
			return fmt.Errorf("%d killed", k)
		}
		return nil
	})

	// The logs of an agent come from its own connection.
	resp, out := b.Do(t, "GET", "/api/agents/KIT-0007/logs?tail_lines=5", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(out), "pc_id=KIT-0007") && !strings.Contains(string(out), "KIT-0007") {
		t.Fatalf("logs of KIT-0007: %d %s", resp.StatusCode, out)
	}

	// The tokens are what the simulated agents used: one of them cannot
	// command the fleet.
	nc, err := nats.Connect(b.NATSURL, nats.Token(creds[0].Token))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	errs := make(chan error, 1)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	})
	cmd, _ := json.Marshal(messages.Command{ID: "hello", Version: "1.0.0", RequestID: "evil", Script: "exit 0"})
	if err := nc.Publish(messages.SubjectCommandsAll, cmd); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), `Publish to "commands.all"`) {
			t.Fatalf("unexpected error %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("an agent's token published to commands.all")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	<-ctx.Done()
	if got := f.Stats().CommandsReceived; got != n+10+1+2 {
		t.Fatalf("the forged broadcast reached the fleet: %d commands", got)
	}
}

func TestReadCredentials(t *testing.T) {
	good := "pc_id,token\nPC-1,kanade_pc_a\nPC-2,kanade_pc_b\n"
	creds, err := sim.ReadCredentials(strings.NewReader(good))
	if err != nil || len(creds) != 2 || creds[1] != (sim.Credential{PcID: "PC-2", Token: "kanade_pc_b"}) {
		t.Fatalf("%v %v", creds, err)
	}
	for in, want := range map[string]string{
		"PC-1,tok\n":                       "header line",
		"pc_id,token\n":                    "no PC listed",
		"pc_id,token\nPC-1,\n":             "has no token",
		"pc_id,token\nPC 1,t\n":            "invalid pc_id",
		"pc_id,token\nA,t\nA,u\n":          "listed twice",
		"pc_id,token\nA,t,extra\n":         "wrong number of fields",
		"pc_id,token\nA,t\nB\n":            "wrong number of fields",
		"pc_id,token,groups\nA,t,canary\n": "wrong number of fields",
	} {
		if _, err := sim.ReadCredentials(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

// kanade-fleet --credentials runs the CSV's agents, each with its own
// token; --assign-groups then names the same PCs, written with an
// operator's token as the fleet's own NATS credential.
func TestCredentialsFlag(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	csvPath := t.TempDir() + "/kit.csv"
	resp, out := b.Do(t, "POST", "/api/agents/credentials", map[string]any{"pc_ids": []string{"FLAG-1", "FLAG-2", "FLAG-3"}})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
	if err := os.WriteFile(csvPath, out, 0o600); err != nil {
		t.Fatal(err)
	}
	op := b.CreateOperator(t, "kitter", "operator")
	env := func(k string) string {
		if k == sim.EnvNATSToken {
			return op
		}
		return ""
	}
	var stdout, stderr bytes.Buffer
	args := []string{"--nats-url", b.NATSURL, "--credentials", csvPath, "--agents", "2", "--assign-groups", "canary=1"}
	if code := sim.Run(context.Background(), args, env, &stdout, &stderr); code != 0 {
		t.Fatalf("assign: exit %d: %s", code, stderr.String())
	}
	if want := "canary: 1 PCs (FLAG-1..FLAG-1)\n"; stdout.String() != want {
		t.Fatalf("stdout %q, want %q", stdout.String(), want)
	}
	stdout.Reset()
	args = []string{"--nats-url", b.NATSURL, "--credentials", csvPath, "--heartbeat", "200ms", "--stop-after", "2s"}
	if code := sim.Run(context.Background(), args, noEnv, &stdout, &stderr); code != 0 {
		t.Fatalf("run: exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "agents=3 ") || strings.Contains(stdout.String(), "heartbeats=0 ") {
		t.Fatalf("summary %q", stdout.String())
	}
	var agents []struct {
		PcID string `json:"pc_id"`
	}
	b.JSON(t, "GET", "/api/agents", nil, http.StatusOK, &agents)
	if len(agents) != 3 {
		t.Fatalf("agents %v", agents)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--credentials", "/nonexistent.csv"}, "no such file"},
		{[]string{"--credentials", csvPath, "--agents", "4"}, "--agents 4: " + csvPath + " lists 3 PCs"},
	} {
		stderr.Reset()
		if code := sim.Run(context.Background(), c.args, noEnv, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", c.args, code, stderr.String(), c.want)
		}
	}
}
