package credentials_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/actors/clock"
	"kanade-backend/cmd/kanade-backend/app"
	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
)

type credential struct {
	ID         string   `json:"id"`
	Kind       string   `json:"kind"`
	PcID       *string  `json:"pc_id"`
	Groups     []string `json:"groups"`
	State      string   `json:"state"`
	CreatedBy  string   `json:"created_by"`
	LastUsedAt *string  `json:"last_used_at"`
	RevokedBy  *string  `json:"revoked_by"`
	Token      string   `json:"token"`
}

type revocation struct {
	Revoked      []credential `json:"revoked"`
	Disconnected int          `json:"disconnected"`
}

var pcToken = regexp.MustCompile(`^kanade_pc_[A-Za-z0-9_-]{43}$`)

// auditActions returns the audit rows of action: target and payload.
func auditRows(t *testing.T, b *apptest.Backend, action string) []map[string]any {
	t.Helper()
	var rows []struct {
		Actor   string         `json:"actor"`
		Target  *string        `json:"target"`
		Payload map[string]any `json:"payload"`
	}
	b.JSON(t, "GET", "/api/audit?action="+action, nil, http.StatusOK, &rows)
	out := make([]map[string]any, 0, len(rows))
	for _, r := range rows {
		p := r.Payload
		p["actor"] = r.Actor
		if r.Target != nil {
			p["target"] = *r.Target
		}
		out = append(out, p)
	}
	return out
}

func waitAudit(t *testing.T, b *apptest.Backend, action string, n int) []map[string]any {
	t.Helper()
	var rows []map[string]any
	apptest.Eventually(t, 10*time.Second, func() error {
		rows = auditRows(t, b, action)
		if len(rows) < n {
			return fmt.Errorf("%d %s audit rows, want %d", len(rows), action, n)
		}
		return nil
	})
	return rows
}

// A PC's credential over the API: minted (shown once), used by an agent on
// the embedded NATS, listed with its last use and no secret, revoked, which
// disconnects the agent within 5 s and refuses it afterwards. Audited.
func TestCredentialLifecycle(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)

	resp, out := b.Do(t, "POST", "/api/agents/PC-A/credentials", nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("mint: %d %s", resp.StatusCode, out)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	var minted credential
	if err := json.Unmarshal(out, &minted); err != nil {
		t.Fatal(err)
	}
	if !pcToken.MatchString(minted.Token) || minted.Kind != "pc" || *minted.PcID != "PC-A" || minted.State != "active" || minted.CreatedBy != "admin" {
		t.Fatalf("minted %+v", minted)
	}

	var down, up atomic.Int32
	agent, err := nats.Connect(b.NATSURL, nats.Token(minted.Token), nats.ReconnectWait(50*time.Millisecond),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { down.Add(1) }),
		nats.ReconnectHandler(func(*nats.Conn) { up.Add(1) }))
	if err != nil {
		t.Fatalf("agent with its minted token: %v", err)
	}
	defer agent.Close()
	// It runs as PC-A: its own Commands arrive, the fleet's are not its to send.
	cmds, err := agent.SubscribeSync("commands.pc.PC-A")
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.Conn.Publish("commands.pc.PC-A", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := cmds.NextMsg(2 * time.Second); err != nil {
		t.Fatalf("PC-A's Command did not arrive: %v", err)
	}

	var list []credential
	apptest.Eventually(t, 10*time.Second, func() error {
		b.JSON(t, "GET", "/api/agents/PC-A/credentials", nil, http.StatusOK, &list)
		if len(list) != 1 || list[0].LastUsedAt == nil {
			return fmt.Errorf("list %s", mustJSON(list))
		}
		return nil
	})
	if list[0].Token != "" || bytes.Contains(b.JSON(t, "GET", "/api/agents/PC-A/credentials", nil, http.StatusOK, nil), []byte(minted.Token)) {
		t.Fatal("the list shows a token")
	}

	var rev revocation
	start := time.Now()
	b.JSON(t, "DELETE", "/api/agents/PC-A/credentials/"+minted.ID, nil, http.StatusOK, &rev)
	if len(rev.Revoked) != 1 || rev.Revoked[0].State != "revoked" || rev.Disconnected != 1 {
		t.Fatalf("revocation %+v", rev)
	}
	apptest.Eventually(t, 5*time.Second, func() error {
		if down.Load() == 0 {
			return errors.New("still connected")
		}
		return nil
	})
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("disconnect took %v", took)
	}
	time.Sleep(500 * time.Millisecond)
	if agent.IsConnected() || up.Load() > 0 {
		t.Fatal("the revoked agent reconnected")
	}
	if _, err := nats.Connect(b.NATSURL, nats.Token(minted.Token)); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("new connection with the revoked token: %v", err)
	}
	// Again: nothing more to revoke.
	b.JSON(t, "DELETE", "/api/agents/PC-A/credentials/"+minted.ID, nil, http.StatusOK, &rev)
	if len(rev.Revoked) != 0 {
		t.Fatalf("second revocation %+v", rev)
	}

	created, revoked := waitAudit(t, b, messages.ActionCredentialCreate, 1), waitAudit(t, b, messages.ActionCredentialRevoke, 1)
	if created[0]["target"] != "PC-A" || created[0]["credential"] != minted.ID || created[0]["sub"] != "admin" ||
		revoked[0]["target"] != "PC-A" || len(revoked) != 1 {
		t.Fatalf("audit: created %v, revoked %v", created, revoked)
	}
	for _, rows := range [][]map[string]any{created, revoked} {
		if strings.Contains(mustJSON(rows), minted.Token) {
			t.Fatal("a token reached the audit trail")
		}
	}
}

