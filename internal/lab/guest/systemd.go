package guest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Systemd is the systemd binary Init execs on a systemd node.
const Systemd = "/lib/systemd/systemd"

// ServerUnit names the control server's unit on a systemd node.
const ServerUnit = "ul-lab-guest.service"

// unitDir is where a node's units and masks go (the overlay's /etc).
const unitDir = "/etc/systemd/system"

// UnitsDir, in the node's directory, holds units the lab wants started at
// boot: Init installs and enables them (multi-user.target) before systemd
// starts.
const UnitsDir = "units"

// maskedMarker records that the host's units were masked (on a node's
// first boot; later, the units a package enabled must stay).
const maskedMarker = "/var/lib/underlay-lab/host-units-masked"

// keepUnits are units enabled on the host that a node runs too (the lab
// overrides docker.service with its own dockerd).
var keepUnits = map[string]bool{"docker.service": true}

// alwaysMasked are units a node never runs: the serial getty systemd
// would start on the console, and the host's Docker socket and containerd,
// which the lab's dockerd (with its own containerd) replaces.
var alwaysMasked = []string{"serial-getty@ttyS0.service", "docker.socket", "containerd.service"}

// execSystemd writes the control server's unit (serve is its command
// line), on the first boot masks the units the host enabled, and execs
// systemd as PID 1. It returns only on failure.
func execSystemd(nodeDir string, serve []string, logf func(string, ...any)) error {
	if err := os.MkdirAll(filepath.Join(unitDir, "sysinit.target.wants"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(unitDir, ServerUnit), []byte(serverUnit(serve)), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", ServerUnit, err)
	}
	link := filepath.Join(unitDir, "sysinit.target.wants", ServerUnit)
	os.Remove(link)
	if err := os.Symlink("../"+ServerUnit, link); err != nil {
		return fmt.Errorf("enable %s: %w", ServerUnit, err)
	}
	// Masks first: the lab's units are enabled in the same directories.
	if _, err := os.Stat(maskedMarker); err != nil {
		wants, _ := filepath.Glob(filepath.Join(unitDir, "*.wants", "*"))
		masks := HostUnitsToMask(wants)
		for _, u := range masks {
			p := filepath.Join(unitDir, u)
			os.Remove(p)
			if err := os.Symlink("/dev/null", p); err != nil {
				return fmt.Errorf("mask %s: %w", u, err)
			}
		}
		logf("masked the host's units: %s", strings.Join(masks, " "))
		os.MkdirAll(filepath.Dir(maskedMarker), 0o755)
		if err := os.WriteFile(maskedMarker, nil, 0o644); err != nil {
			return err
		}
	}
	if err := installUnits(filepath.Join(nodeDir, UnitsDir)); err != nil {
		return err
	}
	return syscall.Exec(Systemd, []string{Systemd}, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
}

// installUnits copies the units in dir into unitDir and enables them
// (multi-user.target), replacing a unit of the same name the host enabled.
func installUnits(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	wants := filepath.Join(unitDir, "multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		path := filepath.Join(unitDir, e.Name())
		os.Remove(path) // never write through a mask's link to /dev/null
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return fmt.Errorf("install %s: %w", e.Name(), err)
		}
		link := filepath.Join(wants, e.Name())
		os.Remove(link)
		if err := os.Symlink("../"+e.Name(), link); err != nil {
			return fmt.Errorf("enable %s: %w", e.Name(), err)
		}
	}
	return nil
}

// HostUnitsToMask picks, from the host's enablement links (paths under
// *.wants directories), the services, sockets and timers a node must not
// run: all but keepUnits and the control server, plus alwaysMasked.
func HostUnitsToMask(wants []string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(u string) {
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	for _, w := range wants {
		u := filepath.Base(w)
		switch filepath.Ext(u) {
		case ".service", ".socket", ".timer", ".path":
			if !keepUnits[u] && u != ServerUnit {
				add(u)
			}
		}
	}
	for _, u := range alwaysMasked {
		add(u)
	}
	return out
}

// serverUnit is the control server's unit: started early (the node's
// network and the node directory are up before systemd), restarted when
// it dies.
func serverUnit(serve []string) string {
	return `# Written by underlay's VM init at every boot.
[Unit]
Description=underlay lab: the node's control server
DefaultDependencies=no
Conflicts=shutdown.target
Before=shutdown.target

[Service]
ExecStart=` + ExecLine(serve) + `
Restart=always
RestartSec=1s

[Install]
WantedBy=sysinit.target
`
}

// ExecLine is args as an ExecStart= value: arguments quoted where they
// need it, systemd's specifiers (%) and variables ($) escaped.
func ExecLine(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = a
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\%$;") {
			q[i] = quote(a, true)
		}
	}
	return strings.Join(q, " ")
}

// EnvLine is an Environment= value setting k to v.
func EnvLine(k, v string) string { return quote(k+"="+v, false) }

// quote double-quotes s for a unit file, escaping % (and $ in ExecStart=,
// the only setting that expands variables).
func quote(s string, exec bool) string {
	pairs := []string{`\`, `\\`, `"`, `\"`, "%", "%%", "\n", `\n`}
	if exec {
		pairs = append(pairs, "$", "$$")
	}
	return `"` + strings.NewReplacer(pairs...).Replace(s) + `"`
}
