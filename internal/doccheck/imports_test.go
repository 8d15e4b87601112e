package doccheck

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/underlay/underlay/"

// TestDocNamesImports: doc.go files said their package imports only some
// of underlay's packages (netspec: kvstore; register: backoff; dashboard,
// scale), while the code imported others too. In every package whose
// doc.go has an "It imports" sentence, each underlay package its code
// (tests aside) imports is named in that sentence.
func TestDocNamesImports(t *testing.T) {
	checked := 0
	err := filepath.WalkDir("..", func(dir string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		doc, err := os.ReadFile(filepath.Join(dir, "doc.go"))
		if os.IsNotExist(err) {
			return nil
		} else if err != nil {
			return err
		}
		text := strings.ReplaceAll(string(doc), "\n//", "")
		_, claim, ok := strings.Cut(text, "It imports ")
		if !ok {
			return nil
		}
		claim, _, _ = strings.Cut(claim, ". ")
		claim, _, _ = strings.Cut(claim, ".\n")
		checked++
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			return err
		}
		fset := token.NewFileSet()
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			for _, imp := range f.Imports {
				p := strings.Trim(imp.Path.Value, `"`)
				if !strings.HasPrefix(p, module) {
					continue
				}
				rel := strings.TrimPrefix(strings.TrimPrefix(p, module), "internal/")
				if !strings.Contains(claim, path.Base(p)) && !strings.Contains(claim, rel) {
					t.Errorf("%s imports %s, which %s's %q does not name", name, p, filepath.Join(dir, "doc.go"), "It imports "+strings.TrimSpace(claim))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 5 {
		t.Fatalf("checked the imports of %d packages; the doc.go files' \"It imports\" sentences were not found", checked)
	}
}
