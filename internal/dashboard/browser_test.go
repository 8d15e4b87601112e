package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/dashboard/browser"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/testenv"
)

// startBrowser starts headless Chromium for tb, failing when it is
// missing (integration tests never skip on a missing program).
func startBrowser(tb testing.TB) *browser.Browser {
	tb.Helper()
	b, err := browser.Start(context.Background(), browser.Options{Width: 1400, Height: 1000})
	if err != nil {
		tb.Fatalf("headless chromium: %v", err)
	}
	tb.Cleanup(b.Close)
	return b
}

func screenshot(tb testing.TB, b *browser.Browser, name string) {
	tb.Helper()
	path := filepath.Join(testenv.Artifacts(tb), name+".png")
	if err := b.Screenshot(path); err != nil {
		tb.Errorf("screenshot %s: %v", name, err)
		return
	}
	tb.Logf("screenshot: %s", path)
}

// TestIntegrationDashboardXSS gives every name the cluster reports — node,
// service, image, container, check output, doctor message and fix, metric,
// decision source and reason — markup that would run script if parsed as
// HTML, with the page's Content-Security-Policy bypassed so that only the
// escaping stands between it and the browser: the page must show the
// markup as text, make no element of it, and run nothing.
func TestIntegrationDashboardXSS(t *testing.T) {
	testenv.Require(t)
	const payload = `<img src=x onerror="window.__xss=(window.__xss||0)+1">`
	name := func(s string) string { return payload + s }
	now := time.Now().UTC()
	in := synthetic(3, 12, now, name)
	ts := startServer(t, Config{Tokens: tokens("tok")}, in)
	b := startBrowser(t)
	if err := b.BypassCSP(); err != nil {
		t.Fatal(err)
	}
	if err := b.Open(ts.http.URL + "/ui/"); err != nil {
		t.Fatal(err)
	}
	// Reads want the token: log in first.
	if err := b.Login("tok", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// A change, so that events carry the names too.
	in.Tasks = append(in.Tasks, SwarmTask{ID: "late", ServiceID: in.Services[0].ID, NodeID: in.Nodes[1].ID, Slot: 99, DesiredState: "running", State: "running", Since: now})
	ts.src.set(in)
	if err := b.WaitTrue(`document.querySelectorAll('#events li').length > 0`, "document.getElementById('events').textContent", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	type result struct {
		Imgs     int    `json:"imgs"`
		XSS      any    `json:"xss"`
		Text     string `json:"text"`
		Services int    `json:"services"`
		Cards    int    `json:"cards"`
	}
	res, err := browser.Eval[result](b, `({imgs: document.querySelectorAll('img').length, xss: window.__xss === undefined ? null : window.__xss,
		text: document.body.innerText, services: document.querySelectorAll('.service').length, cards: document.querySelectorAll('.card').length})`)
	if err != nil {
		t.Fatal(err)
	}
	screenshot(t, b, "xss")
	if res.Imgs != 0 || res.XSS != nil {
		t.Errorf("the page made %d <img> elements and window.__xss is %v: markup from the cluster was parsed as HTML", res.Imgs, res.XSS)
	}
	if res.Services != 1 || res.Cards < 12 {
		t.Errorf("%d services and %d cards rendered, want 1 and at least 12", res.Services, res.Cards)
	}
	for _, want := range []string{payload + "svc0", payload + "node1", payload + "underlay/testserver:dev", payload + "HTTP check",
		payload + "shim missing", payload + "ip link add", payload + "web", payload + "scaled up from 49 to 50", payload + "http 127.0.0.1:1234",
		payload + "decode: invalid character 'g'", payload + "stray'", payload + "stray: ", payload + "misfiled facts"} {
		if !strings.Contains(res.Text, want) {
			t.Errorf("the page does not show %q as text", want)
		}
	}
	// The map's hover names the holder as text too.
	if err := b.ScrollTo(".map .c.st-task"); err != nil {
		t.Fatal(err)
	}
	tip, err := browser.Eval[string](b, `(() => { const c = document.querySelector('.map .c.st-task'); const r = c.getBoundingClientRect();
		c.dispatchEvent(new MouseEvent('mousemove', {bubbles: true, clientX: r.x + 2, clientY: r.y + 2}));
		return document.getElementById('tooltip').textContent; })()`)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tip, payload) {
		t.Errorf("hovering a task's cell shows %q; want its holder, markup as text", tip)
	}
	if imgs, _ := browser.Eval[int](b, `document.querySelectorAll('img').length + (window.__xss || 0)`); imgs != 0 {
		t.Errorf("after hovering, %d <img> elements or script runs", imgs)
	}
}

// BenchmarkIntegrationDashboardRender renders a synthetic cluster of 500
// tasks on 10 nodes in headless Chromium and prints, per load: the time
// from navigation to the first full render, the time the render itself
// took, the time to render an update (one task changed, received over the
// event stream), a fresh render with the script warm, and, from a first
// load, the bytes of the page (HTML, script, style) and of the snapshot
// transferred.
func BenchmarkIntegrationDashboardRender(b *testing.B) {
	testenv.Require(b)
	now := time.Now().UTC()
	in := synthetic(10, 500, now, nil)
	ts := startServer(b, Config{}, in)
	br := startBrowser(b)
	// One load before the measured ones: the page's size is read cold, and
	// a fresh browser's first page pays for starting its renderer.
	if err := br.Open(ts.http.URL + "/ui/"); err != nil {
		b.Fatal(err)
	}
	if err := br.WaitTrue(browser.DashboardReady, "", 60*time.Second); err != nil {
		b.Fatal(err)
	}
	type sizes struct{ Page, Snap, Cold float64 }
	sz, err := browser.Eval[sizes](br, `(() => { const rs = performance.getEntriesByType('resource'); const nav = performance.getEntriesByType('navigation')[0];
		const size = (e) => e.transferSize || 0;
		return {Cold: window.__ul.firstRenderAt, Page: size(nav) + rs.filter((e) => /app\.(js|css)$/.test(e.name)).reduce((a, e) => a + size(e), 0),
			Snap: rs.filter((e) => /v1\/cluster$/.test(e.name)).reduce((a, e) => a + size(e), 0)}; })()`)
	if err != nil {
		b.Fatal(err)
	}
	var load, first, update, warm float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := br.Open(ts.http.URL + "/ui/"); err != nil {
			b.Fatal(err)
		}
		if err := br.WaitTrue(browser.DashboardReady, "", 60*time.Second); err != nil {
			b.Fatal(err)
		}
		type measure struct {
			Load, First float64
			Cards       int
		}
		m, err := browser.Eval[measure](br, `({Load: window.__ul.firstRenderAt, First: window.__ul.renderMs[0], Cards: document.querySelectorAll('.card').length})`)
		if err != nil {
			b.Fatal(err)
		}
		if m.Cards < 500 {
			b.Fatalf("%d cards rendered, want 500", m.Cards)
		}
		renders, _ := browser.Eval[int](br, `window.__ul.renders`)
		in.Tasks[i%len(in.Tasks)].State = map[bool]string{true: "failed", false: "running"}[in.Tasks[i%len(in.Tasks)].State == "running"]
		ts.src.set(in)
		if err := br.WaitTrue(fmt.Sprintf(`window.__ul.renders > %d`, renders), "", 30*time.Second); err != nil {
			b.Fatal(err)
		}
		upd, _ := browser.Eval[float64](br, `window.__ul.renderMs[window.__ul.renderMs.length - 1]`)
		// The whole page rendered afresh again, the script's code warm.
		for j := 0; j < 3; j++ {
			w, err := browser.Eval[float64](br, `window.__ul.rerender()`)
			if err != nil {
				b.Fatal(err)
			}
			warm += w / 3
		}
		load += m.Load
		first += m.First
		update += upd
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(load/n, "ms-to-first-render")
	b.ReportMetric(first/n, "ms-render")
	b.ReportMetric(update/n, "ms-update")
	b.ReportMetric(warm/n, "ms-render-warm")
	fmt.Printf("dashboard, 500 tasks on 10 nodes, headless Chromium: navigation to first full render %.0f ms (the render itself %.0f ms; %.0f ms again with the script warm; %.0f ms on the browser's first page), an update over the stream rendered in %.0f ms; page %.1f KB and snapshot %.1f KB transferred\n",
		load/n, first/n, warm/n, sz.Cold, update/n, sz.Page/1024, sz.Snap/1024)
}

// TestIntegrationDashboardPage drives the page's own behaviour on a
// synthetic cluster in Chromium: the search finds an IP, a MAC, a task, a
// container and a service; the events filter; the page turns stale when
// its server goes away and live again, by itself, when it is back; and,
// reads wanting a token by default, it asks for it before showing
// anything.
func TestIntegrationDashboardPage(t *testing.T) {
	testenv.Require(t)
	now := time.Now().UTC()
	in := synthetic(3, 12, now, nil)
	// Scaled to zero: no network (TestSnapshotListsAreLists).
	in.Services = append(in.Services, SwarmService{ID: "svcidle", Name: "idle"})
	ts := startServer(t, Config{Tokens: tokens("tok"), KeepAlive: time.Second}, in)
	b := startBrowser(t)
	if err := b.Open(ts.http.URL + "/ui/"); err != nil {
		t.Fatal(err)
	}
	// Reads need the token: the login comes first, and nothing is shown.
	if err := b.WaitTrue(`document.getElementById('login').open`, "document.body.innerText", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if n, _ := browser.Eval[int](b, `document.querySelectorAll('.card').length`); n != 0 {
		t.Errorf("%d cards shown before logging in", n)
	}
	if err := b.Type("#token", "wrong"); err != nil {
		t.Fatal(err)
	}
	b.Click(`#login-form button[type=submit]`)
	if err := b.WaitTrue(`document.getElementById('login-error').textContent.includes('invalid')`, "document.getElementById('login-error').textContent", 10*time.Second); err != nil {
		t.Error(err)
	}
	if _, err := browser.Eval[bool](b, `(document.getElementById('token').value = '', true)`); err != nil {
		t.Fatal(err)
	}
	if err := b.Type("#token", "tok"); err != nil {
		t.Fatal(err)
	}
	b.Click(`#login-form button[type=submit]`)
	if err := b.WaitTrue(browser.DashboardReady, "document.getElementById('live').textContent", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// A service with no network is shown, and so is everything after it.
	for what, want := range map[string]int{".service": len(in.Services), ".network": len(in.Networks)} {
		if n, err := browser.Eval[int](b, `document.querySelectorAll('`+what+`').length`); err != nil || n != want {
			t.Errorf("%d %s elements shown, want %d (%v)", n, what, want, err)
		}
	}

	// Search: each kind of value finds its card.
	task := in.Tasks[5]
	ent := in.Inventory[5]
	for _, q := range []string{ent.IP, ent.MAC, task.ID, ent.Container, in.Services[0].Name} {
		if _, err := browser.Eval[bool](b, `(() => { const s = document.getElementById('search'); s.value = `+jsString(q)+`;
			s.dispatchEvent(new Event('input')); return true; })()`); err != nil {
			t.Fatal(err)
		}
		found, err := browser.Eval[bool](b, `document.querySelector('.card[data-task="`+task.ID+`"]').classList.contains('match')`)
		if err != nil || !found {
			t.Errorf("searching %q does not mark task %s's card (%v)", q, task.ID, err)
		}
		if count, _ := browser.Eval[string](b, `document.getElementById('search-count').textContent`); !strings.Contains(count, "found") {
			t.Errorf("searching %q: the count says %q", q, count)
		}
	}
	if n, _ := browser.Eval[int](b, `(() => { const s = document.getElementById('search'); s.value = '`+ent.IP+`'; s.dispatchEvent(new Event('input'));
		return document.querySelectorAll('.map[data-network="' + `+jsString(in.Networks[0].Spec.Name)+` + '"] .c.match').length; })()`); n != 1 {
		t.Errorf("searching %s marks %d cells of the subnet map, want its one", ent.IP, n)
	}

	// A dual-stack network: its IPv6 pool is listed under the map, the
	// task's IPv6 address among it, and searching that address marks it.
	in.Networks[0].Spec.IPv6Subnet = netip.MustParsePrefix("fd00:150::/64")
	in.Networks[0].Blocks[netip.MustParsePrefix("fd00:150::100/120")] = ipam.BlockDoc{Node: in.Nodes[0].Hostname, Allocs: map[string]ipam.Alloc{
		"fd00:150::105": {Node: in.Nodes[0].Hostname, At: now, Kind: ipam.KindTask}}}
	v6 := in.Inventory[5]
	v6.IP, v6.MAC = "fd00:150::105", ""
	in.Inventory = append(in.Inventory, v6)
	ts.src.set(in)
	row := `document.querySelector('.network[data-network=' + ` + jsString(`"`+in.Networks[0].Spec.Name+`"`) + ` + '] .pool6-addresses li[data-state="task"]')`
	if err := b.WaitTrue(row+` && `+row+`.textContent.includes('fd00:150::105')`, "document.querySelector('.pool6') && document.querySelector('.pool6').innerText", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if ok, err := browser.Eval[bool](b, `(() => { const s = document.getElementById('search'); s.value = 'fd00:150::105'; s.dispatchEvent(new Event('input'));
		return `+row+`.classList.contains('match'); })()`); err != nil || !ok {
		t.Errorf("searching fd00:150::105 does not mark its row of the IPv6 pool (%v)", err)
	}
	if _, err := browser.Eval[bool](b, `(() => { const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input')); return true; })()`); err != nil {
		t.Fatal(err)
	}

	// Events and their filter.
	in.Tasks = append(in.Tasks, SwarmTask{ID: "late", ServiceID: in.Services[0].ID, NodeID: in.Nodes[1].ID, Slot: 42, DesiredState: "running", State: "running", Since: now})
	ts.src.set(in)
	if err := b.WaitTrue(`[...document.querySelectorAll('#events li')].some((li) => li.textContent.includes('svc0.42'))`, "document.getElementById('events').innerText", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	shown, err := browser.Eval[int](b, `(() => { const f = document.getElementById('event-filter'); f.value = 'svc0.42'; f.dispatchEvent(new Event('input'));
		return [...document.querySelectorAll('#events li')].filter((li) => !li.classList.contains('hidden')).length; })()`)
	if err != nil || shown != 1 {
		t.Errorf("filtering the events on svc0.42 shows %d, want 1 (%v)", shown, err)
	}
	screenshot(t, b, "page")

	// The server goes away: the page says it is stale; back: live again,
	// with what changed meanwhile, without a reload.
	if _, err := browser.Eval[int](b, `window.__marker = 3`); err != nil {
		t.Fatal(err)
	}
	ts.down.Store(true)
	ts.http.CloseClientConnections()
	if err := b.WaitTrue(`document.getElementById('live').dataset.state === 'stale'`, "document.getElementById('live').textContent", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	stale, _ := browser.Eval[string](b, `document.getElementById('live').textContent`)
	if !strings.Contains(stale, "stale") {
		t.Errorf("the page says %q while its server is away", stale)
	}
	in.Tasks = append(in.Tasks, SwarmTask{ID: "later", ServiceID: in.Services[0].ID, NodeID: in.Nodes[2].ID, Slot: 43, DesiredState: "running", State: "running", Since: now})
	ts.src.set(in)
	ts.down.Store(false)
	if err := b.WaitTrue(`document.getElementById('live').dataset.state === 'live' && document.querySelector('.card[data-task="later"]')`,
		"document.getElementById('live').textContent", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if m, _ := browser.Eval[int](b, `window.__marker || 0`); m != 3 {
		t.Error("the page reloaded to reconnect")
	}
}

// jsString quotes s for JavaScript.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
