package scale

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestRefusedReasonsDocumented: every reason the API counts in
// underlay_scale_http_refused_total is in the README's row of that
// metric. busy_client (a client past --max-event-readers-per-client) was
// counted and not listed, so no one would alert on it.
func TestRefusedReasonsDocumented(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for line := range strings.Lines(string(readme)) {
		if strings.HasPrefix(line, "| `underlay_scale_http_refused_total{reason}` |") {
			row = line
		}
	}
	if row == "" {
		t.Fatal("README.md has no row for underlay_scale_http_refused_total{reason}")
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	refuse := regexp.MustCompile(`\.refuse\("([a-z_]+)"\)`)
	found := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range refuse.FindAllStringSubmatch(string(src), -1) {
			found++
			if !strings.Contains(row, "`"+m[1]+"`") {
				t.Errorf("%s counts refusals as %q, which README.md's underlay_scale_http_refused_total row does not list", f, m[1])
			}
		}
	}
	if found < 10 {
		t.Fatalf("found %d refuse(\"…\") calls; the pattern no longer matches the code", found)
	}
}
