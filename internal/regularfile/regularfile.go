// Package regularfile reads the small files underlay keeps or is given
// (state records, secrets, TLS files) the one safe way. It imports only
// the standard library.
package regularfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Read returns the content of path, which must be a regular file of at
// most max bytes, and its FileInfo. It is opened non-blocking: opening a
// named pipe for reading would wait for a writer, and whoever reads it
// (an agent's start, a lock every TLS handshake takes) with it; a device,
// or a file larger than max, is not read whole. An error opening it is
// os.OpenFile's (os.IsNotExist tells a missing file). Its errors never
// carry the content.
func Read(path string, max int64) ([]byte, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s is not a regular file (%s)", path, st.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, st, nil
}
