// Command screenshot saves a PNG of a lab's dashboard (`make screenshot`
// writes docs/dashboard.png from run.sh's lab), with the chromedp code of
// the dashboard's browser tests: headless Chromium, the page opened at the
// lab's dashboard_url and logged in with the lab's control token, the
// picture taken once it is live and shows tasks.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/dashboard/browser"
	"github.com/underlay/underlay/internal/lab"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "screenshot:", err)
		os.Exit(1)
	}
}

func run() error {
	name := flag.String("lab", lab.DefaultName, "lab whose dashboard to take")
	url := flag.String("url", "", "dashboard URL (default: the lab's dashboard_url)")
	tokenFile := flag.String("token-file", "", "file whose first line is control's token, to log in with (default: the lab's control_token_file; none with -url)")
	out := flag.String("out", "docs/dashboard.png", "PNG file to write")
	width := flag.Int("width", 1400, "window width in pixels")
	height := flag.Int("height", 900, "window height in pixels (the picture is the whole page)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *url == "" {
		st, err := lab.GetStatus(ctx, *name)
		if err != nil {
			return fmt.Errorf("%w (bring it up with scripts/run.sh, or give -url)", err)
		}
		if st.DashboardURL == "" {
			return fmt.Errorf("lab %s runs no dashboard (made with --no-agent?)", *name)
		}
		*url = st.DashboardURL
		if *tokenFile == "" {
			*tokenFile = st.ControlTokenFile
		}
	}
	var token string
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("-token-file: %w", err)
		}
		token, _, _ = strings.Cut(strings.TrimSpace(string(b)), "\n")
	}
	b, err := browser.Start(ctx, browser.Options{Width: *width, Height: *height})
	if err != nil {
		return err
	}
	defer b.Close()
	if err := b.Open(*url); err != nil {
		return fmt.Errorf("open %s: %w", *url, err)
	}
	// control asks for its token before showing anything (unless started
	// with --auth-reads=false).
	if token != "" {
		if err := b.Login(token, time.Minute); err != nil {
			return err
		}
	}
	if err := b.WaitTrue(browser.DashboardReady+` && document.querySelectorAll('.card[data-state=running]').length > 0`,
		"document.getElementById('live').textContent", time.Minute); err != nil {
		return err
	}
	// Let the charts' and the map's last frame settle.
	time.Sleep(500 * time.Millisecond)
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	if err := b.Screenshot(*out); err != nil {
		return err
	}
	fmt.Printf("wrote %s (the dashboard at %s)\n", *out, *url)
	return nil
}
