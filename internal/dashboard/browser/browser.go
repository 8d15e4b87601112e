// Package browser drives a headless Chromium (Debian's chromium) through
// the DevTools protocol (chromedp), for the dashboard's browser tests, its
// benchmark and `make screenshot`: one place that knows how to start the
// browser on these machines and how to wait for the page.
package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// Executable finds Chromium on PATH, under the names it goes by (Debian's
// first).
func Executable() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("chromium not found on PATH (install it with scripts/install-deps.sh)")
}

// Browser is one headless Chromium with one tab.
type Browser struct {
	ctx     context.Context
	cancel  func()
	dataDir string
}

// Options size the window.
type Options struct {
	Width, Height int
}

// Start starts Chromium headless, in a fresh profile, with the flags this
// kind of machine needs: no sandbox (root), no GPU, and nothing that
// reaches out on its own (QUIC, background networking, component updates,
// sync), which a closed network refuses noisily. Close stops it.
func Start(ctx context.Context, o Options) (*Browser, error) {
	path, err := Executable()
	if err != nil {
		return nil, err
	}
	if o.Width == 0 {
		o.Width, o.Height = 1400, 900
	}
	dir, err := os.MkdirTemp("", "underlay-chromium-")
	if err != nil {
		return nil, err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(o.Width, o.Height),
	)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	// The first action starts the browser and opens the tab.
	if err := chromedp.Do(bctx); err != nil {
		bcancel()
		acancel()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	b := &Browser{ctx: bctx, dataDir: dir}
	b.cancel = func() {
		bcancel()
		acancel()
		os.RemoveAll(dir)
	}
	return b, nil
}

// Close stops the browser and removes its profile.
func (b *Browser) Close() { b.cancel() }

// Context is the tab's context, for chromedp actions the helpers lack.
func (b *Browser) Context() context.Context { return b.ctx }

// Do runs chromedp actions in the tab within timeout.
func (b *Browser) Do(timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

// Open navigates to url and waits for its body.
func (b *Browser) Open(url string) error {
	return b.Do(30*time.Second, chromedp.Navigate(url), chromedp.WaitReady(chromedp.CSS("body")))
}

// BypassCSP makes the tab ignore pages' Content-Security-Policy, so that a
// test sees what the page's own code does without that safety net.
func (b *Browser) BypassCSP() error {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	_, err := chromedp.Call(ctx, page.SetBypassCSP, page.SetBypassCSPParams{Enabled: true})
	return err
}

// Eval evaluates a JavaScript expression in b's page and decodes its
// value (JSON) into a T.
func Eval[T any](b *Browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// WaitTrue polls a JavaScript expression until it is true, or fails after
// timeout with the last value of describe (an expression saying what the
// page shows instead).
func (b *Browser) WaitTrue(expr, describe string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := Eval[bool](b, "!!("+expr+")")
		if err == nil && ok {
			return nil
		}
		if time.Now().After(deadline) {
			var seen any
			if describe != "" {
				seen, _ = Eval[any](b, describe)
			}
			return fmt.Errorf("not true after %s: %s (err %v; the page shows %v)", timeout, expr, err, seen)
		}
		select {
		case <-b.ctx.Done():
			return b.ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Click clicks the first element a CSS selector finds, once visible.
func (b *Browser) Click(selector string) error {
	return b.Do(10*time.Second, chromedp.Click(chromedp.CSS(selector), chromedp.NodeVisible))
}

// Type types text into the first element a CSS selector finds.
func (b *Browser) Type(selector, text string) error {
	return b.Do(10*time.Second, chromedp.SendKeys(chromedp.CSS(selector), text, chromedp.NodeVisible))
}

// ScrollTo scrolls the first element a CSS selector finds into view.
func (b *Browser) ScrollTo(selector string) error {
	return b.Do(10*time.Second, chromedp.ScrollIntoView(chromedp.CSS(selector)))
}

// Screenshot writes a PNG of the whole page to path.
func (b *Browser) Screenshot(path string) error {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	// From the top: a sticky header would otherwise be drawn where the
	// page was scrolled to.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`)); err != nil {
		return fmt.Errorf("screenshot: %w", err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return fmt.Errorf("screenshot: %w", err)
	}
	return os.WriteFile(path, png, 0o644)
}

// DashboardReady is true once the dashboard rendered a snapshot and its
// event stream is live.
const DashboardReady = `window.__ul && window.__ul.renders > 0 && document.getElementById('live').dataset.state === 'live'`

// Login logs the open dashboard page in with token once it asks for it
// (control asks before showing anything unless --auth-reads=false), then
// waits until the page is live.
func (b *Browser) Login(token string, timeout time.Duration) error {
	if err := b.WaitTrue(`document.getElementById('login').open`, "document.body.innerText", timeout); err != nil {
		return fmt.Errorf("the login the page asks for: %w", err)
	}
	if err := b.Type("#token", token); err != nil {
		return err
	}
	if err := b.Click(`#login-form button[type=submit]`); err != nil {
		return err
	}
	return b.WaitTrue(DashboardReady, "document.getElementById('live').textContent", timeout)
}
