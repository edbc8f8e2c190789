package targets_test

import (
	"context"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/http/targets"
	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

var now = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

// fleet writes agents (pc → minutes since its last heartbeat) and group
// members (pc → groups) as the heartbeat projector and the agent_groups
// mirror would.
func fleet(t *testing.T, st *storage.Store, agents map[string]int, groups map[string][]string) {
	t.Helper()
	err := st.InTx(context.Background(), func(ctx context.Context, tx bun.Tx) error {
		for pc, ago := range agents {
			at := storage.T(now.Add(-time.Duration(ago) * time.Minute))
			if _, err := tx.NewInsert().Model(&storage.Agent{PcID: pc, AgentVersion: "0.21.2", LastHeartbeat: at, UpdatedAt: at}).Exec(ctx); err != nil {
				return err
			}
		}
		for pc, gs := range groups {
			for _, g := range gs {
				if _, err := tx.NewInsert().Model(&storage.GroupMember{PcID: pc, GroupName: g}).Exec(ctx); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestResolve(t *testing.T) {
	st := storagetest.Open(t)
	// canary: 5 members, 3 online (a, b, c), d offline for an hour, e
	// assigned before it was ever switched on. lab: c and f (online, in no
	// other group). g: an online agent in no group.
	fleet(t, st, map[string]int{"a": 0, "b": 1, "c": 1, "d": 60, "f": 0, "g": 0},
		map[string][]string{"a": {"canary"}, "b": {"canary"}, "c": {"canary", "lab"}, "d": {"canary"}, "e": {"canary"}, "f": {"lab"}})
	none := []string{}
	for _, tc := range []struct {
		name   string
		target messages.Target
		want   targets.Preview
	}{
		{"the issue's group", messages.Target{Groups: []string{"canary"}}, targets.Preview{PCs: 5, Online: 3, UnknownGroups: none, UnknownPCs: none}},
		{"two groups overlap once", messages.Target{Groups: []string{"canary", "lab", "canary"}}, targets.Preview{PCs: 6, Online: 4, UnknownGroups: none, UnknownPCs: none}},
		{"typo", messages.Target{Groups: []string{"canray"}}, targets.Preview{PCs: 0, Online: 0, UnknownGroups: []string{"canray"}, UnknownPCs: none}},
		{"all counts agents, not members without a heartbeat", messages.Target{All: true}, targets.Preview{PCs: 6, Online: 5, UnknownGroups: none, UnknownPCs: none}},
		{"all plus a group adds its never-seen member", messages.Target{All: true, Groups: []string{"canary"}}, targets.Preview{PCs: 7, Online: 5, UnknownGroups: none, UnknownPCs: none}},
		{"listed PCs: agent, member only, unknown", messages.Target{Pcs: []string{"g", "e", "zz", "g"}}, targets.Preview{PCs: 2, Online: 1, UnknownGroups: none, UnknownPCs: []string{"zz"}}},
		{"listed offline PC", messages.Target{Pcs: []string{"d"}}, targets.Preview{PCs: 1, Online: 0, UnknownGroups: none, UnknownPCs: none}},
		{"all plus listed agents counts them once", messages.Target{All: true, Pcs: []string{"a", "e", "nope"}}, targets.Preview{PCs: 7, Online: 5, UnknownGroups: none, UnknownPCs: []string{"nope"}}},
		{"group and listed PC in it", messages.Target{Groups: []string{"lab"}, Pcs: []string{"c", "b"}}, targets.Preview{PCs: 3, Online: 3, UnknownGroups: none, UnknownPCs: none}},
		{"nothing", messages.Target{}, targets.Preview{UnknownGroups: none, UnknownPCs: none}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := targets.Resolve(context.Background(), st.R, tc.target, now)
			if err != nil {
				t.Fatal(err)
			}
			if got.PCs != tc.want.PCs || got.Online != tc.want.Online ||
				!reflect.DeepEqual(got.UnknownGroups, tc.want.UnknownGroups) || !reflect.DeepEqual(got.UnknownPCs, tc.want.UnknownPCs) {
				t.Fatalf("Resolve(%+v) = %+v, want %+v", tc.target, got, tc.want)
			}
			if ok, err := targets.Matches(context.Background(), st.R, tc.target); err != nil || ok != (tc.want.PCs > 0) {
				t.Fatalf("Matches(%+v) = %v, %v; want %v", tc.target, ok, err, tc.want.PCs > 0)
			}
		})
	}
}

// An empty fleet: `all` matches nobody yet, and the texts say why.
func TestTexts(t *testing.T) {
	st := storagetest.Open(t)
	resolve := func(tg messages.Target) targets.Preview {
		p, err := targets.Resolve(context.Background(), st.R, tg, now)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		target           messages.Target
		refusal, warning string
	}{
		{messages.Target{All: true}, "target matches no PCs (no agent has sent a heartbeat yet)", ""},
		{messages.Target{Groups: []string{"canray"}},
			"target matches no PCs (unknown group 'canray' (no PC is a member))", ""},
		{messages.Target{Groups: []string{"a", "b"}, Pcs: []string{"x"}},
			"target matches no PCs (unknown groups 'a', 'b' (no PC is a member); unknown PC 'x' (no heartbeat, no group))", ""},
	} {
		p := resolve(tc.target)
		if !p.Empty() || p.Refusal() != tc.refusal || p.Warning() != tc.refusal {
			t.Errorf("%+v: empty=%v refusal %q warning %q, want %q", tc.target, p.Empty(), p.Refusal(), p.Warning(), tc.refusal)
		}
	}

	fleet(t, st, map[string]int{"on": 0, "off": 30}, map[string][]string{"off": {"night"}})
	for _, tc := range []struct {
		target  messages.Target
		warning string
	}{
		{messages.Target{All: true}, ""},
		{messages.Target{Groups: []string{"night"}}, "target reaches 1 PC (0 online); none of them is online now"},
		{messages.Target{Pcs: []string{"on", "typo"}}, "target reaches 1 PC (1 online); unknown PC 'typo' (no heartbeat, no group)"},
	} {
		if p := resolve(tc.target); p.Empty() || p.Warning() != tc.warning {
			t.Errorf("%+v: %+v warning %q, want %q", tc.target, p, p.Warning(), tc.warning)
		}
	}
}

// With rollout waves the waves say who is reached, as the engine
// publishes them.
func TestReachedTarget(t *testing.T) {
	plain := messages.FanoutPlan{Target: messages.Target{Groups: []string{"a"}}}
	if got := targets.ReachedTarget(plain); !reflect.DeepEqual(got, plain.Target) {
		t.Fatalf("without waves: %+v", got)
	}
	waves := messages.FanoutPlan{Target: messages.Target{All: true},
		Rollout: &messages.Rollout{Waves: []messages.Wave{{Group: "canary"}, {Group: "wave1", Delay: "1h"}}}}
	if got := targets.ReachedTarget(waves); got.All || !reflect.DeepEqual(got.Groups, []string{"canary", "wave1"}) {
		t.Fatalf("with waves: %+v", got)
	}
}

// The route over real HTTP, with memberships written to KV agent_groups as
// an operator would (the mirror fills agent_group_members) and agents that
// heartbeat.
func TestPreviewRoute(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	members := map[string][]string{}
	for i := 1; i <= 5; i++ {
		members[fmt.Sprintf("pc-%d", i)] = []string{"canary"}
	}
	b.SetGroups(t, members)
	real := time.Now()
	for i, ago := range []time.Duration{0, time.Minute, 90 * time.Second, time.Hour} {
		at := storage.T(real.Add(-ago))
		if _, err := b.Store.W.NewInsert().Model(&storage.Agent{PcID: fmt.Sprintf("pc-%d", i+1), AgentVersion: "0.21.2",
			LastHeartbeat: at, UpdatedAt: at}).Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	var p targets.Preview
	apptest.Eventually(t, 5*time.Second, func() error {
		b.JSON(t, "GET", "/api/targets/preview?groups=canary", nil, 200, &p)
		if p.PCs != 5 || p.Online != 3 {
			return fmt.Errorf("preview %+v, want 5 PCs, 3 online", p)
		}
		return nil
	})
	_, body := b.Do(t, "GET", "/api/targets/preview?groups=canary,canray&pcs=pc-4&pcs=ghost&all=false", nil)
	if got := strings.TrimSpace(string(body)); got != `{"pcs":5,"online":3,"unknown_groups":["canray"],"unknown_pcs":["ghost"]}` {
		t.Fatalf("preview = %s", got)
	}
	_, body = b.Do(t, "GET", "/api/targets/preview?all=1", nil)
	if got := strings.TrimSpace(string(body)); got != `{"pcs":4,"online":3,"unknown_groups":[],"unknown_pcs":[]}` {
		t.Fatalf("preview all = %s", got)
	}
	b.WantError(t, "GET", "/api/targets/preview?all=maybe", nil, 400, `invalid all "maybe": must be true or false`)
	b.WantError(t, "GET", "/api/targets/preview?groups="+url.QueryEscape("a b"), nil, 400,
		`invalid group "a b": must match [A-Za-z0-9_=-]+ (no spaces, '.', '*', '>')`)
}
