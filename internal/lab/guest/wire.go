package guest

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Ops a Request may ask for.
const (
	OpPing    = "ping"
	OpExec    = "exec"
	OpStart   = "start"
	OpRunning = "running"
	OpKill    = "kill"
)

// Request is the first line a client sends, as JSON. For OpExec with Stdin,
// the rest of the connection up to the client's half-close is the command's
// standard input.
type Request struct {
	Token string `json:"token"`
	Op    string `json:"op"`
	// Key names a daemon (OpStart, OpRunning, OpKill): its program's base
	// name and first argument, "dockerd --host".
	Key string `json:"key,omitempty"`
	// Args is the command line (OpExec, OpStart); Env its whole environment.
	Args []string `json:"args,omitempty"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	// Log is the file a daemon's output is appended to (OpStart).
	Log   string `json:"log,omitempty"`
	Stdin bool   `json:"stdin,omitempty"`
}

// Result ends every answer.
type Result struct {
	// ExitCode of an exec'd command; -1 when it did not run to an exit.
	ExitCode int `json:"exit_code"`
	// PID of a daemon started or found running (guest PID).
	PID     int    `json:"pid,omitempty"`
	Running bool   `json:"running,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Frame kinds of the server's answer.
const (
	frameStdout byte = 1
	frameStderr byte = 2
	frameResult byte = 3
)

// maxFrame bounds a frame's payload; the writer splits larger writes.
const maxFrame = 1 << 20

// frameWriter writes frames of one kind; writers of several kinds share mu.
type frameWriter struct {
	mu   *sync.Mutex
	w    io.Writer
	kind byte
}

func (f frameWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for len(p) > 0 {
		chunk := p
		if len(chunk) > maxFrame {
			chunk = chunk[:maxFrame]
		}
		if err := writeFrame(f.w, f.kind, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

func writeFrame(w io.Writer, kind byte, payload []byte) error {
	var hdr [5]byte
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// readFrames copies stdout and stderr frames to their writers until the
// result frame, which it returns.
func readFrames(r io.Reader, stdout, stderr io.Writer) (Result, error) {
	br := bufio.NewReader(r)
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return Result{}, fmt.Errorf("read answer: %w", err)
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if n > maxFrame {
			return Result{}, fmt.Errorf("read answer: frame of %d bytes", n)
		}
		switch hdr[0] {
		case frameStdout, frameStderr:
			w := stdout
			if hdr[0] == frameStderr {
				w = stderr
			}
			if w == nil {
				w = io.Discard
			}
			if _, err := io.CopyN(w, br, int64(n)); err != nil {
				return Result{}, fmt.Errorf("read answer: %w", err)
			}
		case frameResult:
			b := make([]byte, n)
			if _, err := io.ReadFull(br, b); err != nil {
				return Result{}, fmt.Errorf("read answer: %w", err)
			}
			var res Result
			if err := json.Unmarshal(b, &res); err != nil {
				return Result{}, fmt.Errorf("read answer: %w", err)
			}
			return res, nil
		default:
			return Result{}, fmt.Errorf("read answer: unknown frame kind %d", hdr[0])
		}
	}
}

func writeResult(w io.Writer, mu *sync.Mutex, res Result) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	return writeFrame(w, frameResult, b)
}
