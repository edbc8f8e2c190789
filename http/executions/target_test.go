package executions_test

import (
	"context"
	"testing"
	"time"

	"kanade-backend/http/targets"
	"kanade-backend/internal/apptest"
	"kanade-backend/storage"
)

// Issue 16's acceptance: an exec to a misspelt group is refused, naming
// it, and reaches nobody; the preview of the real group counts its 5
// members, 3 online; the exec to it goes to the online ones.
func TestExecToAMisspeltGroupIsRefused(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	putJob(t, b, "hello", "1", "echo hi")
	for _, pc := range []string{"c1", "c2", "c3"} {
		heartbeat(t, b, pc, "canary")
	}
	gone := storage.T(time.Now().Add(-time.Hour))
	if _, err := b.Store.W.NewInsert().Model(&storage.Agent{PcID: "c4", AgentVersion: "0.21.2", LastHeartbeat: gone, UpdatedAt: gone}).
		Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	member(t, b, "c4", "canary")
	member(t, b, "c5", "canary") // assigned, never switched on
	ag := startAgent(t, b.NATSURL, "commands.>")

	b.WantError(t, "POST", "/api/exec/hello", `{"target":{"groups":["canray"]}}`, 400,
		"target matches no PCs (unknown group 'canray' (no PC is a member))")
	resp, _ := b.Do(t, "GET", "/api/executions", nil)
	if n := resp.Header.Get("X-Total-Count"); n != "0" {
		t.Fatalf("a refused exec left %s executions", n)
	}

	var p targets.Preview
	b.JSON(t, "GET", "/api/targets/preview?groups=canary", nil, 200, &p)
	if p.PCs != 5 || p.Online != 3 || len(p.UnknownGroups) != 0 {
		t.Fatalf("preview of canary = %+v, want 5 PCs, 3 online", p)
	}
	r := execJob(t, b, "hello", `{"target":{"groups":["canary"]}}`)
	if r.ExpectedPcs != 3 {
		t.Fatalf("exec to canary expects %d PCs, want the 3 online", r.ExpectedPcs)
	}
	// One subscription keeps the publish order: had the refused exec
	// published anything, it would have arrived first.
	got := ag.waitN(t, 1, 5*time.Second)
	if got[0].subject != "commands.group.canary" || len(got) != 1 {
		t.Fatalf("published %s, want only the canary exec", ag.subjects())
	}
}
