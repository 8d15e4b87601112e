package doccheck

import (
	"bufio"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// TestDocsLinksResolve: a markdown file's relative links name files that
// exist, and their #anchors headings of the file they point into, as
// GitHub makes anchors of headings.
func TestDocsLinksResolve(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	anchors := map[string]map[string]bool{}
	anchorsOf := func(file string) map[string]bool {
		if a, ok := anchors[file]; ok {
			return a
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		a := headingAnchors(string(b))
		anchors[file] = a
		return a
	}
	checked := 0
	docs := markdownFiles(t)
	for _, p := range slices.Sorted(maps.Keys(docs)) {
		for _, m := range link.FindAllStringSubmatch(outsideCode(docs[p]), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			file, anchor, _ := strings.Cut(target, "#")
			if file == "" {
				file = p
			} else {
				file = filepath.Join(filepath.Dir(p), file)
			}
			if _, err := os.Stat(file); err != nil {
				t.Errorf("%s: link %s: %v", p, target, err)
				continue
			}
			if anchor != "" && strings.HasSuffix(file, ".md") && !anchorsOf(file)[anchor] {
				t.Errorf("%s: link %s: %s has no heading of anchor #%s", p, target, file, anchor)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked %d links", checked)
	}
}

// markdownFiles reads every markdown file of the repository (but under
// dot directories): its text by path, from this package's directory.
func markdownFiles(t *testing.T) map[string]string {
	t.Helper()
	docs := map[string]string{}
	err := filepath.WalkDir("../..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && p != "../.." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".md") {
			return nil
		}
		b, err := os.ReadFile(p)
		docs[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatalf("reading the markdown files: %v", err)
	}
	return docs
}

// outsideCode is text with its fenced code blocks blanked.
func outsideCode(text string) string {
	var b strings.Builder
	in := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			in = !in
			continue
		}
		if !in {
			b.WriteString(line)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// headingAnchors are the anchors GitHub gives the headings of a markdown
// text: lowercased, punctuation but - and _ dropped, spaces made -, and
// -1, -2… after a repeated one.
func headingAnchors(text string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	for line := range strings.Lines(outsideCode(text)) {
		line = strings.TrimSpace(line)
		title, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " ")
		if !ok || !strings.HasPrefix(line, "#") || len(line)-len(strings.TrimLeft(line, "#")) > 6 {
			continue
		}
		var slug strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				slug.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				slug.WriteRune(r)
			}
		}
		s := slug.String()
		if n := seen[s]; n > 0 {
			anchors[s+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[s] = true
		}
		seen[s]++
	}
	return anchors
}
