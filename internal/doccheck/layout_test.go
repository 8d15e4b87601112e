package doccheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMELayout: README.md's Layout left out seven packages under
// internal/ (regularfile, shellword, termtext and four test helpers) and
// test/floorregistrar. It names every package directly under internal/
// and test/, and each path it names exists.
func TestREADMELayout(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, layout, ok := strings.Cut(string(b), "\n## Layout\n")
	if !ok {
		t.Fatal("README.md: no Layout section")
	}
	layout, _, _ = strings.Cut(strings.TrimPrefix(strings.TrimSpace(layout), "```\n"), "```")
	named := map[string]bool{}
	for line := range strings.Lines(layout) {
		path, _, _ := strings.Cut(line, " ")
		path = strings.TrimSuffix(path, "/")
		named[path] = true
		if _, err := os.Stat(filepath.Join("../..", path)); err != nil {
			t.Errorf("README.md's Layout names %s: %v", path, err)
		}
	}
	for _, dir := range []string{"internal", "test"} {
		entries, err := os.ReadDir(filepath.Join("../..", dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			p := dir + "/" + e.Name()
			if goFiles, _ := filepath.Glob(filepath.Join("../..", p, "*.go")); e.IsDir() && len(goFiles) > 0 && !named[p] {
				t.Errorf("README.md's Layout does not name %s", p)
			}
		}
	}
}
