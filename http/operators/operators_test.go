package operators_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"kanade-backend/http/auth"
	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// opRow is an operator as the API lists it.
type opRow struct {
	Name      string  `json:"name"`
	Role      string  `json:"role"`
	CreatedBy string  `json:"created_by"`
	RevokedAt *string `json:"revoked_at"`
	RevokedBy *string `json:"revoked_by"`
	Token     string  `json:"token"`
}

type me struct {
	Name   string            `json:"name"`
	Role   string            `json:"role"`
	Mode   string            `json:"mode"`
	Routes map[string]string `json:"routes"`
}

var tokenForm = regexp.MustCompile(`^kanade_op_[A-Za-z0-9_-]{43}$`)

// as sends a request with tok and requires status; v, when set, receives
// the JSON body.
func as(t *testing.T, b *apptest.Backend, tok, method, path string, body any, status int, v any) []byte {
	t.Helper()
	resp, out := b.Do(t, method, path, body, apptest.Bearer(tok)...)
	if resp.StatusCode != status {
		t.Fatalf("%s %s: %d %s; want %d", method, path, resp.StatusCode, out, status)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, out, err)
		}
	}
	return out
}

// auditRows returns the operator audit rows of action, oldest first.
func auditRows(t *testing.T, b *apptest.Backend, action string) []map[string]any {
	t.Helper()
	var rows []struct {
		Target  *string        `json:"target"`
		Payload map[string]any `json:"payload"`
	}
	b.JSON(t, "GET", "/api/audit?action="+action, nil, http.StatusOK, &rows)
	out := make([]map[string]any, 0, len(rows))
	for i := len(rows) - 1; i >= 0; i-- {
		p := rows[i].Payload
		if rows[i].Target != nil {
			p["target"] = *rows[i].Target
		}
		out = append(out, p)
	}
	return out
}

