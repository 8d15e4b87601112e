package dashboard

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/termtext"
	"github.com/underlay/underlay/internal/testenv"
)

// readableInputs are names as agents and other writers may give them:
// bidi overrides and isolates, marks and zero-width characters that make
// a name show as another, controls, and names that are plain.
var readableInputs = []string{
	"n1\u202e1n", "a\u2066b\u2069c", "\u200bzero\u200c\u200d", "\u200ele\u200ft\u061c", "\ufeffbom",
	"line\u2028sep\u2029", "\x1b[31mred", "cr\r bell\a bs\b vt\v ff\f", "del\x7f", "c1\u0085\u009b",
	"tag\U000e0041", "tab\tnewline\n", "plain-name_1.2", "é日本 a\u00a0b 😀", `<img src=x>`, `back\slash`,
	"web\u00a0", "we\u3000b\u2007\u202f", "hangul\u3164\u115f fill\uffa0", "vs\ufe0f\U000e0100 cgj\u034f", "blank\u2800", "shy\u00ad",
}

// TestScriptShowsNamesReadable: the page showed every name as it came,
// so a name holding U+202E (right-to-left override) or another bidi or
// zero-width character showed as another name, or reordered the text
// around it. The page now shows every character that is not graphic
// escaped, as termtext.Lines escapes it in underlay's other output, in
// every text and title it sets.
func TestScriptShowsNamesReadable(t *testing.T) {
	b, err := assets.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	for _, want := range []string{
		"else if (k === 'text') el.textContent = readable(v);",
		"document.createTextNode(readable(c))",
		"k === 'title'",
		"tip.textContent = readable(",
	} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
	got := runScript(t, js, "readable", "readable")
	for i, s := range readableInputs {
		if want := termtext.Lines(s); i >= len(got) || got[i] != want {
			t.Errorf("readable(%q) = %q, want %q", s, got[min(i, len(got)-1)], want)
		}
	}
}

// runScript runs app.js's function fn, with what it needs from
// notGraphic on, in node over readableInputs, each through call (a
// JavaScript function of one argument), and returns the answers.
// scripts/install-deps.sh installs Debian's nodejs, so node is there
// whenever the README's test command runs (UNDERLAY_INTEGRATION=1): then
// a missing node fails the test. Elsewhere (`go test ./...` on a machine
// without it) the test is skipped once the function's uses are checked.
func runScript(t *testing.T, js, fn, call string) []string {
	t.Helper()
	start := strings.Index(js, "  const notGraphic")
	at := strings.Index(js, "function "+fn+"(")
	if start < 0 || at < start {
		t.Fatalf("app.js has no %s function after notGraphic", fn)
	}
	end := at + strings.Index(js[at:], "\n  }\n") + len("\n  }\n")
	script := js[start:end] + "\nprocess.stdout.write(JSON.stringify(JSON.parse(process.argv[1]).map(" + call + ")));\n"
	return runNode(t, "the page's "+fn+" function", script, readableInputs)
}

// runNode runs script, part of app.js (what), in node with in, as JSON,
// as its argument, and returns the strings it writes, a JSON list.
func runNode(t *testing.T, what, script string, in []string) []string {
	t.Helper()
	node, err := exec.LookPath("node")
	switch {
	case err != nil && os.Getenv(testenv.EnvIntegration) == "1":
		t.Fatalf("no node to run %s (scripts/install-deps.sh installs Debian's nodejs): %v", what, err)
	case err != nil:
		t.Skipf("no node to run %s: its uses were checked only (scripts/install-deps.sh installs Debian's nodejs; with %s=1 a missing node fails)", what, testenv.EnvIntegration)
	}
	arg, _ := json.Marshal(in)
	cmd := exec.CommandContext(t.Context(), node, "-e", script, string(arg))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v: %s", err, stderr.String())
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node's answer %q: %v", out, err)
	}
	return got
}

