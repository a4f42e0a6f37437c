package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// EnvArtifacts names the directory the browser test writes its
// screenshots to (default: the test's temporary directory).
const EnvArtifacts = "PGCOORD_TEST_ARTIFACTS"

// chromium returns the path of a Chromium or Chrome binary, or "".
func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// consoleErrors collects a tab's console errors, uncaught exceptions and
// error log entries (failed loads, CSP violations).
type consoleErrors struct{ collected[string] }

func (c *consoleErrors) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		var parts []string
		for _, a := range ev.Args {
			parts = append(parts, string(a.Value)+a.Description)
		}
		msg = "console.error: " + strings.Join(parts, " ")
	case *runtime.EventExceptionThrown:
		msg = "exception: " + ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			msg += " " + ev.ExceptionDetails.Exception.Description
		}
	case *log.EventEntryAdded:
		if ev.Entry.Level != log.EntryLevelError {
			return
		}
		msg = "log: " + ev.Entry.Text + " " + ev.Entry.URL
	default:
		return
	}
	c.add(msg)
}

// TestBrowser drives headless Chromium through every page of a dashboard
// on a live two-instance cluster: each page loads without console errors,
// a message published from an instance appears in the Channels page's live
// tail (as text), the Locks page shows a held lock with its holder, and
// River UI's job list shows a pgcoord message by its channel. It saves a
// screenshot of each page.
func TestBrowser(t *testing.T) {
	t.Parallel()
	exe := chromium()
	if exe == "" {
		t.Skip("no Chromium binary (chromium, chromium-browser, google-chrome) on PATH: apt-get install -y chromium (CI installs it)")
	}
	artifacts := os.Getenv(EnvArtifacts)
	if artifacts == "" {
		artifacts = t.TempDir()
	}
	require.NoError(t, os.MkdirAll(artifacts, 0o755))

	e := newEnv(t, nil)
	bg := context.Background()
	e.hold(t, 1, "report:daily")
	e.publish(t, 0, "orders.created", map[string]any{"order": 42})
	require.NoError(t, e.cluster.App(0).Cache().Set(bg, "greeting", "hello", 0))
	_, err := e.cluster.App(0).EventQueue().Publish(bg, "emails.welcome", map[string]any{"to": "ada@example.com"}, nil)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(bg, 2*time.Minute)
	t.Cleanup(cancel)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1100, 700), chromedp.UserDataDir(t.TempDir()))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	var console consoleErrors
	require.NoError(t, chromedp.Listen(bctx, console.listen))

	// visit loads a page (path "": stays on the current one), waits until
	// cond (a JavaScript expression) holds, saves a screenshot, and checks
	// the console stayed clean.
	visit := func(name, path, cond string) {
		t.Helper()
		if path != "" {
			require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(e.url(path))), name)
		}
		waitJS(t, bctx, name, cond)
		shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		require.NoError(t, err, name)
		require.NoError(t, os.WriteFile(filepath.Join(artifacts, "dashboard-"+name+".png"), shot, 0o644))
		require.Empty(t, console.take(), "console errors on the %s page", name)
	}

	visit("cluster", "/cluster", `document.querySelector("#instances") !== null &&
		[...document.querySelectorAll("#instances tbody tr")].filter(tr => tr.cells[2].textContent === "live").length === 2`)
	visit("locks", "/locks", `[...document.querySelectorAll("#held tbody tr")].some(tr =>
		tr.cells[1].textContent === "report:daily" && tr.cells[2].textContent === "instance-1")`)
	visit("caches", "/caches", `[...document.querySelectorAll("#caches tbody tr")].some(tr => tr.cells[0].textContent === "main")`)

	// The live tail: once it says "live", a message published from
	// instance 1 appears, its markup shown as text.
	require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(e.url("/channels"))))
	waitJS(t, bctx, "tail live", `document.querySelector("#tail-status").textContent === "live"`)
	e.publish(t, 1, "browser.tail", json.RawMessage(`{"hello": "<b id=\"injected\">world</b>"}`))
	visit("channels", "", `[...document.querySelectorAll("#tail-body tr")].some(tr =>
		tr.cells[1].textContent === "browser.tail" && tr.cells[2].textContent === "instance-1" &&
		tr.cells[3].textContent.includes('<b id=\\"injected\\">world</b>'))`)
	waitJS(t, bctx, "no injected element", `document.getElementById("injected") === null`)

	// River UI's job list finds the pgcoord message by its channel.
	visit("queue", "/queue/jobs?state=available", `document.body.innerText.includes("emails.welcome")`)
	t.Logf("screenshots in %s", artifacts)
}

// waitJS waits until the JavaScript expression cond is true in the page,
// failing the test (with what) after 30 s.
func waitJS(t *testing.T, ctx context.Context, what, cond string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(30*time.Second)))
	require.NoError(t, err, fmt.Sprintf("waiting in the browser for: %s", what))
}
