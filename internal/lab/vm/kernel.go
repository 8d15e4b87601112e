package vm

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// DefaultCacheDir keeps the extracted kernel and the initramfs between labs.
const DefaultCacheDir = "/var/cache/underlay/vm"

// Busybox is busybox-static's binary; the initramfs runs it.
const Busybox = "/bin/busybox"

// InitrdModules are loaded by the initramfs (with their dependencies):
// virtio NICs, the 9p root and the overlay over it.
var InitrdModules = []string{"virtio_pci", "virtio_net", "9pnet_virtio", "9p", "overlay"}

// DiskModules are loaded by the initramfs (with their dependencies not in
// InitrdModules) when the VM has a disk (ul.disk=DEVICE): virtio disks and
// ext4 (crc32c for its checksums).
var DiskModules = []string{"virtio_blk", "crc32c_generic", "ext4"}

// Boot is what a VM node boots.
type Boot struct {
	// Version is the kernel release (uname -r) in the guest.
	Version string
	Kernel  string // vmlinux, or the bzImage when it could not be extracted
	Initrd  string
}

// Kernel is an installed kernel with its modules.
type Kernel struct {
	Version string
	Image   string // /boot/vmlinuz-<version>
	Modules string // /lib/modules/<version>
}

// FindKernel returns the newest kernel in /boot whose modules are
// installed (Debian's linux-image-amd64 puts both there).
func FindKernel() (Kernel, error) {
	images, _ := filepath.Glob("/boot/vmlinuz-*")
	var ks []Kernel
	for _, img := range images {
		v := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		mod := filepath.Join("/lib/modules", v)
		if _, err := os.Stat(filepath.Join(mod, "modules.dep")); err == nil {
			ks = append(ks, Kernel{Version: v, Image: img, Modules: mod})
		}
	}
	if len(ks) == 0 {
		return Kernel{}, errors.New("no kernel with modules in /boot and /lib/modules (install linux-image-amd64 with scripts/install-deps.sh)")
	}
	sort.Slice(ks, func(i, j int) bool { return versionLess(ks[i].Version, ks[j].Version) })
	return ks[len(ks)-1], nil
}

// versionLess compares kernel releases numerically field by field
// (6.1.0-9 < 6.1.0-10).
func versionLess(a, b string) bool {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' })
	}
	fa, fb := split(a), split(b)
	for i := 0; i < len(fa) && i < len(fb); i++ {
		if fa[i] == fb[i] {
			continue
		}
		var na, nb int
		_, ea := fmt.Sscanf(fa[i], "%d", &na)
		_, eb := fmt.Sscanf(fb[i], "%d", &nb)
		if ea == nil && eb == nil && na != nb {
			return na < nb
		}
		return fa[i] < fb[i]
	}
	return len(fa) < len(fb)
}

// Prepare returns the newest kernel's vmlinux and an initramfs for it,
// made once and kept in cacheDir (written to a temporary name and renamed,
// so concurrent labs never see half a file).
func Prepare(ctx context.Context, cacheDir string) (Boot, error) {
	k, err := FindKernel()
	if err != nil {
		return Boot{}, err
	}
	dir := filepath.Join(cacheDir, k.Version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Boot{}, fmt.Errorf("make %s: %w", dir, err)
	}
	b := Boot{Version: k.Version}
	if b.Kernel, err = vmlinux(ctx, k, dir); err != nil {
		return Boot{}, err
	}
	if b.Initrd, err = initramfs(k, dir); err != nil {
		return Boot{}, err
	}
	return b, nil
}

// vmlinux extracts the ELF kernel from the bzImage (Debian compresses it
// with xz), or returns the bzImage itself when that is not possible.
func vmlinux(ctx context.Context, k Kernel, dir string) (string, error) {
	out := filepath.Join(dir, "vmlinux")
	if isELF(out) {
		return out, nil
	}
	img, err := os.ReadFile(k.Image)
	if err != nil {
		return "", fmt.Errorf("read kernel: %w", err)
	}
	off := bytes.Index(img, []byte("\xfd7zXZ\x00"))
	if off < 0 {
		return k.Image, nil
	}
	tmp := out + fmt.Sprintf(".tmp%d", os.Getpid())
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "xz", "-dc", "--single-stream")
	cmd.Stdin, cmd.Stdout = bytes.NewReader(img[off:]), f
	// xz complains about the bytes after the stream; the stream is whole.
	cmd.Run()
	f.Close()
	if !isELF(tmp) {
		os.Remove(tmp)
		return k.Image, nil
	}
	return out, os.Rename(tmp, out)
}

func isELF(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// initScript is the initramfs's /init: load the modules, mount the host's
// root (9p tag hostroot) read-only under a tmpfs overlay, and switch to it,
// running ul.init (the underlay binary) as PID 1 for node ul.dir.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /lower /upper /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for a in $(cat /proc/cmdline); do
  case "$a" in
    ul.init=*) init="${a#ul.init=}" ;;
    ul.dir=*) dir="${a#ul.dir=}" ;;
    ul.disk=*) disk="${a#ul.disk=}" ;;
  esac
