package assets_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"kanade-backend/internal/apptest"
)

// The browser tests drive Debian's Chromium through chromedp. One browser
// process serves every test (a tab each), which keeps the suite within a
// couple of minutes on two cores.

// envRequireBrowser turns a missing Chromium from a skip into a failure; CI
// sets it after installing Chromium so the suite cannot silently vanish.
const envRequireBrowser = "KANADE_REQUIRE_BROWSER"

// envChromium names a browser binary other than the ones on PATH.
const envChromium = "KANADE_CHROMIUM"

var shared struct {
	once   sync.Once
	ctx    context.Context
	cancel func()
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.cancel != nil {
		shared.cancel()
	}
	os.Exit(code)
}

func findChromium() string {
	if p := os.Getenv(envChromium); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browserCtx returns the shared browser, starting it on first use. Without
// Chromium the test is skipped, or fails under KANADE_REQUIRE_BROWSER.
func browserCtx(t *testing.T) context.Context {
	t.Helper()
	path := findChromium()
	if path == "" {
		msg := "Chromium not found (looked for chromium, chromium-browser, google-chrome; set " + envChromium +
			" or run `apt-get install -y chromium`)"
		if os.Getenv(envRequireBrowser) != "" {
			t.Fatalf("%s, and %s is set: the browser tests must run", msg, envRequireBrowser)
		}
		t.Skip(msg + "; skipping the browser tests")
	}
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "kanade-chromium-")
		if err != nil {
			shared.err = err
			return
		}
		// The flags that work on this project's machines: no sandbox (root
		// in a container), and nothing that reaches for the network, which
		// is closed here and would stall start-up.
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(path),
			chromedp.NoSandbox,
			chromedp.Flag("disable-gpu", true),
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("lang", "en-US"),
			chromedp.UserDataDir(dir),
			chromedp.WindowSize(1280, 900),
		)
		actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
		bctx, bcancel := chromedp.NewContext(actx)
		shared.ctx = bctx
		shared.cancel = func() { bcancel(); acancel(); os.RemoveAll(dir) }
		// The first Run starts the browser; it must not carry a timeout.
		shared.err = chromedp.Do(bctx)
	})
	if shared.err != nil {
		t.Fatalf("start Chromium %s: %v", path, shared.err)
	}
	return shared.ctx
}

// tab is one browser tab on a test backend.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string
	log  *consoleLog
}

type consoleLog struct {
	mu       sync.Mutex
	problems []string
}

// on returns the tab bound to a subtest, so failures stop that subtest.
func (tb *tab) on(t *testing.T) *tab {
	c := *tb
	c.t = t
	return &c
}

// newTab opens a tab of the given width. Uncaught exceptions and
// console.error calls fail the test at cleanup: a page that throws is
// broken even when the assertions happen to pass.
func newTab(t *testing.T, base string, width int64) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx(t))
	tb := &tab{t: t, ctx: ctx, base: base, log: &consoleLog{}}
	msgs := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source == "") {
				tb.log.mu.Lock()
				tb.log.problems = append(tb.log.problems, m.String()+" at "+m.URL)
				tb.log.mu.Unlock()
			}
		}
	}()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, 900)); err != nil {
		t.Fatalf("viewport: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		<-done
		tb.log.mu.Lock()
		defer tb.log.mu.Unlock()
		for _, p := range tb.log.problems {
			t.Errorf("browser console: %s", p)
		}
	})
	return tb
}

const stepTimeout = 20 * time.Second

func (tb *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.t.Fatalf("%s: %v\npage: %s", what, err, tb.text("body"))
	}
}

// eval runs a JavaScript expression and decodes its JSON value into a T.
func eval[T any](tb *tab, js string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// open loads a dashboard path and waits until the page drew its first data.
func (tb *tab) open(path string) {
	tb.t.Helper()
	tb.do("open "+path, chromedp.Navigate(tb.base+path))
	tb.waitReady()
}

func (tb *tab) waitReady() {
	tb.t.Helper()
	tb.waitJS("page ready", `document.querySelector('main[data-ready]') !== null`)
}

// waitJS polls a boolean expression.
func (tb *tab) waitJS(what, js string) {
	tb.t.Helper()
	tb.wait(what, 30*time.Second, func() (bool, string) {
		return eval[bool](tb, js), ""
	})
}

func (tb *tab) wait(what string, timeout time.Duration, f func() (bool, string)) {
	tb.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, got := f()
		if ok {
			return
		}
		if got != "" {
			last = got
		}
		if time.Now().After(deadline) {
			tb.t.Fatalf("waiting for %s: not within %v (last: %q)\npage: %s", what, timeout, last, tb.text("main"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// text is the rendered text of the first element matching sel ("" when
// none).
func (tb *tab) text(sel string) string {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		fmt.Sprintf(`(document.querySelector(%s) || {innerText: ''}).innerText`, jsString(sel))))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return v
}

// waitText waits until the element's text contains want.
func (tb *tab) waitText(sel, want string) {
	tb.t.Helper()
	tb.waitTextFor(sel, want, 30*time.Second)
}

func (tb *tab) waitTextFor(sel, want string, timeout time.Duration) {
	tb.t.Helper()
	tb.wait(fmt.Sprintf("%q in %s", want, sel), timeout, func() (bool, string) {
		got := tb.text(sel)
		return strings.Contains(got, want), got
	})
}

// clickText clicks the first element matching sel whose text is exactly
// label (buttons and links are found by what the operator reads).
func (tb *tab) clickText(sel, label string) {
	tb.t.Helper()
	js := fmt.Sprintf(`(() => {
		const el = [...document.querySelectorAll(%s)].find((e) => e.innerText.trim() === %s && !e.disabled);
		if (!el) return false;
		el.scrollIntoView({block: 'center'});
		el.click();
		return true;
	})()`, jsString(sel), jsString(label))
	tb.wait(fmt.Sprintf("clickable %s %q", sel, label), 20*time.Second, func() (bool, string) {
		return eval[bool](tb, js), ""
	})
}

func (tb *tab) setValue(sel, v string) {
	tb.t.Helper()
	tb.do("set "+sel, chromedp.SetValue(chromedp.CSS(sel), v))
}

func (tb *tab) location() string {
	tb.t.Helper()
	return eval[string](tb, `location.pathname + location.search + location.hash`)
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// signIn stores the test token the way the logged URL does.
func (tb *tab) signIn() {
	tb.t.Helper()
	tb.do("sign in", chromedp.Navigate(tb.base+"/#token="+apptest.Token))
	tb.waitReady()
}

func chromedpClick(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Click(chromedp.CSS(sel))
}

func chromedpSendKeys(sel, keys string) chromedp.Action[chromedp.Void] {
	return chromedp.SendKeys(chromedp.CSS(sel), keys)
}

func chromedpUpload(sel, file string) chromedp.Action[chromedp.Void] {
	return chromedp.SetUploadFiles(chromedp.CSS(sel), []string{file})
}

// darkMode makes the tab report prefers-color-scheme: dark.
func (tb *tab) darkMode() {
	tb.t.Helper()
	tb.do("dark mode", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
		})
		return err
	}))
}
