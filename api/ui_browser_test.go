package api

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// inCI reports whether the CI variable is set (CI=true on CI services).
func inCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "false" && v != "0"
}

// TestAdminPageInBrowser logs in through the form in headless Chromium,
// checks that the page lists the configs with their states (and a user id
// that is markup shows as text), and keeps a full-page screenshot as a test
// artifact.
func TestAdminPageInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if inCI() {
			t.Fatalf("CI is set but %s is missing (.ci/run installs Debian's chromium): %v", chromiumPath, err)
		}
		t.Skipf("skipped: needs Debian's chromium at %s (apt-get install chromium)", chromiumPath)
	}
	h := newHarness(t, harnessOpts{ghost: true})
	keys := pageFixture(t, h)

	actx, cancelAlloc := chromedp.NewExecAllocator(h.ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), // containers have a small /dev/shm
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	// The first Run starts the browser, which lives as long as bctx; each
	// step below is bounded on its own.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	step := func(what string, a chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		if _, err := chromedp.Run(ctx, a); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(js string) []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		out, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return out
	}

	// Without a session the page is the login form.
	step("open /ui/", chromedp.Navigate(h.http.URL+"/ui/"))
	step("wait for the login form", chromedp.WaitVisible(chromedp.ID("token")))
	if loc := eval(`[location.pathname]`); loc[0] != "/ui/login" {
		t.Fatalf("without a session the browser is at %s, want /ui/login", loc[0])
	}
	shoot(t, bctx, "login.png")
	step("type the token", chromedp.SendKeys(chromedp.ID("token"), testToken))
	step("submit the form", chromedp.Submit(chromedp.ID("token")))
	step("wait for the configs", chromedp.WaitVisible(chromedp.CSS("table.configs")))

	rows := eval(`Array.from(document.querySelectorAll("tr.config")).map(r =>
		r.dataset.state + "|" + r.querySelector("td.user").textContent + "|" + r.querySelector("code").title)`)
	got := map[string]string{}
	for _, r := range rows {
		f := strings.SplitN(r, "|", 3)
		got[f[2]] = f[0] + " " + f[1]
	}
	for name, want := range map[string]string{
		"alice": "online alice (laptop)", "bob": "never bob", "evil": "never " + evilUser,
		"dave": "missing dave", "erin": "pending erin", "orphan": "orphan –",
	} {
		if got[keys[name]] != want {
			t.Errorf("row of %s: %q, want %q", name, got[keys[name]], want)
		}
	}
	if n := eval(`[String(document.querySelectorAll("script").length)]`); n[0] != "0" {
		t.Errorf("%s script elements in the DOM: the user id %q became markup", n[0], evilUser)
	}
	if ev := eval(`[document.querySelector("tr.event").dataset.status, document.querySelector("tr.event td.lasterr").textContent]`); ev[0] != "failed" || !strings.Contains(ev[1], "status 5") {
		t.Errorf("first event row: %q, want the failed one with its last error", ev)
	}
	if svg := eval(`[String(document.querySelectorAll("figure.traffic rect.rx").length)]`); svg[0] == "0" {
		t.Error("no traffic picture")
	}

	if b := shoot(t, bctx, "admin-page.png"); b.Dx() != 1400 || b.Dy() < 900 {
		t.Errorf("screenshot %v: want the full page, 1400 wide", b)
	}

	// Logging out ends the session: the page is the login again.
	step("log out", chromedp.Click(chromedp.CSS("form.logout button")))
	step("wait for the login form", chromedp.WaitVisible(chromedp.ID("token")))
	step("open /ui/ again", chromedp.Navigate(h.http.URL+"/ui/"))
	if loc := eval(`[location.pathname]`); loc[0] != "/ui/login" {
		t.Errorf("after logout the browser is at %s, want /ui/login", loc[0])
	}
}

// shoot saves a full-page screenshot as a test artifact, logs its path and
// returns its size.
func shoot(t *testing.T, bctx context.Context, name string) image.Rectangle {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (kept with go test -artifacts)", path)
	return img.Bounds()
}