// TestScriptKeepsNothingForANameItWasNotGiven: the page kept what it
// remembers of a service (the "to N" box being typed in, the answer to
// its last scale request) and of a network (the map block zoomed in) in
// plain objects keyed by their names, which have properties of their own:
// a service named constructor or toString showed "undefined" as the
// answer to a scale request never made, and "function Object() …" in its
// "to N" box, and a network named so did not open on its busiest block.
// Those maps now have no prototype: a name finds only what was stored
// under it (__proto__ too).
func TestScriptKeepsNothingForANameItWasNotGiven(t *testing.T) {
	b, err := assets.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	start := strings.Index(js, "  const state = {")
	end := start + strings.Index(js[start:], "\n  };\n") + len("\n  };\n")
	if start < 0 || end < start {
		t.Fatal("app.js has no state object")
	}
	maps, _ := json.Marshal([]string{"toN", "zoom", "results"})
	names := []string{"constructor", "toString", "__proto__", "hasOwnProperty", "valueOf", "web"}
	script := js[start:end] + "\nconst maps = " + string(maps) + ";\n" +
		"process.stdout.write(JSON.stringify(JSON.parse(process.argv[1]).flatMap((n) =>\n" +
		"  maps.flatMap((m) => {\n" +
		"    const at = 'state.' + m + '[' + JSON.stringify(n) + ']';\n" +
		"    if (state[m][n] !== undefined) return [at + ' is ' + String(state[m][n]) + ', though nothing was stored under that name'];\n" +
		"    state[m][n] = 'v';\n" +
		"    return state[m][n] === 'v' ? [] : [at + ' is ' + String(state[m][n]) + ' after v was stored there'];\n" +
		"  }))));\n"
	for _, found := range runNode(t, "the page's state object", script, names) {
		t.Error(found)
	}
}

// TestScriptSearchFindsNamesAsShown: the page's search (and the events'
// filter) matched the names as they came, while the page shows them
// readable: a user typing the name as shown, n1\u202e1n, found nothing.
// Every search text is now made by searchText, of the texts as shown and
// as they came.
func TestScriptSearchFindsNamesAsShown(t *testing.T) {
	b, err := assets.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	if n := strings.Count(js, ".join(' ').toLowerCase()"); n > 0 {
		t.Errorf("app.js makes %d search texts of the names as they came (.join(' ').toLowerCase()), not as shown", n)
	}
	for _, want := range []string{"search: searchText(", "c.dataset.search = searchText("} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
	got := runScript(t, js, "searchText", "(s) => searchText(['svc', s, 'img'])")
	if len(got) != len(readableInputs) {
		t.Fatalf("node gave %d search texts for %d names", len(got), len(readableInputs))
	}
	for i, s := range readableInputs {
		for _, want := range []string{strings.ToLower(termtext.Lines(s)), strings.ToLower(s), "svc", "img"} {
			if !strings.Contains(got[i], want) {
				t.Errorf("searchText of %q = %q: a search for %q finds nothing", s, got[i], want)
			}
		}
	}
}

// TestScriptSetsTextReadable: every text the script sets itself
// (textContent, besides h's) that may hold a name the cluster gave goes
// through readable. The login dialog said why it asked ("Scaling " + the
// service + " needs a token.") as it came: a service named with a bidi
// override reordered the dialog's words. The texts left as they are hold
// the page's own words and numbers only.
func TestScriptSetsTextReadable(t *testing.T) {
	own := map[string]bool{
		"text":                  true, // setLive: the page's words, times and statuses
		"age(el.dataset.since)": true,
		"''":                    true,
		"err.message":           true, // the browser's
		"'Not on a node' + (unplacedOmitted ? ' (… ' + unplacedOmitted + ' more not shown)' : '')":  true,
		"omitted ? '… ' + omitted + ' more services not shown (docker service ls lists them)' : ''": true,
		"shown + ' of ' + $('events').children.length":                                              true,
		"q ? matches.length + ' found' + (matches.length ? ' (Enter: next)' : '') : ''":             true,
	}
	for _, m := range regexp.MustCompile(`textContent = ([^;]*);`).FindAllStringSubmatch(appJS(t), -1) {
		if v := m[1]; !strings.HasPrefix(v, "readable(") && !own[v] {
			t.Errorf("app.js sets a text that is not made readable: textContent = %s", v)
		}
	}
}