func TestRevokeAllOfAPC(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	var first, second credential
	b.JSON(t, "POST", "/api/agents/PC-B/credentials", nil, http.StatusCreated, &first)
	b.JSON(t, "POST", "/api/agents/PC-B/credentials", nil, http.StatusCreated, &second)
	var other credential
	b.JSON(t, "POST", "/api/agents/PC-C/credentials", nil, http.StatusCreated, &other)
	var rev revocation
	b.JSON(t, "DELETE", "/api/agents/PC-B/credentials/all", nil, http.StatusOK, &rev)
	if len(rev.Revoked) != 2 {
		t.Fatalf("revoked %+v", rev)
	}
	var list []credential
	b.JSON(t, "GET", "/api/agents/PC-C/credentials", nil, http.StatusOK, &list)
	if len(list) != 1 || list[0].State != "active" {
		t.Fatalf("PC-C affected: %+v", list)
	}
	// A credential is revoked through its own PC only.
	b.WantError(t, "DELETE", "/api/agents/PC-B/credentials/"+other.ID, nil, http.StatusNotFound, "")
	b.WantError(t, "DELETE", "/api/agents/PC-B/credentials/nope", nil, http.StatusNotFound, "")
	b.WantError(t, "POST", "/api/agents/bad.pc/credentials", nil, http.StatusBadRequest, "")
}

// Kitting: one CSV line per PC, each token working for its own PC only.
func TestBulkMintForKitting(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	resp, out := b.Do(t, "POST", "/api/agents/credentials", map[string]any{"pc_ids": []string{"KIT-1", "KIT-2", "KIT-3"}})
	if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") ||
		resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("bulk: %d %v %s", resp.StatusCode, resp.Header, out)
	}
	rows, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 || !slices.Equal(rows[0], []string{"pc_id", "token"}) {
		t.Fatalf("csv %q", rows)
	}
	for i, r := range rows[1:] {
		if r[0] != fmt.Sprintf("KIT-%d", i+1) || !pcToken.MatchString(r[1]) {
			t.Fatalf("row %q", r)
		}
	}
	nc, err := nats.Connect(b.NATSURL, nats.Token(rows[2][1]))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var violation atomic.Value
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violation.Store(err.Error()) })
	if err := nc.Publish("heartbeat.KIT-1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, 3*time.Second, func() error {
		if v, _ := violation.Load().(string); !strings.Contains(v, `Publish to "heartbeat.KIT-1"`) {
			return fmt.Errorf("KIT-2's token published KIT-1's heartbeat (%q)", v)
		}
		return nil
	})
	audit := waitAudit(t, b, messages.ActionCredentialCreate, 1)
	if audit[0]["count"] != float64(3) {
		t.Fatalf("bulk audit %v", audit)
	}

	for body, want := range map[string]string{
		`{"pc_ids":[]}`:             "pc_ids must list at least one pc_id",
		`{"pc_ids":["A","A"]}`:      `pc_id "A" is listed twice`,
		`{"pc_ids":["ok","no pe"]}`: "",
		`{}`:                        "pc_ids must list at least one pc_id",
	} {
		b.WantError(t, "POST", "/api/agents/credentials", body, http.StatusBadRequest, want)
	}
	many := make([]string, 10001)
	for i := range many {
		many[i] = fmt.Sprintf("PC%d", i)
	}
	b.WantError(t, "POST", "/api/agents/credentials", map[string]any{"pc_ids": many}, http.StatusBadRequest, "pc_ids lists 10001 PCs; at most 10000 per request")
}

