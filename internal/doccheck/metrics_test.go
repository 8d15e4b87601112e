package doccheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/underlay/underlay/deploy"
)

// TestDocsNameMetrics: nothing held the metrics the READMEs name to
// those the code defines, so a renamed series would leave operators
// graphing one that no longer exists. Each Prometheus series underlay's
// code defines is named in a markdown file, and each metric name a
// markdown file gives, of a namespace and subsystem the code uses, is one
// the code defines.
func TestDocsNameMetrics(t *testing.T) {
	metrics := codeMetrics(t)
	if len(metrics) < 30 {
		t.Fatalf("found %d metrics in the code; their Namespace, Subsystem and Name fields were not read", len(metrics))
	}
	prefixes := map[string]bool{}
	for m := range metrics {
		prefixes[metrics[m]] = true
	}
	// Names of the stack's Docker secrets share a metric's prefix.
	notMetrics := map[string]bool{
		deploy.SecretAgentConsulToken: true, deploy.SecretControlConsulToken: true,
		deploy.SecretControlTokens: true, deploy.SecretControlPeerSecret: true,
	}
	named := map[string]bool{}
	name := regexp.MustCompile(`underlay_[a-z0-9_]+`)
	docs := markdownFiles(t)
	for _, p := range slices.Sorted(maps.Keys(docs)) {
		for _, n := range name.FindAllString(docs[p], -1) {
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if s, ok := strings.CutSuffix(n, suffix); ok && metrics[s] != "" {
					n = s
				}
			}
			named[n] = true
			if metrics[n] == "" && !notMetrics[n] && slices.ContainsFunc(keys(prefixes), func(pre string) bool { return strings.HasPrefix(n, pre+"_") }) {
				t.Errorf("%s names %s, which the code does not define", p, n)
			}
		}
	}
	for m := range metrics {
		if !named[m] {
			t.Errorf("%s is named in no markdown file", m)
		}
	}
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// codeMetrics reads the non-test Go files of the repository for
// prometheus Opts literals (Namespace, Subsystem, Name: string literals,
// or constants of the same file) and returns each metric's full name with
// its namespace_subsystem.
func codeMetrics(t *testing.T) map[string]string {
	t.Helper()
	metrics := map[string]string{}
	err := filepath.WalkDir("../..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && p != "../.." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, 0)
		if err != nil {
			return err
		}
		consts := fileConsts(f)
		value := func(e ast.Expr) string {
			switch e := e.(type) {
			case *ast.BasicLit:
				s, _ := strconv.Unquote(e.Value)
				return s
			case *ast.Ident:
				return consts[e.Name]
			}
			return ""
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			fields := map[string]string{}
			for _, el := range lit.Elts {
				if kv, ok := el.(*ast.KeyValueExpr); ok {
					if k, ok := kv.Key.(*ast.Ident); ok {
						fields[k.Name] = value(kv.Value)
					}
				}
			}
			if fields["Namespace"] == "underlay" && fields["Name"] != "" {
				prefix := "underlay"
				if fields["Subsystem"] != "" {
					prefix += "_" + fields["Subsystem"]
				}
				metrics[prefix+"_"+fields["Name"]] = prefix
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return metrics
}

// fileConsts are the string constants f declares, at any level.
func fileConsts(f *ast.File) map[string]string {
	consts := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		d, ok := n.(*ast.GenDecl)
		if !ok || d.Tok != token.CONST {
			return true
		}
		for _, spec := range d.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i < len(vs.Values) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						consts[name.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
		}
		return true
	})
	return consts
}