done
for m in $(cat /modules); do insmod "/lib/modules/$m" || echo "initramfs: insmod $m failed"; done
fail() { echo "initramfs: $*"; exec sh; }
# cache=loose: the guest keeps the host's files it read (pages, names)
# instead of fetching them over 9p again at each use: every container
# start execs runc, the shim and dockerd again (a 3-node lab came up in
# 48-59 s instead of 60-90 s). A host file changed in place after the
# guest read it may be seen as it was; the lab changes none (node
# directories are their own mount, binaries are copied to content-named
# paths).
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /lower || fail "mount the host's root"
if [ -n "$disk" ]; then
  # A disk (ext4) holds the overlay's upper layer and Docker's state: what
  # the node writes survives a reboot, as on a host.
  for m in $(cat /disk-modules); do insmod "/lib/modules/$m" || echo "initramfs: insmod $m failed"; done
  i=0; while [ ! -b "$disk" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  mount -t ext4 "$disk" /upper || fail "mount the disk $disk"
else
  mount -t tmpfs -o mode=0755 upper /upper || fail "mount the overlay's tmpfs"
fi
mkdir -p /upper/u /upper/w
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /newroot || fail "mount the overlay"
if [ -n "$disk" ]; then
  # overlay2 and containerd cannot work on an overlay: their state is on
  # the disk itself.
  for d in docker containerd; do
    mkdir -p "/upper/$d" "/newroot/var/lib/$d"
    mount -o bind "/upper/$d" "/newroot/var/lib/$d" || fail "bind /var/lib/$d"
  done
fi
[ -x "/newroot$init" ] || fail "ul.init=$init is not an executable on the host"
umount /proc /sys /dev
exec switch_root /newroot "$init" lab vm-init --node-dir "$dir"
`

// initramfs builds (or finds in dir) the initramfs for kernel k.
func initramfs(k Kernel, dir string) (string, error) {
	if err := staticBinary(Busybox); err != nil {
		return "", err
	}
	mods, err := moduleOrder(k.Modules, InitrdModules)
	if err != nil {
		return "", err
	}
	all, err := moduleOrder(k.Modules, append(slices.Clone(InitrdModules), DiskModules...))
	if err != nil {
		return "", err
	}
	diskMods := slices.DeleteFunc(all, func(m string) bool { return slices.Contains(mods, m) })
	st, err := os.Stat(Busybox)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%d %d\n%s\n%s\n", k.Version, initScript, st.Size(), st.ModTime().UnixNano(), strings.Join(mods, " "), strings.Join(diskMods, " "))
	out := filepath.Join(dir, "initramfs-"+hex.EncodeToString(h.Sum(nil))[:12]+".cpio.gz")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	tmp := out + fmt.Sprintf(".tmp%d", os.Getpid())
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp)
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	cw := &cpioWriter{w: zw}
	for _, d := range []string{"bin", "lib", "lib/modules"} {
		cw.Dir(d)
	}
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return "", err
	}
	cw.File("bin/busybox", 0o755, bb)
	cw.Symlink("bin/sh", "busybox")
	cw.File("init", 0o755, []byte(initScript))
	for list, ms := range map[string][]string{"modules": mods, "disk-modules": diskMods} {
		var names []string
		for _, m := range ms {
			b, err := os.ReadFile(filepath.Join(k.Modules, m))
			if err != nil {
				return "", fmt.Errorf("read module: %w", err)
			}
			name := filepath.Base(m)
			cw.File("lib/modules/"+name, 0o644, b)
			names = append(names, name)
		}
		cw.File(list, 0o644, []byte(strings.Join(names, "\n")+"\n"))
	}
	if err := cw.Close(); err != nil {
		return "", fmt.Errorf("write initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("write initramfs: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return out, os.Rename(tmp, out)
}

// staticBinary checks that path is a statically linked executable: the
// initramfs has no libraries. (Debian's non-static busybox package
// installs the same path.)
func staticBinary(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w (install busybox-static with scripts/install-deps.sh)", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the initramfs needs busybox-static (scripts/install-deps.sh)", path)
		}
	}
	return nil
}

// moduleOrder returns the module files (relative to modDir) that loading
// want needs, each after its dependencies, from modDir's modules.dep.
func moduleOrder(modDir string, want []string) ([]string, error) {
	f, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("modules of the VM kernel: %w", err)
	}
	defer f.Close()
	deps, err := parseModulesDep(f)
	if err != nil {
		return nil, err
	}
	return resolveModules(deps, want)
}

// parseModulesDep reads modules.dep: "path.ko: dep.ko dep2.ko".
func parseModulesDep(r io.Reader) (map[string][]string, error) {
	deps := map[string][]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
	}
	return deps, sc.Err()
}

// moduleName is a module's name as modprobe knows it: the file's base
// name without .ko (and compression suffix), '-' read as '_'.
func moduleName(path string) string {
	base := filepath.Base(path)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// resolveModules orders want and their dependencies so that each comes
// after everything it depends on. modules.dep lists a module's full
// dependency closure; the order among them is recomputed here.
func resolveModules(deps map[string][]string, want []string) ([]string, error) {
	byName := map[string]string{}
	for p := range deps {
		byName[moduleName(p)] = p
	}
	var out []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(p string) error
	visit = func(p string) error {
		switch state[p] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", p)
		case 2:
			return nil
		}
		state[p] = 1
		ds := slices.Clone(deps[p])
		slices.Sort(ds)
		for _, d := range ds {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[p] = 2
		out = append(out, p)
		return nil
	}
	for _, w := range want {
		p, ok := byName[moduleName(w)]
		if !ok {
			return nil, fmt.Errorf("module %s not in the VM kernel's modules.dep", w)
		}
		if err := visit(p); err != nil {
			return nil, err
		}
	}
	return out, nil
}
