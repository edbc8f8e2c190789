package exec

import (
	"encoding/json"
	"testing"

	"kanade-backend/messages"
)

// The spliced payload is byte for byte what encoding/json writes, the
// template having been made for any exec.
func TestCommandTemplateMatchesEncodingJSON(t *testing.T) {
	desc := "d"
	execID := "e3b4c0d2-8a41-4b7f-9c57-0f7d2b8e1a33"
	jitter := uint64(30)
	manifests := []messages.Manifest{
		{ID: "inventory-hw", Version: "0.1.0", Description: &desc, Execute: messages.Execute{
			Shell: messages.ShellPowerShell, Script: `Get-X | ConvertTo-Json "request_id":""`, Timeout: "60s"}},
		{ID: "u", Version: "1", Execute: messages.Execute{Shell: messages.ShellCmd, Script: "echo <&>", Timeout: "1m",
			RunAs: messages.RunAsUser, Cwd: `C:\temp`}},
	}
	for _, m := range manifests {
		for _, j := range []*uint64{nil, &jitter} {
			other := "11111111-2222-3333-4444-555555555555"
			cmd, err := m.NewCommand("", &other, j)
			if err != nil {
				t.Fatal(err)
			}
			tmpl, err := newCommandTemplate(cmd)
			if err != nil {
				t.Fatal(err)
			}
			rid := "6c1f0b7e-2a55-4d0e-9d0a-4f3f8d1b9a10"
			cmd.RequestID, cmd.JobID = rid, &execID
			want, err := json.Marshal(cmd)
			if err != nil {
				t.Fatal(err)
			}
			if got := tmpl.with(execID, rid); string(got) != string(want) {
				t.Fatalf("template payload\n%s\nwant\n%s", got, want)
			}
		}
	}
}
