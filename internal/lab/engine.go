package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// EnginesRoot holds the Docker engines that scripts/build-engines.sh builds,
// one directory per release line, each with a bin/ of dockerd and what it
// needs (containerd and runc for 29).
const EnginesRoot = "/opt/underlay/engines"

// EnvEngine names the Docker engine labs and tests run when no engine is
// given: 20.10 (Debian's docker.io, the machine's PATH), 28 or 29.
const EnvEngine = "UNDERLAY_DOCKERD"

// Engines are the release lines a lab can run.
var Engines = []string{"20.10", "28", "29"}

// DefaultEngine is $UNDERLAY_DOCKERD, or "" (the dockerd on PATH).
func DefaultEngine() string { return os.Getenv(EnvEngine) }

// EngineBinDir returns the directory to put first on PATH so that the
// node's dockerd is the engine of release line line; "" for the PATH's own
// (line "" or "20.10", Debian's docker.io).
func EngineBinDir(line string) (string, error) {
	switch line {
	case "", "20.10":
		return "", nil
	case "28", "29":
		dir := filepath.Join(EnginesRoot, line, "bin")
		if _, err := os.Stat(filepath.Join(dir, "dockerd")); err != nil {
			return "", fmt.Errorf("docker engine %s is not built (run scripts/build-engines.sh %s): %w", line, line, err)
		}
		return dir, nil
	}
	return "", fmt.Errorf("docker engine %q: want one of 20.10, 28, 29", line)
}

// withPath returns env with dir put first on its PATH (env unchanged when
// dir is empty).
func withPath(env []string, dir string) []string {
	if dir == "" {
		return env
	}
	out := make([]string, 0, len(env)+1)
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
			continue
		}
		out = append(out, kv)
	}
	return append(out, "PATH="+dir+string(os.PathListSeparator)+path)
}
