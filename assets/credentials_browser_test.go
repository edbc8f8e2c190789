package assets_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/internal/apptest"
)

// TestBrowserCredentials: an admin mints a PC's NATS credential on its
// agent page (shown once), an agent connects with it and the page shows
// its use, revoking it there disconnects the agent; the Kitting page mints
// credentials in bulk as a downloadable CSV and makes enrollment tokens.
// An operator sees neither.
func TestBrowserCredentials(t *testing.T) {
	b := apptest.Start(t)
	startFleet(t, b, 2, func(int) []string { return nil })
	tb := newTab(t, b.URL, 1280)
	tb.signIn()

	t.Run("agent page", func(t *testing.T) {
		tb := tb.on(t)
		tb.open("/agents/SIM-0001")
		tb.waitText("main [data-credentials=SIM-0001]", "No credential")
		tb.clickText("main [data-credentials] button", "New credential")
		tb.waitText("main [data-issued=SIM-0001]", "shown only this once")
		tok := eval[string](tb, `document.querySelector('main [data-issued=SIM-0001] input').value`)
		if !strings.HasPrefix(tok, "kanade_pc_") {
			t.Fatalf("token shown %q", tok)
		}
		var down atomic.Int32
		nc, err := nats.Connect(b.NATSURL, nats.Token(tok), nats.ReconnectWait(50*time.Millisecond),
			nats.DisconnectErrHandler(func(*nats.Conn, error) { down.Add(1) }))
		if err != nil {
			t.Fatalf("the agent with the token from the page: %v", err)
		}
		defer nc.Close()
		tb.waitText("main [data-credentials] table", "active")
		// The table never shows the token.
		if strings.Contains(tb.text("main [data-credentials] table"), tok) {
			t.Fatal("the list shows the token")
		}
		tb.clickText("main [data-credentials] table button", "Revoke")
		tb.clickText("main [data-credentials] table button", "Confirm: Revoke "+eval[string](tb, `document.querySelector('main [data-credentials] table code').innerText`)+"?")
		tb.waitText("main [data-credentials] [role=status]", "1 live connection ended.")
		tb.waitText("main [data-credentials] table", "revoked")
		tb.wait("agent disconnected", 5*time.Second, func() (bool, string) { return down.Load() > 0, "" })
	})

	t.Run("kitting", func(t *testing.T) {
		tb := tb.on(t)
		tb.clickText("#nav a", "Kitting")
		tb.waitReady()
		tb.setValue("textarea[name=pc_ids]", "KIT-1\nKIT-2, KIT-3")
		tb.clickText("button", "Mint credentials")
		tb.waitText("main [data-kit]", "Minted 3 credentials")
		// The page's CSP keeps fetch() off blob: URLs; the link is what the
		// admin clicks, the same text is shown under it.
		if href := eval[string](tb, `document.querySelector('main [data-kit] a[download]').href`); !strings.HasPrefix(href, "blob:") {
			t.Fatalf("download link %q", href)
		}
		csv := eval[string](tb, `document.querySelector('main [data-kit] pre').textContent`)
		lines := strings.Split(strings.TrimSpace(csv), "\n")
		if len(lines) != 4 || lines[0] != "pc_id,token" || !strings.HasPrefix(lines[2], "KIT-2,kanade_pc_") {
			t.Fatalf("downloaded CSV %q", csv)
		}
		tok := strings.SplitN(lines[3], ",", 2)[1]
		nc, err := nats.Connect(b.NATSURL, nats.Token(tok))
		if err != nil {
			t.Fatalf("KIT-3's token: %v", err)
		}
		nc.Close()

		tb.setValue("input[name=groups]", "canary")
		tb.clickText("button", "Make enrollment tokens")
		tb.waitText("main [data-issued]", "Enrollment token made.")
		if tok := eval[string](tb, `document.querySelector('main [data-issued] input').value`); !strings.HasPrefix(tok, "kanade_enroll_") {
			t.Fatalf("enrollment token %q", tok)
		}
		tb.waitText("main table", "pending")
		tb.waitText("main table", "canary")
	})

	t.Run("operator sees none of it", func(t *testing.T) {
		tb := tb.on(t)
		tb.signInAs(b.CreateOperator(t, "otto", "operator"))
		tb.waitText("#who", "otto")
		if eval[bool](tb, `[...document.querySelectorAll('#nav a')].some((a) => a.offsetParent !== null && a.getAttribute('href') === '/kitting')`) {
			t.Fatal("an operator sees Kitting in the navigation")
		}
		tb.open("/agents/SIM-0002")
		tb.waitText("main", "Groups")
		if eval[bool](tb, `document.querySelector('main [data-credentials]') !== null`) {
			t.Fatal("an operator sees the credentials panel")
		}
		tb.open("/kitting")
		tb.waitText("main [role=note]", "You cannot mint credentials: requires role admin")
	})
}
