package assets_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"kanade-backend/internal/apptest"
	"kanade-backend/storage"
)

// signInAs signs in with tok the way the logged URL does, from a fresh
// page load (a fragment change alone would not reload the dashboard).
func (tb *tab) signInAs(tok string) {
	tb.t.Helper()
	tb.do("sign in", chromedp.Navigate("about:blank"), chromedp.Navigate(tb.base+"/#token="+tok))
	tb.waitReady()
}

// TestBrowserRoles signs in with operator tokens of each role: the header
// names the operator and role; a viewer finds every action it may not take
// disabled or hidden, with the reason (the Exec page has no enabled submit
// and says why); an operator execs from the Exec page and the Audit page
// shows the exec as theirs; an admin creates an operator on the Operators
// page, sees the token once, and revokes it.
func TestBrowserRoles(t *testing.T) {
	b := apptest.Start(t)
	if resp, out := b.Do(t, "POST", "/api/jobs", helloJob, "Content-Type", "application/yaml"); resp.StatusCode != http.StatusOK {
		t.Fatalf("create job: %d %s", resp.StatusCode, out)
	}
	// PC-1, the operator's exec target, has reported once: an exec to a
	// PC nobody knows is refused (issue 16).
	seen := storage.T(time.Now())
	if _, err := b.Store.W.NewInsert().Model(&storage.Agent{PcID: "PC-1", AgentVersion: "0.21.2", LastHeartbeat: seen, UpdatedAt: seen}).
		Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	vera := b.CreateOperator(t, "vera", "viewer")
	alice := b.CreateOperator(t, "alice", "operator")
	tb := newTab(t, b.URL, 1280)

	t.Run("viewer", func(t *testing.T) {
		tb := tb.on(t)
		tb.signInAs(vera)
		tb.waitText("#who", "vera")
		if who := tb.text("#who"); !strings.Contains(who, "viewer") {
			t.Fatalf("header shows %q, want the name and the role viewer", who)
		}
		if eval[bool](tb, `[...document.querySelectorAll('#nav a')].some((a) => a.offsetParent !== null && a.getAttribute('href') === '/operators')`) {
			t.Fatal("a viewer sees the Operators page in the navigation")
		}

		tb.open("/exec?job=hello")
		submits := eval[int](tb, `document.querySelectorAll('main form button[type=submit]').length`)
		enabled := eval[int](tb, `[...document.querySelectorAll('main form button[type=submit]')].filter((b) => !b.disabled).length`)
		if submits == 0 || enabled != 0 {
			t.Fatalf("Exec page: %d submit buttons, %d enabled; want none enabled", submits, enabled)
		}
		tb.waitText("main [role=note]", "You cannot exec a job: requires role operator; you are vera (viewer).")
		if title := eval[string](tb, `document.querySelector('main form button[type=submit]').title`); !strings.Contains(title, "requires role operator") {
			t.Errorf("the disabled Exec button's tooltip is %q", title)
		}

		tb.open("/jobs")
		tb.waitText("main table", "hello")
		if eval[bool](tb, `[...document.querySelectorAll('main a')].some((a) => !a.hidden && ['New job', 'Exec'].includes(a.innerText.trim()))`) {
			t.Error("a viewer sees the New job or Exec links")
		}
		if !eval[bool](tb, `[...document.querySelectorAll('main button')].filter((b) => b.innerText.trim() === 'Delete').every((b) => b.disabled)`) {
			t.Error("a viewer's Delete button is enabled")
		}
		// The Operators page, opened by URL, lists but changes nothing.
		tb.open("/operators")
		tb.waitText("main table", "alice")
		tb.waitText("main [role=note]", "You cannot create operators: requires role admin")
		if n := eval[int](tb, `[...document.querySelectorAll('main button, main select')].filter((e) => !e.disabled).length`); n != 0 {
			t.Errorf("%d enabled controls on the Operators page for a viewer", n)
		}
	})

	t.Run("operator execs, audit names them", func(t *testing.T) {
		tb := tb.on(t)
		tb.clickText("button", "Log out")
		tb.waitJS("login page", `location.pathname === '/login'`)
		tb.setValue("#token", alice)
		tb.clickText("button", "Log in")
		tb.waitText("#who", "alice")
		if who := tb.text("#who"); !strings.Contains(who, "operator") {
			t.Fatalf("header shows %q", who)
		}
		tb.open("/exec?job=hello")
		tb.setValue("input[name=pcs]", "PC-1")
		tb.clickText("button", "Exec")
		tb.waitJS("execution page", `location.pathname.startsWith('/executions/')`)
		tb.waitText("main", "operator:alice")

		tb.open("/audit?action=exec")
		tb.waitText("main table", "alice")
		row := eval[string](tb, `[...document.querySelectorAll('main tbody tr')].map((r) => r.innerText).join('\n')`)
		if !strings.Contains(row, "operator alice") || !strings.Contains(row, "sub=alice") {
			t.Fatalf("audit rows %q do not show the exec as alice's", row)
		}
		// Releases are for admins: the rollout buttons are disabled.
		tb.open("/rollout")
		if !eval[bool](tb, `[...document.querySelectorAll('main form button[type=submit]')].every((b) => b.disabled)`) {
			t.Error("an operator can submit on the Rollout page")
		}
		tb.waitText("main", "You cannot roll out releases: requires role admin; you are alice (operator).")
	})

	t.Run("admin manages operators", func(t *testing.T) {
		tb := tb.on(t)
		tb.signInAs(apptest.Token)
		tb.waitText("#who", "admin")
		tb.clickText("#nav a", "Operators")
		tb.waitText("main table", "vera")
		tb.setValue("input[name=name]", "bob")
		tb.setValue("select[name=role]", "operator")
		tb.clickText("button", "Create")
		tb.waitText("main [data-issued=bob]", "shown only this once")
		tok := eval[string](tb, `document.querySelector('main [data-issued=bob] input').value`)
		if !strings.HasPrefix(tok, "kanade_op_") {
			t.Fatalf("token shown %q", tok)
		}
		if resp, _ := b.Do(t, "GET", "/api/me", nil, apptest.Bearer(tok)...); resp.StatusCode != http.StatusOK {
			t.Fatalf("bob's token from the page: %d", resp.StatusCode)
		}
		tb.waitText("main table", "bob")
		revoke := `[...document.querySelectorAll('main tbody tr')].find((r) => r.innerText.includes('bob')).querySelector('button.danger')`
		eval[bool](tb, `(`+revoke+`.click(), true)`)
		eval[bool](tb, `(`+revoke+`.click(), true)`)
		tb.waitText("main [role=status]", "Revoked bob")
		if resp, _ := b.Do(t, "GET", "/api/me", nil, apptest.Bearer(tok)...); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bob's revoked token: %d, want 401", resp.StatusCode)
		}
	})
}
