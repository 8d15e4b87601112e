package app

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/lab/guest"
)

// TestVMExecGoesToThePlannedAddress: vm-exec sends the command, its
// environment and the node's token to the address the lab's plan gives,
// never to the one in the node's directory, which the VM can rewrite.
// Before, it read the address from guest.json (and had no --addr).
func TestVMExecGoesToThePlannedAddress(t *testing.T) {
	dir := t.TempDir()
	// What a VM could write: its control server at another address.
	written := guest.Config{Address: netip.MustParsePrefix("127.0.0.2/8")}
	if err := guest.WriteConfig(dir, written, "secret"); err != nil {
		t.Fatal(err)
	}
	planned, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer planned.Close()
	reached := make(chan string, 1)
	go func() {
		c, err := planned.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 4096)
		n, _ := c.Read(b)
		reached <- string(b[:n])
	}()

	run := func(args ...string) error {
		var out bytes.Buffer
		streams := IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &out}
		for _, c := range newLabVMCommands(&globalFlags{}, streams) {
			if strings.HasPrefix(c.Use, "vm-exec ") {
				c.SetArgs(args)
				c.SetOut(&out)
				c.SetErr(&out)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return c.ExecuteContext(ctx)
			}
		}
		t.Fatal("no vm-exec command")
		return nil
	}
	run("--node-dir", dir, "--addr", planned.Addr().String(), "--", "true")
	select {
	case req := <-reached:
		if !strings.Contains(req, "secret") {
			t.Errorf("the planned address got %q, want the request with the node's token", req)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("vm-exec never reached the address the lab's plan gives")
	}
	if err := run("--node-dir", dir, "--addr", "127.0.0.2", "--", "true"); err == nil || !strings.Contains(err.Error(), `"127.0.0.2"`) {
		t.Errorf("--addr with no port: %v, want an error naming it", err)
	}
}
