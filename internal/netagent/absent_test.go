package netagent

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/netspec"
)

// TestSpecUnreadableIsNoOrphan: Consul 1.8 leaves out of a listing, with
// no error, the keys the token may not read (an operator's policy edit, a
// token replaced by a narrower one). A network realised here whose spec
// the token can no longer read is not listed, and was taken for one whose
// spec was deleted: its config-only network, shim (marked ones too) and
// lease were torn down under its containers. Now a spec missing from the
// listing is read directly first: the read refused, nothing is removed,
// and the key is warned of once.
func TestSpecUnreadableIsNoOrphan(t *testing.T) {
	for _, tc := range []struct {
		name   string
		denied string
	}{
		{"prefix denied", netspec.KVPrefix},
		{"spec key denied", netspec.SpecKey("web")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			kv, st := kvWithWeb(t)
			host := &fakeHost{}
			var shimsRemoved []string
			r := reconcilerOf(st, host, host, func(name, _ string) error {
				shimsRemoved = append(shimsRemoved, name)
				return nil
			})
			r.Marked = func() (map[string]hostnet.Marks, error) {
				return map[string]hostnet.Marks{"web": {Shims: []string{"ul-renamed"}}}, nil
			}
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			r.Log = slog.New(slog.NewTextHandler(&logs, nil))
			host.managed = []string{"web"}
			kv.DenyRead(tc.denied)
			for range 3 {
				r.Sync(ctx)
			}
			if len(host.removed) > 0 || len(shimsRemoved) > 0 {
				t.Errorf("spec unreadable: removed Docker networks %v and shims %v; want nothing removed", host.removed, shimsRemoved)
			}
			kv.DenyRead()
			leases, err := st.Leases(ctx, "web")
			if err != nil || len(leases) != 1 {
				t.Errorf("web's leases after the syncs: %v, %v; want this node's one kept", leases, err)
			}
			warn := "key=" + netspec.SpecKey("web")
			if n := strings.Count(logs.String(), warn); n != 1 || !strings.Contains(logs.String(), "read rights") {
				t.Errorf("want one warning naming %s and the token's read rights, got %d:\n%s", netspec.SpecKey("web"), n, logs.String())
			}
			// Readable again, and deleted for real: the orphan goes.
			if err := kv.Delete(ctx, netspec.SpecKey("web")); err != nil {
				t.Fatal(err)
			}
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(host.removed, []string{"web-config"}) || !slices.Contains(shimsRemoved, "ul-renamed") {
				t.Errorf("spec deleted: removed %v, shims %v; want web-config and its shims gone", host.removed, shimsRemoved)
			}
		})
	}
}

// TestOrphanReportKeptWhileSpecUnreadable: this node's report under a
// network whose spec is not listed was deleted as an orphan's; a spec the
// token may not read is not listed either. Now the report stays until a
// read of the spec key says it is gone, and the key is warned of once.
func TestOrphanReportKeptWhileSpecUnreadable(t *testing.T) {
	ctx := context.Background()
	kv, st := kvWithWeb(t)
	for key, value := range map[string]string{
		netspec.KVPrefix + "hidden/spec":      `{}`,
		netspec.KVPrefix + "hidden/nodes/id1": `{"id":"id1","node":"n1","state":"ready"}`,
	} {
		if err := kv.Put(ctx, key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	kv.DenyRead(netspec.SpecKey("hidden"))
	var logs bytes.Buffer
	r := reconcilerOf(st, &fakeHost{}, &failingLeader{}, func(string, string) error { return nil })
	r.Log = slog.New(slog.NewTextHandler(&logs, nil))
	for range 2 {
		r.Sync(ctx)
	}
	if _, ok, err := kv.Get(ctx, netspec.KVPrefix+"hidden/nodes/id1"); !ok || err != nil {
		t.Errorf("this node's report under a network whose spec is unreadable: present %v, %v; want kept", ok, err)
	}
	if n := strings.Count(logs.String(), "key="+netspec.SpecKey("hidden")); n != 1 {
		t.Errorf("want one warning naming %s, got %d:\n%s", netspec.SpecKey("hidden"), n, logs.String())
	}
}

// TestSettledOrphanParentKeptWhileSpecUnreadable: a settled orphan's VLAN
// parent, looked at again once settledRecheck has passed, was removed
// once free whatever KV held by then; a network made again under the
// name, whose spec the token may not read, is not listed, and its parent
// went under it. Now the spec key is read first: refused, the parent
// stays, and the key is warned of once.
func TestSettledOrphanParentKeptWhileSpecUnreadable(t *testing.T) {
	ctx := context.Background()
	inUse, now := true, time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	r, _, logs, kv := settledOrphan(t, &inUse, &now)
	if err := kv.Put(ctx, netspec.SpecKey("gone"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	kv.DenyRead(netspec.SpecKey("gone"))
	inUse = false
	for range 2 {
		now = now.Add(settledRecheck)
		r.Sync(ctx)
	}
	if strings.Contains(logs.String(), "VLAN parent made for the network removed") {
		t.Errorf("the settled orphan's parent was removed while its spec key could not be read:\n%s", logs)
	}
	if n := strings.Count(logs.String(), "key="+netspec.SpecKey("gone")); n != 1 {
		t.Errorf("want one warning naming %s, got %d:\n%s", netspec.SpecKey("gone"), n, logs)
	}
}
