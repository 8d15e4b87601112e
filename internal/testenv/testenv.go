// Package testenv gives integration tests the real programs they run
// against: the local dockerd, private Consul dev agents, macvlan networks on
// veth parents made for the test, and the underlay binary.
//
// Integration tests call Require first. When UNDERLAY_INTEGRATION=1 (set by
// scripts/test.sh, the README's test command) a missing daemon fails the
// test; without it the test is skipped, so `go test ./...` on a laptop runs
// the unit tests alone.
//
// It may import any package; it builds its Docker and Consul clients through
// dockerhost and consul like everything else.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/dockerhost"
)

// EnvIntegration is the variable that switches integration tests on.
const EnvIntegration = "UNDERLAY_INTEGRATION"

// TestImage is the image scripts/build.sh builds from test/testserver.
const TestImage = "underlay/testserver:dev"

// Require skips t unless integration tests were asked for.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvIntegration) != "1" {
		t.Skipf("integration test: run with %s=1 (scripts/test.sh does)", EnvIntegration)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s=1 but not root: integration tests create links and run containers", EnvIntegration)
	}
}

// Docker returns a client of the local dockerd, failing t when it does not answer.
func Docker(t testing.TB) *client.Client {
	t.Helper()
	c, err := dockerhost.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx); err != nil {
		t.Fatalf("dockerd is not answering (start it with scripts/start-docker.sh): %v", err)
	}
	if _, err := c.ImageInspect(ctx, TestImage); err != nil {
		t.Fatalf("test image %s missing (build it with scripts/build.sh): %v", TestImage, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ID returns a short random hex string for naming things a test creates.
func ID(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Context returns a context that ends with the test or after d.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// UnderlayBinary returns the underlay binary: $UNDERLAY_BIN when set (the
// test script builds it once), else one built into the test's temp dir.
func UnderlayBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("UNDERLAY_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("UNDERLAY_BIN: %v", err)
		}
		return p
	}
	return BuildProgram(t, "./cmd/underlay")
}

// RepoRoot is the repository's root: the nearest directory above the
// test's working directory (its package's, under go test) holding this
// module's go.mod. Not from runtime.Caller: under -trimpath (the scripts'
// builds) a source file's name is its module path, not where it lies.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatalf("finding the repository's root: %v", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && modulePath(b) == module {
			return d
		}
		if filepath.Dir(d) == d {
			tb.Fatalf("finding the repository's root: no go.mod of %s above %s", module, dir)
		}
	}
}

// module is this repository's module path.
const module = "github.com/underlay/underlay"

// modulePath is the module path a go.mod declares, "" if none.
func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// BuildProgram builds the module's main package pkg ("./test/x") into a
// temporary directory and returns the binary's path.
func BuildProgram(t testing.TB, pkg string) string {
	t.Helper()
	root := RepoRoot(t)
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// Eventually polls cond every interval until it returns true or timeout
// passes, then fails t with the last message cond gave.
func Eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var msg string
	for {
		var ok bool
		ok, msg = cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %s", timeout, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Subnets returns an IPv4 /24 and an IPv6 /64 for one test network, picked
// at random from ranges no lab or default Docker pool uses.
func Subnets(t testing.TB) (v4 string, v6 string, prefix4 string) {
	t.Helper()
	b := make([]byte, 2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	prefix4 = fmt.Sprintf("10.%d.%d.", 210+int(b[0])%40, b[1])
	return prefix4 + "0/24", fmt.Sprintf("fd00:%x:%x::/64", 210+int(b[0])%40, b[1]), prefix4
}

// HTTPGet reports whether url answers 200 within 2s, with the status or
// error otherwise; made for Eventually.
func HTTPGet(url string) (bool, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK, url + ": " + resp.Status
}
