package fleet_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/messages"
)

// TestGroupsReachSimulatedAgents checks the KV form the groups API writes
// against the agent side: the simulator watches agent_groups like a real
// agent and subscribes commands.group.<g> for its groups, so a Command on
// commands.group.lab is answered by exactly the PC put into lab.
func TestGroupsReachSimulatedAgents(t *testing.T) {
	b := apptest.Start(t)
	fleet := b.StartFleet(t, sim.Config{Agents: 3, Heartbeat: time.Second, Seed: 7})
	pcs := fleet.PCIDs()
	b.JSON(t, http.MethodPost, "/api/agents/"+pcs[1]+"/groups", map[string]any{"group": "lab"}, 200, nil)

	answered := map[string]bool{}
	apptest.Eventually(t, 10*time.Second, func() error {
		reqID := uuid.NewString()
		sub, err := b.Conn.SubscribeSync(messages.ResultsSubject(reqID))
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
		if err := b.Conn.Flush(); err != nil {
			return err
		}
		cmd, _ := json.Marshal(messages.Command{
			ID: messages.AdhocJobID, Version: messages.AdhocVersion, RequestID: reqID,
			Shell: messages.ShellCmd, Script: "echo group", TimeoutSecs: 5,
		})
		if err := b.Conn.Publish(messages.CommandsGroupSubject("lab"), cmd); err != nil {
			return err
		}
		for {
			msg, err := sub.NextMsg(300 * time.Millisecond)
			if err == nats.ErrTimeout {
				break
			}
			if err != nil {
				return err
			}
			var res messages.ExecResult
			if err := json.Unmarshal(msg.Data, &res); err != nil {
				return err
			}
			answered[res.PcID] = true
		}
		if !answered[pcs[1]] {
			return errNotYet
		}
		return nil
	})
	if len(answered) != 1 {
		t.Fatalf("answered by %v, want only %s", answered, pcs[1])
	}
}

var errNotYet = errors.New("the group member has not answered yet")
