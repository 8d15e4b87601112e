package lab

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
)

// Labs are the labs whose state directories are under one root. The
// package-level functions work on the labs under DefaultStateRoot.
type Labs struct {
	// Root holds one directory per lab; empty means DefaultStateRoot.
	Root string
}

// At returns the labs under root.
func At(root string) Labs { return Labs{Root: root} }

func (l Labs) root() string {
	if l.Root == "" {
		return DefaultStateRoot
	}
	return l.Root
}

// Up makes the lab cfg describes under DefaultStateRoot, or repairs it (Labs.Up).
func Up(ctx context.Context, cfg Config, log *slog.Logger) error { return Labs{}.Up(ctx, cfg, log) }

// Down removes lab name under DefaultStateRoot (Labs.Down).
func Down(ctx context.Context, name string, log *slog.Logger) error {
	return Labs{}.Down(ctx, name, log)
}

// Leftovers lists what is left of lab name under DefaultStateRoot (Labs.Leftovers).
func Leftovers(name string) []string { return Labs{}.Leftovers(name) }

// GetStatus reports on lab name under DefaultStateRoot (Labs.GetStatus).
func GetStatus(ctx context.Context, name string) (*Status, error) {
	return Labs{}.GetStatus(ctx, name)
}

// RecordedConfig returns the config lab name under DefaultStateRoot was
// made with (Labs.RecordedConfig).
func RecordedConfig(name string) (Config, error) { return Labs{}.RecordedConfig(name) }

// Env returns how to reach node of lab name under DefaultStateRoot (Labs.Env).
func Env(name, node string) (*NodeEnv, error) { return Labs{}.Env(name, node) }

// Command returns a command running args inside node of lab name under
// DefaultStateRoot (Labs.Command).
func Command(ctx context.Context, name, node string, args ...string) (*exec.Cmd, error) {
	return Labs{}.Command(ctx, name, node, args...)
}

// LogPath returns the log file of a node's component (Labs.LogPath).
func LogPath(name, node, component string) (string, error) {
	return Labs{}.LogPath(name, node, component)
}

// OpenLog opens the log file of a node's component to read (Labs.OpenLog).
func OpenLog(name, node, component string) (*os.File, error) {
	return Labs{}.OpenLog(name, node, component)
}

// KillDockerd kills a node's dockerd as a crash would (Labs.KillDockerd).
func KillDockerd(name, node string) error { return Labs{}.KillDockerd(name, node) }

// Memory is the resident memory of lab name's nodes (Labs.Memory).
func Memory(name string) (int64, error) { return Labs{}.Memory(name) }

// SetLink plugs or pulls a VM node's NIC (Labs.SetLink).
func SetLink(ctx context.Context, name, node string, nic int, up bool) error {
	return Labs{}.SetLink(ctx, name, node, nic, up)
}