// An operator's whole life over HTTP: created with a token shown once and
// kept as a hash, listed without it, its role changed, its token replaced
// and revoked, each effective on the very next request and audited with
// the acting admin's name.
func TestOperatorLifecycle(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)

	resp, out := b.Do(t, "POST", "/api/operators", map[string]string{"name": "alice", "role": "operator"})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, out)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control of the answer carrying the token = %q, want no-store", cc)
	}
	var created opRow
	if err := json.Unmarshal(out, &created); err != nil {
		t.Fatal(err)
	}
	if !tokenForm.MatchString(created.Token) || created.Name != "alice" || created.Role != "operator" ||
		created.CreatedBy != auth.SubjectAdmin {
		t.Fatalf("created %+v", created)
	}
	alice := created.Token

	// Only the hash is stored, and it is the token's SHA-256.
	var stored []byte
	if err := b.Store.R.NewSelect().Table("operators").Column("token_hash").Where("name = 'alice'").Scan(context.Background(), &stored); err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256([]byte(alice)); !bytes.Equal(stored, sum[:]) {
		t.Fatalf("stored hash %x is not the token's SHA-256", stored)
	}
	dbFile, err := os.ReadFile(b.Store.Path())
	if err != nil {
		t.Fatal(err)
	}
	wal, _ := os.ReadFile(b.Store.Path() + "-wal")
	if bytes.Contains(dbFile, []byte(alice)) || bytes.Contains(wal, []byte(alice)) {
		t.Fatal("the token itself is in the database file")
	}

	// The list shows the operator, never a token.
	var list []opRow
	raw := b.JSON(t, "GET", "/api/operators", nil, http.StatusOK, &list)
	if len(list) != 1 || list[0].Name != "alice" || list[0].Token != "" || strings.Contains(string(raw), "hash") {
		t.Fatalf("list %s", raw)
	}

	var who me
	as(t, b, alice, "GET", "/api/me", nil, http.StatusOK, &who)
	if who.Name != "alice" || who.Role != "operator" || who.Mode != "static" || who.Routes["POST /api/operators"] != "admin" {
		t.Fatalf("alice's /api/me: %+v", who)
	}

	// Errors, each with its message.
	b.WantError(t, "POST", "/api/operators", map[string]string{"name": "alice", "role": "viewer"}, 409, "operator 'alice' already exists")
	b.WantError(t, "POST", "/api/operators", map[string]string{"name": "bob", "role": "root"}, 400,
		`invalid role: unknown role "root": want viewer, operator or admin`)
	b.WantError(t, "POST", "/api/operators", map[string]string{"name": "bob smith", "role": "viewer"}, 400, "")
	b.WantError(t, "POST", "/api/operators", map[string]string{"name": strings.Repeat("n", 65), "role": "viewer"}, 400, "")
	b.WantError(t, "PATCH", "/api/operators/nobody", map[string]string{"role": "viewer"}, 404, "operator 'nobody' not found")
	b.WantError(t, "PATCH", "/api/operators/alice", map[string]string{}, 400, "nothing to change: the body must set role")

	// Demoted to viewer: the next request already has the new role.
	var changed opRow
	b.JSON(t, "PATCH", "/api/operators/alice", map[string]string{"role": "viewer"}, http.StatusOK, &changed)
	if changed.Role != "viewer" {
		t.Fatalf("after PATCH: %+v", changed)
	}
	resp, out = b.Do(t, "PUT", "/api/config", map[string]string{"heartbeat_interval": "30s"}, apptest.Bearer(alice)...)
	if resp.StatusCode != http.StatusForbidden || strings.TrimSpace(string(out)) != `{"error":"forbidden: requires role operator"}` {
		t.Fatalf("viewer alice PUT /api/config: %d %s", resp.StatusCode, out)
	}

	// A new token: the old one stops at once, the new one works.
	var issued opRow
	b.JSON(t, "POST", "/api/operators/alice/token", nil, http.StatusOK, &issued)
	if !tokenForm.MatchString(issued.Token) || issued.Token == alice {
		t.Fatalf("new token %q", issued.Token)
	}
	wantUnauthorized(t, b, alice, "invalid token: unknown operator token")
	as(t, b, issued.Token, "GET", "/api/me", nil, http.StatusOK, nil)
	alice = issued.Token

	// Revoked: 401 on the very next request.
	resp, out = b.Do(t, "DELETE", "/api/operators/alice", nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", resp.StatusCode, out)
	}
	wantUnauthorized(t, b, alice, "invalid token: operator token revoked")
	resp, _ = b.Do(t, "DELETE", "/api/operators/alice", nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("second revoke: %d", resp.StatusCode)
	}
	b.WantError(t, "PATCH", "/api/operators/alice", map[string]string{"role": "admin"}, 409,
		"operator 'alice' was revoked; create a new operator instead")
	b.WantError(t, "POST", "/api/operators/alice/token", nil, 409, "operator 'alice' was revoked; create a new operator instead")
	b.WantError(t, "POST", "/api/operators", map[string]string{"name": "alice", "role": "viewer"}, 409, "")
	b.JSON(t, "GET", "/api/operators", nil, http.StatusOK, &list)
	if len(list) != 1 || list[0].RevokedAt == nil || list[0].RevokedBy == nil || *list[0].RevokedBy != "admin" {
		t.Fatalf("list after revoke: %+v", list)
	}

	// Each change audited once, by the admin who made it, never with a token.
	want := map[string]map[string]any{
		messages.ActionOperatorCreate: {"target": "alice", "sub": "admin", "role": "operator"},
		messages.ActionOperatorRole:   {"target": "alice", "sub": "admin", "role": "viewer", "previous_role": "operator"},
		messages.ActionOperatorToken:  {"target": "alice", "sub": "admin", "role": "viewer"},
		messages.ActionOperatorRevoke: {"target": "alice", "sub": "admin", "role": "viewer"},
	}
	apptest.Eventually(t, 10*time.Second, func() error {
		for action, fields := range want {
			rows := auditRows(t, b, action)
			if len(rows) != 1 {
				return fmt.Errorf("%d %s rows, want 1", len(rows), action)
			}
			for k, v := range fields {
				if rows[0][k] != v {
					return fmt.Errorf("%s row: %s = %v, want %v (row %v)", action, k, rows[0][k], v, rows[0])
				}
			}
			if s := fmt.Sprint(rows[0]); strings.Contains(s, "kanade_op_") {
				return fmt.Errorf("%s row carries a token: %s", action, s)
			}
		}
		return nil
	})
}

func wantUnauthorized(t *testing.T, b *apptest.Backend, tok, msg string) {
	t.Helper()
	resp, out := b.Do(t, "GET", "/api/me", nil, apptest.Bearer(tok)...)
	if resp.StatusCode != http.StatusUnauthorized || apptest.ErrorText(t, out) != msg {
		t.Fatalf("GET /api/me with the old token: %d %s; want 401 %q", resp.StatusCode, out, msg)
	}
}