// Enrollment over the API, with the fleet simulator's behaviour reduced to
// what the upstream agent does at start.
func TestEnrollmentOverTheAPI(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	var made struct {
		Enrollments []credential `json:"enrollments"`
	}
	b.JSON(t, "POST", "/api/enrollments", map[string]any{"count": 2, "groups": []string{"wave1", "canary"}, "expires_in": "2d"}, http.StatusCreated, &made)
	if len(made.Enrollments) != 2 || made.Enrollments[0].State != "pending" || !slices.Equal(made.Enrollments[0].Groups, []string{"canary", "wave1"}) ||
		!strings.HasPrefix(made.Enrollments[0].Token, "kanade_enroll_") {
		t.Fatalf("made %+v", made)
	}
	var reconnected atomic.Int32
	agent, err := nats.Connect(b.NATSURL, nats.Token(made.Enrollments[0].Token), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected.Add(1) }))
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	if _, err := agent.Subscribe("logs.fetch.NEW-PC", func(m *nats.Msg) { _ = m.Respond([]byte("log")) }); err != nil {
		t.Fatal(err)
	}
	var list []credential
	apptest.Eventually(t, 10*time.Second, func() error {
		b.JSON(t, "GET", "/api/enrollments", nil, http.StatusOK, &list)
		for _, c := range list {
			if c.ID == made.Enrollments[0].ID && c.State == "active" && c.PcID != nil && *c.PcID == "NEW-PC" {
				return nil
			}
		}
		return fmt.Errorf("not bound: %s", mustJSON(list))
	})
	var groups messages.AgentGroups
	apptest.Eventually(t, 5*time.Second, func() error {
		b.JSON(t, "GET", "/api/agents/NEW-PC/groups", nil, http.StatusOK, &groups)
		if !slices.Equal(groups.Groups, []string{"canary", "wave1"}) {
			return fmt.Errorf("groups %v", groups.Groups)
		}
		return nil
	})
	// Bound, it is one of NEW-PC's credentials.
	b.JSON(t, "GET", "/api/agents/NEW-PC/credentials", nil, http.StatusOK, &list)
	if len(list) != 1 || list[0].ID != made.Enrollments[0].ID || list[0].Kind != "enrollment" {
		t.Fatalf("NEW-PC's credentials %+v", list)
	}
	enrolled := waitAudit(t, b, messages.ActionAgentEnrolled, 1)
	if enrolled[0]["target"] != "NEW-PC" || enrolled[0]["actor"] != messages.ActorEnrollment {
		t.Fatalf("enrollment audit %v", enrolled)
	}
	apptest.Eventually(t, 10*time.Second, func() error {
		if reconnected.Load() == 0 || !agent.IsConnected() {
			return errors.New("not reconnected as NEW-PC")
		}
		if _, err := b.Conn.Request("logs.fetch.NEW-PC", nil, time.Second); err != nil {
			return err
		}
		return nil
	})

	// The unused one is revoked; revoking again changes nothing.
	var rev revocation
	b.JSON(t, "DELETE", "/api/enrollments/"+made.Enrollments[1].ID, nil, http.StatusOK, &rev)
	if len(rev.Revoked) != 1 || rev.Revoked[0].State != "revoked" {
		t.Fatalf("revocation %+v", rev)
	}
	if _, err := nats.Connect(b.NATSURL, nats.Token(made.Enrollments[1].Token)); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("revoked enrollment: %v", err)
	}
	// The PC credentials route does not revoke enrollments by id, nor the
	// enrollments route PC credentials.
	var pc credential
	b.JSON(t, "POST", "/api/agents/OTHER/credentials", nil, http.StatusCreated, &pc)
	b.WantError(t, "DELETE", "/api/enrollments/"+pc.ID, nil, http.StatusNotFound, "")

	for body, want := range map[string]string{
		`{"count":0}`:            "count 0: want 1 to 1000",
		`{"count":1001}`:         "count 1001: want 1 to 1000",
		`{"expires_in":"91d"}`:   "expires_in 91d: want more than 0s and at most 90d",
		`{"expires_in":"soon"}`:  "",
		`{"groups":["no.dots"]}`: "",
	} {
		b.WantError(t, "POST", "/api/enrollments", body, http.StatusBadRequest, want)
	}
}

