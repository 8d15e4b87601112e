package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Artifacts is where a test keeps what it leaves for a human to look at
// (screenshots, the full agent logs of a failed lab test):
// $UNDERLAY_ARTIFACTS, or test-artifacts/ at the repository's root, then
// the test's name.
func Artifacts(tb testing.TB) string {
	tb.Helper()
	root := os.Getenv("UNDERLAY_ARTIFACTS")
	if root == "" {
		root = filepath.Join(RepoRoot(tb), "test-artifacts")
	}
	dir := filepath.Join(root, strings.ReplaceAll(tb.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}
