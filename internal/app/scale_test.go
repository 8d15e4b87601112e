package app

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestScaleEmptyService: an empty SERVICE is refused, named, before any
// call — the call went to /v1/underlay/services//scale, and control's
// answer (a redirect) said nothing of the name. The context is already
// cancelled and control unreachable, so that a name let through fails on
// something else.
func TestScaleEmptyService(t *testing.T) {
	for _, args := range [][]string{{"scale", "", "up"}, {"scale", " ", "--to", "3"}, {"scale", "history", ""}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			var out, errOut bytes.Buffer
			code := Run(ctx, append(args, "--addr", "127.0.0.1:1"), IOStreams{Out: &out, ErrOut: &errOut})
			if code == 0 || !strings.Contains(errOut.String(), "service name is empty") {
				t.Errorf("exit %d, stderr %q; want failure saying the service name is empty", code, errOut.String())
			}
		})
	}
}

// TestScaleDotService: SERVICE "." or ".." went into the call's path
// (/v1/underlay/services/../scale), which control's HTTP server cleans
// and answers with a redirect: the error named a redirect, not the name.
// Such a name is now refused before any call, named.
func TestScaleDotService(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{".", []string{"scale", ".", "up"}},
		{"..", []string{"scale", "..", "--to", "3"}},
		{"..", []string{"scale", "history", ".."}},
	} {
		args := tc.args
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			var out, errOut bytes.Buffer
			code := Run(ctx, append(args, "--addr", "127.0.0.1:1"), IOStreams{Out: &out, ErrOut: &errOut})
			want := fmt.Sprintf("SERVICE %q: not a service name", tc.name)
			if code == 0 || !strings.Contains(errOut.String(), want) {
				t.Errorf("exit %d, stderr %q; want failure naming %q", code, errOut.String(), want)
			}
		})
	}
}

// TestScaleHistoryQuotesRecords: scale history printed the records as
// control kept them, and a record's source holds what an Alertmanager
// webhook sent (the alert's name and fingerprint): a newline there forged
// rows of the history (a decision that was never made), a tab shifted the
// columns and an escape sequence rewrote the terminal. Such values are
// now printed quoted, on their row; so are scale ls's.
func TestScaleHistoryQuotesRecords(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/underlay/services/web/history":
			fmt.Fprint(w, `{"data":[
				{"service":"web","time":"2025-01-02T03:04:05Z","direction":"up","from":1,"to":2,"reason":"scaled","why":"1 → 2",
				 "source":"alertmanager 10.0.0.9:1234 alert Hot\n2025-01-02T03:04:06Z  down  2  0  scaled  http me  x fingerprint \u001b[2J"}]}`)
		case "/v1/underlay/services":
			fmt.Fprint(w, `{"data":[{"service":"web","replicas":2,"policy":{"min":1,"max":3},"error":"label x: \"a\nweb2  1  1  9\""}]}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		args  []string
		lines int
		want  []string
	}{
		{[]string{"scale", "history", "web"}, 2, []string{`"alertmanager 10.0.0.9:1234 alert Hot\n2025-01-02T03:04:06Z  down  2  0  scaled  http me  x fingerprint \x1b[2J"`}},
		{[]string{"scale", "ls"}, 2, []string{`"label x: \"a\nweb2  1  1  9\""`}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := Run(context.Background(), append(tc.args, "--addr", srv.URL), IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			if lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); len(lines) != tc.lines {
				t.Errorf("%d lines, want %d (header, one row):\n%s", len(lines), tc.lines, out.String())
			}
			if strings.Contains(out.String(), "\x1b") {
				t.Errorf("output holds an escape character:\n%q", out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output does not hold %s:\n%s", w, out.String())
				}
			}
		})
	}
}
