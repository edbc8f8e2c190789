package assets_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
)

// TestBrowserManyTabs: a browser opens at most six HTTP/1.1 connections to
// one host, and an event stream holds one for as long as the page is open,
// so with a stream per tab a seventh dashboard tab could not even load its
// data. The tabs share one stream: eight tabs all load and are live, and a
// new agent reaches every one of them without a reload.
func TestBrowserManyTabs(t *testing.T) {
	browserCtx(t)
	b := apptest.Start(t)
	first := newTab(t, b.URL, 1280)
	first.signIn()
	tabs := []*tab{first}
	for range 7 {
		tabs = append(tabs, newTab(t, b.URL, 1280))
	}
	for i, tb := range tabs {
		tb.open("/agents")
		eval[bool](tb, `(window.__noReload = true)`)
		tb.waitJS(fmt.Sprintf("tab %d live", i+1), `document.documentElement.dataset.live === 'live'`)
	}

	startFleet(t, b, 1, func(int) []string { return nil })
	for i, tb := range tabs {
		tb.wait(fmt.Sprintf("tab %d shows the new agent", i+1), 20*time.Second, func() (bool, string) {
			got := tb.text("main table")
			return strings.Contains(got, "SIM-0001"), got
		})
		if !eval[bool](tb, `window.__noReload === true && document.documentElement.dataset.live === 'live'`) {
			t.Fatalf("tab %d reloaded or is not live (%s)", i+1, eval[string](tb, `document.documentElement.dataset.live`))
		}
	}

	// The tab that holds the stream closes: another takes it over.
	lead := -1
	for i, tb := range tabs {
		if eval[bool](tb, `document.documentElement.dataset.liveLeader === 'true'`) {
			if lead >= 0 {
				t.Fatalf("tabs %d and %d both lead", lead+1, i+1)
			}
			lead = i
		}
	}
	if lead < 0 {
		t.Fatal("no tab leads the shared stream")
	}
	if err := chromedp.Cancel(tabs[lead].ctx); err != nil {
		t.Fatalf("close the leading tab: %v", err)
	}
	rest := append(tabs[:lead:lead], tabs[lead+1:]...)
	rest[0].wait("another tab leads", 20*time.Second, func() (bool, string) {
		n := 0
		for _, tb := range rest {
			if eval[bool](tb, `document.documentElement.dataset.liveLeader === 'true'`) {
				n++
			}
		}
		return n == 1, fmt.Sprintf("%d leaders", n)
	})
	b.StartFleet(t, sim.Config{Agents: 1, Prefix: "NEW-", Heartbeat: time.Second, Seed: 2})
	for i, tb := range rest {
		tb.wait(fmt.Sprintf("remaining tab %d shows the agent that came after the handover", i+1), 20*time.Second, func() (bool, string) {
			got := tb.text("main table")
			return strings.Contains(got, "NEW-0001"), got
		})
		if !eval[bool](tb, `window.__noReload === true && document.documentElement.dataset.live === 'live'`) {
			t.Fatalf("remaining tab %d reloaded or is not live", i+1)
		}
	}
}
