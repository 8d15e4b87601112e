package hostnet

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestParentFile: records outlive the ParentFile (a fresh one on the same
// state directory reads them), are replaced by link, and the file goes
// with the last.
func TestParentFile(t *testing.T) {
	dir := t.TempDir()
	f := NewParentFile(dir)
	if all, err := f.List(); err != nil || len(all) != 0 {
		t.Fatalf("List of no file: %v, %v; want none", all, err)
	}
	pool := MadeParent{Link: "bond0.40", Lower: "bond0", VLAN: 40, Network: "pool"}
	web := MadeParent{Link: "eth1.7", Lower: "eth1", VLAN: 7, Network: "web"}
	for _, p := range []MadeParent{web, pool, pool} {
		if err := f.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	again := NewParentFile(dir)
	all, err := again.List()
	if d := cmp.Diff([]MadeParent{pool, web}, all); err != nil || d != "" {
		t.Errorf("List by a fresh ParentFile: %v (-want +got)\n%s", err, d)
	}
	if p, ok, err := again.Get("bond0.40"); !ok || err != nil || p != pool {
		t.Errorf("Get(bond0.40): %+v, %t, %v; want %+v", p, ok, err, pool)
	}
	if _, ok, err := again.Get("bond0.41"); ok || err != nil {
		t.Errorf("Get(bond0.41): %t, %v; want no record", ok, err)
	}
	for _, link := range []string{"bond0.40", "bond0.40", "eth1.7"} {
		if err := again.Remove(link); err != nil {
			t.Fatal(err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("state directory after the last record went: %v; want it empty", entries)
	}
	if err := f.Add(MadeParent{Link: "bond0.40", Lower: "bond1", VLAN: 40, Network: "pool"}); err == nil {
		t.Error("Add of a record whose lower device is not its link name's: no error")
	}
}

// TestParentFileCorrupt: a file that holds no record is an error naming
// it, wrapping ErrBadParentRecord, never a panic; Add and Remove leave it
// as it is, for the operator.
func TestParentFileCorrupt(t *testing.T) {
	for _, tc := range []struct{ name, content string }{
		{"truncated", `{"parents":[{"link":"bond0.40","lo`},
		{"not JSON", "bond0.40 bond0 40 pool\n"},
		{"a link its lower device and VLAN do not name", `{"parents":[{"link":"bond0.40","lower":"eth0","vlan":40,"network":"pool"}]}`},
		{"no network", `{"parents":[{"link":"bond0.40","lower":"bond0","vlan":40}]}`},
		{"a link twice", `{"parents":[{"link":"bond0.40","lower":"bond0","vlan":40,"network":"a"},{"link":"bond0.40","lower":"bond0","vlan":40,"network":"b"}]}`},
		{"trailing garbage", `{"parents":[]} x`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewParentFile(t.TempDir())
			if err := os.WriteFile(f.Path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := f.Get("bond0.40"); ok || !errors.Is(err, ErrBadParentRecord) || !strings.Contains(err.Error(), f.Path) {
				t.Errorf("Get: %t, %v; want an error naming %s, wrapping ErrBadParentRecord", ok, err, f.Path)
			}
			if err := f.Add(MadeParent{Link: "eth1.7", Lower: "eth1", VLAN: 7, Network: "web"}); !errors.Is(err, ErrBadParentRecord) {
				t.Errorf("Add: %v; want ErrBadParentRecord", err)
			}
			if err := f.Remove("bond0.40"); !errors.Is(err, ErrBadParentRecord) {
				t.Errorf("Remove: %v; want ErrBadParentRecord", err)
			}
			if b, _ := os.ReadFile(f.Path); string(b) != tc.content {
				t.Errorf("the file after Add and Remove: %q; want it left as it was", b)
			}
		})
	}
	t.Run("not a regular file", func(t *testing.T) {
		dir := t.TempDir()
		f := NewParentFile(dir)
		if err := os.Mkdir(filepath.Join(dir, ParentsFileName), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.Get("bond0.40"); err == nil || !strings.Contains(err.Error(), f.Path) {
			t.Errorf("Get: %v; want an error naming %s", err, f.Path)
		}
	})
}
