package register

import (
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocNamesImports: doc.go said the package imports only backoff (of
// underlay's packages), while it imported termtext too. Every underlay
// package the package's code imports is named in doc.go's "It imports"
// sentence.
func TestDocNamesImports(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	_, claim, ok := strings.Cut(strings.ReplaceAll(string(doc), "\n// ", " "), "It imports ")
	if !ok {
		t.Fatal(`doc.go has no "It imports" sentence`)
	}
	claim, _, _ = strings.Cut(claim, ".")
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			if !strings.HasPrefix(p, "github.com/underlay/underlay/internal/") {
				continue
			}
			if !strings.Contains(claim, path.Base(p)) {
				t.Errorf("%s imports %s, which doc.go's %q does not name", name, p, "It imports "+claim)
			}
		}
	}
}
