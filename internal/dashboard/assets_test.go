package dashboard

import (
	"regexp"
	"strings"
	"testing"
)

// maxPage is the bound on the whole page, transferred.
const maxPage = 300 << 10

func TestPageSize(t *testing.T) {
	total := 0
	for _, name := range []string{"index.html", "app.js", "app.css"} {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			t.Fatal(err)
		}
		total += len(b)
	}
	t.Logf("page: %d bytes (index.html, app.js, app.css)", total)
	if total > maxPage {
		t.Errorf("the page is %d bytes, more than %d", total, maxPage)
	}
}

// TestScriptNeverParsesHTML guards the page's escaping: its script makes
// every element with createElement and sets every value as text, so no
// API that parses a string as HTML or code may appear in it.
func TestScriptNeverParsesHTML(t *testing.T) {
	b, err := assets.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setTimeout('", `setTimeout("`, "createContextualFragment", "srcdoc"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	// Attributes that load or run something are never set from data.
	if m := regexp.MustCompile(`setAttribute\(\s*['"](href|src|on\w+|style)['"]`).FindString(js); m != "" {
		t.Errorf("app.js sets a dangerous attribute: %s", m)
	}
	html, _ := assets.ReadFile("assets/index.html")
	if regexp.MustCompile(`<script[^>]*>[^<\s]`).Match(html) || strings.Contains(string(html), " on") && regexp.MustCompile(`\son[a-z]+=`).Match(html) {
		t.Error("index.html has an inline script or event handler, which the Content-Security-Policy forbids")
	}
	if regexp.MustCompile(`(?i)(src|href)="(https?:)?//`).Match(html) {
		t.Error("index.html loads something from elsewhere")
	}
}
