package regularfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/testfile"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, st, err := Read(path, 4); err != nil || string(b) != "abc\n" || st.Size() != 4 {
		t.Errorf("Read of 4 bytes, max 4: %q, %v, %v; want its content", b, st, err)
	}
	if _, _, err := Read(path, 3); err == nil || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "abc") {
		t.Errorf("Read of 4 bytes, max 3: %v; want an error naming the file, not its content", err)
	}
	if _, _, err := Read(filepath.Join(dir, "none"), 4); !os.IsNotExist(err) {
		t.Errorf("Read of a missing file: %v; want os.IsNotExist", err)
	}
	if _, _, err := Read(dir, 4); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Read of a directory: %v; want it refused as not a regular file", err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Read(big, 256); err == nil || len(err.Error()) > 512 {
		t.Errorf("Read of 1 MiB, max 256: %.200v; want a short error", err)
	}
	fifo := filepath.Join(dir, "fifo")
	testfile.RefusesFIFO(t, "a file", fifo, func() error {
		_, _, err := Read(fifo, 4)
		return err
	})
}
