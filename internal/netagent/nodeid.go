package netagent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/regularfile"
	"github.com/underlay/underlay/internal/termtext"
)

// NodeIDFile is the file, in the agent's state directory, holding the
// identity (swarm node ID) it last learnt from Docker. At boot dockerd
// asks the IPAM plugin for addresses while it restores containers and
// answers no API call until it has restored them: an agent that asked
// Docker for its identity before serving the plugin would wait for a
// dockerd that waits for it (dockerd gives up after about 20 s and leaves
// the containers down).
const NodeIDFile = "node-id"

// AskDockerFor is how long ResolveID waits for Docker's answer before it
// falls back on the recorded identity.
const AskDockerFor = time.Second

// ResolveID returns this node's identity. It asks Docker (ask returns the
// swarm node ID, "" outside a swarm), for at most wait each time (30 times
// that without a record); Docker's answer wins and is recorded in dir. An
// answer that is no swarm node ID is an error naming it.
// When Docker does not answer — in time, or at all — and dir holds a
// recorded identity, that one is returned (recorded true): the caller must
// check it against Docker once Docker answers, and stop if it differs.
// Without a record it asks again until Docker answers or ctx ends. dir ""
// records nothing.
func ResolveID(ctx context.Context, ask func(context.Context) (string, error), dir string, wait time.Duration, log *slog.Logger) (id string, recorded bool, err error) {
	delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 15 * time.Second}
	for {
		rec := ""
		var rerr error // the record refused, if it was
		if dir != "" {
			if rec, rerr = readNodeID(dir); rerr != nil {
				log.Warn("ignoring the recorded identity", "err", rerr)
			}
		}
		// Without a record there is nothing to fall back on, and a slow
		// dockerd (a TCG guest's took over a second) is no failed one:
		// wait far longer for its answer before asking again.
		w := wait
		if rec == "" {
			w = noRecordWaits * wait
		}
		id, err := askFor(ctx, ask, w)
		switch {
		case ctx.Err() != nil:
			return "", false, fmt.Errorf("waiting for this node's swarm node ID: %w", ctx.Err())
		case err == nil && id != "" && netspec.CheckNodeID(id) != nil:
			// Docker answered, so the record is no better; the identity
			// is a segment of every key the node writes, which readers
			// refuse unless it is a swarm node ID.
			return "", false, fmt.Errorf("Docker gave this node's swarm node ID as %s: not a swarm node ID: %v", termtext.Q(id), netspec.CheckNodeID(id))
		case err == nil && id != "":
			if dir != "" {
				if rerr != nil {
					// Said once more as it goes: the record is replaced.
					log.Warn("replacing the recorded identity, which is no swarm node ID, with Docker's",
						"file", filepath.Join(dir, NodeIDFile), "node_id", id, "err", rerr)
				}
				if err := recordNodeID(dir, id); err != nil {
					log.Warn("cannot record this node's identity; at boot the IPAM plugin will wait for Docker", "err", err)
				}
			}
			return id, false, nil
		}
		answered := err == nil // Docker answered: the node is in no swarm
		if answered {
			err = fmt.Errorf("the node is in no swarm (cluster networks need it in one)")
		}
		// Docker 20.10 accepts the connection and blocks while it restores
		// containers (a timeout); 29 refuses it until it has (an error).
		if !answered && rec != "" {
			log.Warn("Docker does not answer (restoring containers at boot?); serving as the identity recorded at the last start until it does",
				"node_id", rec, "file", filepath.Join(dir, NodeIDFile), "err", err)
			return rec, true, nil
		}
		delay := delays.Next()
		log.Warn("waiting for this node's swarm node ID", "err", err, "retry_in", delay)
		backoff.Sleep(ctx, delay)
	}
}

// noRecordWaits is how many times ResolveID's wait it gives Docker to
// answer when it has no recorded identity to fall back on.
const noRecordWaits = 30

// readNodeID returns the recorded identity, "" when none is.
func readNodeID(dir string) (string, error) {
	path := filepath.Join(dir, NodeIDFile)
	// Not a named pipe, which would hold the agent's start (the IPAM
	// plugin's too) waiting for a writer; an ID and its newline are far
	// shorter than the bound: a longer record is none.
	b, _, err := regularfile.Read(path, maxNodeIDRecord)
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("not a node ID record: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if err := netspec.CheckNodeID(id); err != nil {
		return "", fmt.Errorf("%s holds %s, not a swarm node ID: %w", path, termtext.Q(id), err)
	}
	return id, nil
}

// maxNodeIDRecord is the most of a node ID record read: an ID (25 bytes)
// with room for white space around it.
const maxNodeIDRecord = 256

// recordNodeID writes id to dir's record, atomically, if it changed.
func recordNodeID(dir, id string) error {
	if err := netspec.CheckNodeID(id); err != nil {
		return fmt.Errorf("record node ID %s in %s: not a swarm node ID: %w", termtext.Q(id), filepath.Join(dir, NodeIDFile), err)
	}
	if cur, err := readNodeID(dir); err == nil && cur == id {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("record node ID: %w", err)
	}
	tmp, err := os.CreateTemp(dir, NodeIDFile+".*")
	if err != nil {
		return fmt.Errorf("record node ID: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(id + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("record node ID: %w", err)
	}
	// On disk before it is renamed into place: a power loss right after
	// could otherwise leave the record empty (the data not written back
	// yet), and at boot the IPAM plugin would wait for a dockerd that
	// waits for it (see NodeIDFile).
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("record node ID: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("record node ID: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, NodeIDFile)); err != nil {
		return fmt.Errorf("record node ID: %w", err)
	}
	// The rename itself on disk too: lost, the next boot would fall back
	// on the identity recorded before, or on none.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("record node ID: %w", err)
	}
	return nil
}

// askFor calls ask, waiting at most wait for its answer: Docker's client
// does not always give up at the context's deadline (its version
// negotiation, against a dockerd 20.10 that accepts and blocks at boot,
// waited 20 s), so a late answer is left to its goroutine.
func askFor(ctx context.Context, ask func(context.Context) (string, error), wait time.Duration) (string, error) {
	actx, cancel := context.WithTimeout(ctx, wait)
	type answer struct {
		id  string
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		defer cancel()
		id, err := ask(actx)
		ch <- answer{id, err}
	}()
	select {
	case a := <-ch:
		return a.id, a.err
	case <-actx.Done():
		// The goroutine cancels actx once it has answered: both cases can
		// be ready, and select picks either.
		select {
		case a := <-ch:
			return a.id, a.err
		default:
		}
		return "", fmt.Errorf("Docker did not answer within %s", wait)
	}
}
