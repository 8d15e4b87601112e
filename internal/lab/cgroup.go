package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// containerIDs lists the containers the lab's dockerds know, from their
// data roots: what is left of them in the cgroup tree after a kill.
func containerIDs(dir string) []string {
	paths, _ := filepath.Glob(filepath.Join(dir, "node*", "data", "containers", "*"))
	var ids []string
	for _, p := range paths {
		if id := filepath.Base(p); len(id) == 64 {
			ids = append(ids, id)
		}
	}
	return ids
}

// containerCgroups lists the cgroup directories of containers ids that
// exist: dockerd's cgroupfs layout (v1 and v2) and systemd's scopes.
func containerCgroups(ids []string) []string {
	var out []string
	for _, id := range ids {
		for _, pattern := range []string{
			"/sys/fs/cgroup/*/docker/" + id,
			"/sys/fs/cgroup/docker/" + id,
			"/sys/fs/cgroup/*/system.slice/docker-" + id + ".scope",
			"/sys/fs/cgroup/system.slice/docker-" + id + ".scope",
		} {
			m, _ := filepath.Glob(pattern)
			out = append(out, m...)
		}
	}
	return out
}

// removeCgroups removes the (emptied) cgroups of the lab's containers,
// which the killed runtimes could not remove themselves. A cgroup whose
// last task is still exiting is retried for a few seconds.
func removeCgroups(paths []string) error {
	var errs []error
	for _, p := range paths {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := syscall.Rmdir(p)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				break
			}
			if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				if _, serr := os.Stat(p); serr == nil {
					errs = append(errs, fmt.Errorf("remove cgroup %s: %w", p, err))
				}
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}
