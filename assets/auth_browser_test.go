package assets_test

import (
	"strings"
	"testing"

	"kanade-backend/internal/apptest"
)

// TestBrowserLogin covers the token's whole life: the login redirect, a
// refused token with the API's message, signing in, logging out, the
// "#token=" URL the backend logs, and a 401 sending the user back to Login.
func TestBrowserLogin(t *testing.T) {
	b := apptest.Start(t)
	tb := newTab(t, b.URL, 1280)

	tb.open("/agents")
	if loc := tb.location(); !strings.HasPrefix(loc, "/login?next=%2Fagents") {
		t.Fatalf("unauthenticated /agents went to %q, want the login page", loc)
	}
	tb.setValue("#token", "wrong-token")
	tb.clickText("button", "Log in")
	tb.waitText("main [role=alert]", "invalid static token")

	tb.setValue("#token", apptest.Token)
	tb.clickText("button", "Log in")
	tb.waitJS("back on /agents", `location.pathname === '/agents' && document.querySelector('main h1')?.innerText === 'Agents'`)

	tb.clickText("button", "Log out")
	tb.waitJS("login page", `location.pathname === '/login' && !!document.querySelector('#token')`)
	if got := eval[string](tb, `localStorage.getItem('kanade.token') || ''`); got != "" {
		t.Fatalf("token still stored after logout: %q", got)
	}

	// The URL the backend logs signs in directly and leaves no token in the
	// address bar.
	tb.open("/jetstream#token=" + apptest.Token)
	tb.waitText("main", "RESULTS")
	if loc := tb.location(); loc != "/jetstream" {
		t.Fatalf("location after #token login = %q, want /jetstream without the fragment", loc)
	}

	// A token the backend no longer accepts: the first 401 returns to Login
	// with the API's reason, and back to the page after signing in.
	eval[bool](tb, `(localStorage.setItem('kanade.token', 'revoked'), true)`)
	tb.open("/jetstream")
	tb.waitJS("login after 401", `location.pathname === '/login'`)
	tb.waitText("main [role=alert]", "invalid static token")
	tb.setValue("#token", apptest.Token)
	tb.clickText("button", "Log in")
	tb.waitJS("back on /jetstream", `location.pathname === '/jetstream'`)
	tb.waitText("main", "agent_releases")
}

// TestBrowserEveryPageLoads opens every page of the navigation, and a few
// detail pages, at phone width: each draws its heading without a script
// error, whatever the backend has or lacks.
func TestBrowserEveryPageLoads(t *testing.T) {
	b := apptest.Start(t)
	tb := newTab(t, b.URL, 360)
	tb.signIn()
	links := eval[[]string](tb, `[...document.querySelectorAll('#nav a')].map((a) => a.getAttribute('href'))`)
	if len(links) < 14 {
		t.Fatalf("navigation has %d links: %v", len(links), links)
	}
	pages := append(links, "/agents/pc-x", "/inventory/job/probe", "/inventory/pc/pc-x", "/jobs/new",
		"/executions/00000000-0000-0000-0000-000000000000", "/schedules/new", "/results/rid", "/no/such/page")
	for _, p := range pages {
		tb.open(p)
		if h1 := tb.text("main h1"); h1 == "" {
			t.Errorf("%s: no heading; page: %s", p, tb.text("main"))
		}
	}
	// Dark mode follows the system setting.
	tb.darkMode()
	tb.open("/")
	if bg := eval[string](tb, `getComputedStyle(document.body).backgroundColor`); bg != "rgb(15, 18, 22)" {
		t.Errorf("dark mode background = %s, want the dark palette", bg)
	}
	// The menu opens from the toggle on a phone and closes on navigation.
	tb.clickText("button", "☰\nMenu")
	tb.waitJS("menu open", `document.body.classList.contains('nav-open')`)
	tb.clickText("#nav a", "Audit")
	tb.waitJS("audit page, menu closed", `location.pathname === '/audit' && !document.body.classList.contains('nav-open')`)
}
