package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"kanade-backend/internal/testsupport"
)

// The external-cluster path end to end, with the real binary: nats-config
// prints the block, a nats-server started from it (parsed by its own
// config parser) runs the backend's auth callout once the backend starts
// with --nats-url, a credential minted over HTTP opens only its PC's
// subjects, and revoking it over HTTP disconnects the agent through the
// system account.
func TestBinaryExternalNATSWithCallout(t *testing.T) {
	dataDir := t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binary, "nats-config", "--data-dir", dataDir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nats-config: %v %s", err, stderr.String())
	}
	block := stdout.String()
	if !strings.Contains(block, "auth_callout") || !strings.Contains(stderr.String(), "nats-callout.json") {
		t.Fatalf("nats-config printed %q / %q", block, stderr.String())
	}
	conf := filepath.Join(t.TempDir(), "nats.conf")
	full := fmt.Sprintf("listen: \"127.0.0.1:-1\"\njetstream { store_dir: %q }\n%s", t.TempDir(), block)
	if err := os.WriteFile(conf, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("the printed block does not parse: %v", err)
	}
	opts.NoSigs, opts.NoLog = true, true
	ns := testsupport.RunNATSServer(t, opts)

	httpAddr := freePort(t)
	p := start(t, []string{"KANADE_AUTH_STATIC_TOKEN=s3cret"},
		"--bind", httpAddr, "--data-dir", dataDir, "--nats-url", ns.ClientURL())
	base := "http://" + httpAddr
	waitHealth(t, base, 20*time.Second)

	var health struct {
		Warnings []string `json:"warnings"`
	}
	code, body := get(t, base+"/api/health/fleet", "s3cret")
	if err := json.Unmarshal(body, &health); err != nil || len(health.Warnings) != 0 {
		t.Fatalf("health %d %s", code, body)
	}
	req, _ := http.NewRequest("POST", base+"/api/agents/EXT-1/credentials", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var cred struct {
		ID, Token string
	}
	if err := json.NewDecoder(resp.Body).Decode(&cred); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("mint: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()

	var violations testsupport.Violations
	var down atomic.Int32
	agent, err := nats.Connect(ns.ClientURL(), nats.Token(cred.Token), nats.ReconnectWait(50*time.Millisecond),
		violations.Option(),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { down.Add(1) }))
	if err != nil {
		t.Fatalf("agent on the external server: %v", err)
	}
	defer agent.Close()
	if err := agent.Publish("commands.all", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// An agent credential must not publish to commands.all there.
	violations.Wait(t, 3*time.Second, `"commands.all"`)
	if _, err := nats.Connect(ns.ClientURL()); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous client on the external server: %v", err)
	}

	req, _ = http.NewRequest("DELETE", base+"/api/agents/EXT-1/credentials/"+cred.ID, nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var rev struct {
		Disconnected int `json:"disconnected"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rev); err != nil || rev.Disconnected != 1 {
		t.Fatalf("revoke: %d %+v %v", resp.StatusCode, rev, err)
	}
	resp.Body.Close()
	testsupport.Eventually(t, 5*time.Second, func() error {
		if down.Load() == 0 {
			return errors.New("the revoked agent is still connected to the external server")
		}
		return nil
	})
	p.sigterm(t)
}

// Without nats-config, an external server is used as before, and health
// says agent credentials are not enforced.
func TestBinaryExternalNATSWithoutCallout(t *testing.T) {
	ns := testsupport.RunNATSServer(t, &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir()})
	httpAddr := freePort(t)
	p := start(t, []string{"KANADE_AUTH_STATIC_TOKEN=s3cret"},
		"--bind", httpAddr, "--data-dir", t.TempDir(), "--nats-url", ns.ClientURL())
	base := "http://" + httpAddr
	waitHealth(t, base, 20*time.Second)
	var health struct {
		Warnings []string `json:"warnings"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, base+"/api/health/fleet", "s3cret")
		if err := json.Unmarshal(body, &health); err == nil && len(health.Warnings) == 1 &&
			strings.HasPrefix(health.Warnings[0], "agent credentials not enforced") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.sigterm(t)
}
