package guest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNodeFilesStayInTheNodeDir: a VM node's directory is the guest's to
// write, and a guest.token it made a symbolic link out of the directory is
// followed neither by the host's reads nor by its writes. Before, the
// host read the file the link named (/etc/shadow) as the token and sent it
// to the guest with every request, and lab up wrote the token over it.
func TestNodeFilesStayInTheNodeDir(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(outside, []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteConfig(dir, Config{Host: "lab-node1"}, "tok"); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, TokenFile)
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	if _, tok, err := ReadConfig(dir); err == nil || strings.Contains(tok, "secret") {
		t.Errorf("ReadConfig through a link out of the node's directory: token %q, %v; want an error", tok, err)
	}
	if err := WriteConfig(dir, Config{Host: "lab-node1"}, "tok2"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(outside); string(b) != "host secret\n" {
		t.Errorf("WriteConfig wrote through the link: the host's file holds %q", b)
	}
	if _, tok, err := ReadConfig(dir); err != nil || tok != "tok2" {
		t.Errorf("after WriteConfig: token %q, %v; want tok2", tok, err)
	}
	// A directory made a link out: refused, nothing written there.
	if err := os.Symlink(filepath.Dir(outside), filepath.Join(dir, UnitsDir)); err != nil {
		t.Fatal(err)
	}
	if err := WriteNodeFile(dir, UnitsDir+"/x.service", []byte("[Unit]\n"), 0o644); err == nil {
		t.Error("WriteNodeFile wrote through a directory linked out of the node's directory")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(outside), "x.service")); err == nil {
		t.Error("a unit was written outside the node's directory")
	}
}
