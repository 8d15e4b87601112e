package netagent

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/netspec"
)

// TestErrorsQuoteToShow: errors naming what Docker, a spec or a file in
// the state directory gave (a node ID, a link owner, an IPAM mode, a VLAN
// parent) quote it with what would not show escaped: %q left U+3164 as it
// is, and "id\u3164" read "id". A Graphic value prints as %q printed it.
func TestErrorsQuoteToShow(t *testing.T) {
	const f = "\u3164"
	ctx := context.Background()
	_, _, dockerIDErr := ResolveID(ctx, func(context.Context) (string, error) { return "Ab" + f, nil }, "", time.Second, discard())
	_, _, dockerIDGraphicErr := ResolveID(ctx, func(context.Context) (string, error) { return "Ab", nil }, "", time.Second, discard())
	dir := t.TempDir()
	for name, content := range map[string]string{NodeIDFile: "ab" + f, LinkOwnerFile: "owner" + f} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, readIDErr := readNodeID(dir)
	_, ownerErr := RecordedLinkOwner(dir)
	recordErr := recordNodeID(t.TempDir(), "ab"+f)
	_, _, _, ipamErr := (&Reconciler{}).nodePlan(ctx, netspec.Spec{Name: "lan", IPAM: netspec.IPAMMode("cluster" + f)})

	var logs bytes.Buffer
	r := &Reconciler{Log: slog.New(slog.NewJSONHandler(&logs, nil)),
		RemoveParent: func(string, string) (bool, error) { t.Fatal("a parent in use was removed"); return false, nil }}
	users := func(context.Context) (map[string][]string, error) {
		return map[string][]string{"eth1.40" + f: {"network other"}}, nil
	}
	if err := r.removeParents(ctx, "lan", []string{"eth1.40" + f}, users); err != nil {
		t.Fatal(err)
	}
	var line struct{ Err string }
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log %s: %v", logs.Bytes(), err)
	}
	for _, tc := range []struct {
		name, got, want string
	}{
		{"Docker's node ID", errText(dockerIDErr), `swarm node ID as "Ab\u3164": `},
		{"Docker's node ID, Graphic", errText(dockerIDGraphicErr), `swarm node ID as "Ab": `},
		{"recorded node ID", errText(readIDErr), `holds "ab\u3164", not a swarm node ID`},
		{"node ID to record", errText(recordErr), `record node ID "ab\u3164" in `},
		{"link owner", errText(ownerErr), `holds "owner\u3164", not a link owner`},
		{"IPAM", errText(ipamErr), `unknown IPAM "cluster\u3164"`},
		{"VLAN parent in use", line.Err, `VLAN parent "eth1.40\u3164", left in place`},
	} {
		if !strings.Contains(tc.got, tc.want) {
			t.Errorf("%s: error %s, want it to hold %s", tc.name, tc.got, tc.want)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