// An exec by operator alice is audited as hers, and the executions list
// names her as the initiator.
func TestExecByOperatorIsAuditedAsTheirs(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	b.JSON(t, "POST", "/api/jobs", helloJob, http.StatusOK, nil)
	alice := b.CreateOperator(t, "alice", "operator")
	// PC-1 has reported once: an exec to a PC nobody knows is refused.
	seen := storage.T(time.Now())
	if _, err := b.Store.W.NewInsert().Model(&storage.Agent{PcID: "PC-1", AgentVersion: "0.21.2", LastHeartbeat: seen, UpdatedAt: seen}).
		Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	var ex messages.ExecResponse
	as(t, b, alice, "POST", "/api/exec/hello", `{"target":{"pcs":["PC-1"]}}`, http.StatusOK, &ex)

	apptest.Eventually(t, 10*time.Second, func() error {
		rows := auditRows(t, b, messages.ActionExec)
		if len(rows) != 1 || rows[0]["sub"] != "alice" || rows[0]["exec_id"] != ex.ExecID {
			return fmt.Errorf("exec audit rows %v", rows)
		}
		return nil
	})
	var exec struct {
		InitiatedBy string `json:"initiated_by"`
	}
	as(t, b, alice, "GET", "/api/executions/"+ex.ExecID, nil, http.StatusOK, &exec)
	if exec.InitiatedBy != "operator:alice" {
		t.Fatalf("initiated_by %q, want operator:alice", exec.InitiatedBy)
	}
}

// Revoking an operator ends its open event stream at once; another
// operator's stream stays open.
func TestRevokeEndsEventStreams(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	alice := b.CreateOperator(t, "alice", "viewer")
	bob := b.CreateOperator(t, "bob", "viewer")
	open := func(tok string) (<-chan error, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, "GET", b.URL+"/api/events?access_token="+tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("open stream: %v %v", resp, err)
		}
		ended := make(chan error, 1)
		go func() {
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
			}
			ended <- sc.Err()
		}()
		return ended, cancel
	}
	aliceEnded, cancelA := open(alice)
	defer cancelA()
	bobEnded, cancelB := open(bob)
	defer cancelB()

	resp, _ := b.Do(t, "DELETE", "/api/operators/alice", nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	select {
	case <-aliceEnded:
	case <-time.After(5 * time.Second):
		t.Fatal("alice's event stream still open after her revocation")
	}
	select {
	case err := <-bobEnded:
		t.Fatalf("bob's event stream ended too: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
}

// The generated admin token is the operator admin: it can be revoked like
// any other (the revocation survives a restart), the last admin cannot be
// removed, and replacing the token file brings admin back.
func TestGeneratedTokenIsTheFirstAdmin(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	generated := apptest.Options{DataDir: dir, Env: map[string]string{"KANADE_AUTH_STATIC_TOKEN": ""}}
	readToken := func() string {
		b, err := os.ReadFile(filepath.Join(dir, auth.TokenFileName))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}

	b, stop := apptest.StartManual(t, generated)
	admin := readToken()
	if !tokenForm.MatchString(admin) {
		t.Fatalf("generated token %q lacks the operator token form", admin)
	}
	var who me
	as(t, b, admin, "GET", "/api/me", nil, http.StatusOK, &who)
	if who.Name != "admin" || who.Role != "admin" || who.Mode != "generated" {
		t.Fatalf("generated token's /api/me: %+v", who)
	}
	var list []opRow
	as(t, b, admin, "GET", "/api/operators", nil, http.StatusOK, &list)
	if len(list) != 1 || list[0].Name != "admin" || list[0].Role != "admin" || list[0].CreatedBy != "generated" {
		t.Fatalf("operators at first start: %+v", list)
	}
	// The last admin stays.
	out := as(t, b, admin, "PATCH", "/api/operators/admin", map[string]string{"role": "operator"}, http.StatusConflict, nil)
	if got := apptest.ErrorText(t, out); got != "operator 'admin' is the last admin; make another operator admin first" {
		t.Fatalf("demote the last admin: %s", got)
	}
	as(t, b, admin, "DELETE", "/api/operators/admin", nil, http.StatusConflict, nil)

	var bob opRow
	as(t, b, admin, "POST", "/api/operators", map[string]string{"name": "bob", "role": "admin"}, http.StatusCreated, &bob)
	as(t, b, bob.Token, "DELETE", "/api/operators/admin", nil, http.StatusNoContent, nil)
	wantUnauthorized(t, b, admin, "invalid token: operator token revoked")
	stop()

	// The revocation survives a restart with the same token file.
	b, stop = apptest.StartManual(t, generated)
	wantUnauthorized(t, b, admin, "invalid token: operator token revoked")
	as(t, b, bob.Token, "GET", "/api/me", nil, http.StatusOK, nil)
	stop()

	// Deleting the file is the data directory owner's way back in.
	if err := os.Remove(filepath.Join(dir, auth.TokenFileName)); err != nil {
		t.Fatal(err)
	}
	b = apptest.Start(t, generated)
	fresh := readToken()
	as(t, b, fresh, "GET", "/api/me", nil, http.StatusOK, &who)
	if fresh == admin || who.Name != "admin" || who.Role != "admin" {
		t.Fatalf("after a new token file: %+v", who)
	}
	wantUnauthorized(t, b, admin, "invalid token: unknown operator token")
}
