package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRepoRootFindsTheModule(t *testing.T) {
	root := RepoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if got := modulePath(b); got != module {
		t.Fatalf("RepoRoot %s holds the go.mod of %q, want %q", root, got, module)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "testenv")); err != nil {
		t.Fatalf("RepoRoot %s is not this repository's root: %v", root, err)
	}
}

func TestModulePath(t *testing.T) {
	for in, want := range map[string]string{
		"module github.com/underlay/underlay\n\ngo 1.26\n": module,
		"// a comment\nmodule \"example.com/x\"\n":         "example.com/x",
		"go 1.26\n": "",
		"module\n":  "",
	} {
		if got := modulePath([]byte(in)); got != want {
			t.Errorf("modulePath(%q) = %q, want %q", in, got, want)
		}
	}
}