// Only admins may touch credentials; the shared token shows in health.
func TestCredentialsNeedAdminAndHealthWarns(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t, apptest.Options{Configure: func(c *app.Config) { c.NATS.Token = "legacy-shared" }})
	op := b.CreateOperator(t, "olga", "operator")
	for _, r := range []struct{ method, path string }{
		{"GET", "/api/agents/PC-A/credentials"}, {"POST", "/api/agents/PC-A/credentials"},
		{"DELETE", "/api/agents/PC-A/credentials/all"}, {"POST", "/api/agents/credentials"},
		{"GET", "/api/enrollments"}, {"POST", "/api/enrollments"}, {"DELETE", "/api/enrollments/x"},
	} {
		resp, out := b.Do(t, r.method, r.path, nil, apptest.Bearer(op)...)
		if resp.StatusCode != http.StatusForbidden || apptest.ErrorText(t, out) != "forbidden: requires role admin" {
			t.Fatalf("%s %s as operator: %d %s", r.method, r.path, resp.StatusCode, out)
		}
	}
	var health struct {
		Warnings []string `json:"warnings"`
	}
	resp, out := b.Do(t, "GET", "/api/health/fleet", nil)
	if err := json.Unmarshal(out, &health); err != nil {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
	if !slices.Equal(health.Warnings, []string{"shared agent token in use"}) {
		t.Fatalf("health warnings %v", health.Warnings)
	}
	// The legacy token still opens the embedded NATS with every right, and
	// nothing else does (it listens on loopback, but a token is required).
	legacy, err := nats.Connect(b.NATSURL, nats.Token("legacy-shared"))
	if err != nil {
		t.Fatal(err)
	}
	legacy.Close()
	if _, err := nats.Connect(b.NATSURL); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous with a shared token configured: %v", err)
	}
	// The operator's own token is its NATS credential for the CLI.
	cli, err := nats.Connect(b.NATSURL, nats.Token(op))
	if err != nil {
		t.Fatalf("operator token on NATS: %v", err)
	}
	defer cli.Close()
	sub, err := b.Conn.SubscribeSync("commands.pc.PC-A")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := cli.Publish("commands.pc.PC-A", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(2 * time.Second); err != nil {
		t.Fatalf("the operator's kanade run did not arrive: %v", err)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Acceptance: a forged heartbeat on another PC's subject never reaches the
// agents table, whichever way PC B tries.
func TestForgedHeartbeatNeverReachesAgents(t *testing.T) {
	t.Parallel()
	// The projector's heartbeat flush runs on this clock: the test
	// advances it instead of waiting for the one-second period.
	clk := clock.NewFake(time.Now())
	b := apptest.Start(t, apptest.Options{Clock: clk})
	var cred credential
	b.JSON(t, "POST", "/api/agents/PC-B/credentials", nil, http.StatusCreated, &cred)
	nc, err := nats.Connect(b.NATSURL, nats.Token(cred.Token))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	beat := func(subject, pc string) {
		t.Helper()
		hb, _ := json.Marshal(messages.Heartbeat{PcID: pc, At: time.Now().UTC(), AgentVersion: "0.21.2"})
		if err := nc.Publish(subject, hb); err != nil {
			t.Fatal(err)
		}
	}
	beat("heartbeat.PC-A", "PC-A") // refused by the server: not B's subject
	beat("heartbeat.PC-B", "PC-A") // B's subject, A's name inside: refused by the projector
	beat("heartbeat.PC-B", "PC-B") // the honest one
	var agents []struct {
		PcID string `json:"pc_id"`
	}
	apptest.Eventually(t, 10*time.Second, func() error {
		clk.Advance(time.Second) // a flush, once the beats are in
		b.JSON(t, "GET", "/api/agents", nil, http.StatusOK, &agents)
		if len(agents) != 1 {
			return fmt.Errorf("agents %v", agents)
		}
		return nil
	})
	// The forged beat on B's subject came before the honest one on the
	// same connection, so the flush that wrote PC-B had seen it: it was
	// refused there, recorded as a projection error, and no later flush
	// holds it.
	refused, err := b.Store.R.NewSelect().TableExpr("projection_errors").
		Where("projection = 'heartbeat' AND subject = 'heartbeat.PC-B'").Count(context.Background())
	if err != nil || refused != 1 {
		t.Fatalf("projection errors of the forged heartbeat: %d, %v; want 1", refused, err)
	}
	clk.Advance(time.Second)
	b.JSON(t, "GET", "/api/agents", nil, http.StatusOK, &agents)
	if len(agents) != 1 || agents[0].PcID != "PC-B" {
		t.Fatalf("agents %v, want PC-B only", agents)
	}
}
