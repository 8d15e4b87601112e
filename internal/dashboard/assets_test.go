package dashboard

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// maxPage is the bound on the whole page, transferred.
const maxPage = 300 << 10

func TestPageSize(t *testing.T) {
	total := 0
	for _, name := range []string{"index.html", "app.js", "app.css"} {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			t.Fatal(err)
		}
		total += len(b)
	}
	t.Logf("page: %d bytes (index.html, app.js, app.css)", total)
	if total > maxPage {
		t.Errorf("the page is %d bytes, more than %d", total, maxPage)
	}
}

// TestScriptNeverParsesHTML guards the page's escaping: its script makes
// every element with createElement and sets every value as text, so no
// API that parses a string as HTML or code may appear in it.
func TestScriptNeverParsesHTML(t *testing.T) {
	js := appJS(t)
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setTimeout('", `setTimeout("`, "createContextualFragment", "srcdoc"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	// Attributes that load or run something are never set from data.
	if m := regexp.MustCompile(`setAttribute\(\s*['"](href|src|on\w+|style)['"]`).FindString(js); m != "" {
		t.Errorf("app.js sets a dangerous attribute: %s", m)
	}
	html, _ := assets.ReadFile("assets/index.html")
	if regexp.MustCompile(`<script[^>]*>[^<\s]`).Match(html) || strings.Contains(string(html), " on") && regexp.MustCompile(`\son[a-z]+=`).Match(html) {
		t.Error("index.html has an inline script or event handler, which the Content-Security-Policy forbids")
	}
	if regexp.MustCompile(`(?i)(src|href)="(https?:)?//`).Match(html) {
		t.Error("index.html loads something from elsewhere")
	}
}

// appJS is the page's script.
func appJS(t *testing.T) string { t.Helper(); return embedded(t, "assets/app.js") }

// appCSS is the page's style sheet.
func appCSS(t *testing.T) string { t.Helper(); return embedded(t, "assets/app.css") }

// embedded is one of the page's embedded files.
func embedded(t *testing.T, name string) string {
	t.Helper()
	b, err := assets.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// scriptFunc is the body of the script's function name, up to its end
// (the first line closing a block at its indentation).
func scriptFunc(t *testing.T, js, name string) string {
	t.Helper()
	at := strings.Index(js, "function "+name+"(")
	if at < 0 {
		t.Fatalf("app.js has no %s", name)
	}
	f := js[at:]
	return f[:strings.Index(f, "\n  }\n")]
}

// jsonName is the JSON name of struct field name of v's type.
func jsonName(t *testing.T, v any, name string) string {
	t.Helper()
	f, ok := reflect.TypeOf(v).FieldByName(name)
	if !ok {
		t.Fatalf("%T has no field %s", v, name)
	}
	return strings.Split(f.Tag.Get("json"), ",")[0]
}

// TestScriptRendersIPv6Pool: the page showed a network's IPv4 pool only.
// Its script now renders the IPv6 pool (pool6El) from the snapshot's
// names for it and for the fields it shows, with no map (it has no size).
func TestScriptRendersIPv6Pool(t *testing.T) {
	js := appJS(t)
	if name := jsonName(t, Network{}, "IPv6Pool"); !strings.Contains(js, "n."+name+") el.append(pool6El(n."+name+", nodeIdx))") {
		t.Errorf("app.js does not render the network's %s with pool6El", name)
	}
	fn := scriptFunc(t, js, "pool6El")
	for _, field := range []string{"Bits", "Range", "Counts", "Addresses", "Regions"} {
		if name := jsonName(t, Pool{}, field); !strings.Contains(fn, "p."+name) {
			t.Errorf("pool6El does not show the pool's %s (p.%s)", field, name)
		}
	}
	for _, field := range []string{"IP", "State", "Holder"} {
		if name := jsonName(t, PoolAddress{}, field); !strings.Contains(fn, "a."+name) {
			t.Errorf("pool6El does not show an address's %s (a.%s)", field, name)
		}
	}
	if strings.Contains(fn, "subnetMap(") || strings.Contains(fn, "p.size") {
		t.Error("pool6El lays out an IPv6 pool as a map, or by its size, which it does not have")
	}
}

// TestScriptRendersOutsideAddresses: the addresses of a network's
// inventories outside its subnets (Network.Outside), which no map holds,
// are listed by the page's script (outsideEl) with what holds them.
func TestScriptRendersOutsideAddresses(t *testing.T) {
	js := appJS(t)
	if name := jsonName(t, Network{}, "Outside"); !strings.Contains(js, "el.append(outsideEl(n."+name+", n."+jsonName(t, Network{}, "OutsideOmitted")+"))") {
		t.Errorf("app.js does not render the network's %s with outsideEl", name)
	}
	fn := scriptFunc(t, js, "outsideEl")
	for _, field := range []string{"IP", "Holder"} {
		if name := jsonName(t, PoolAddress{}, field); !strings.Contains(fn, "a."+name) {
			t.Errorf("outsideEl does not show an address's %s (a.%s)", field, name)
		}
	}
}

// TestScriptShowsWhatTheSnapshotLeftOut: past the snapshot's limits
// (limit), the page says how many problems and addresses were left out,
// by the snapshot's names for those counts.
func TestScriptShowsWhatTheSnapshotLeftOut(t *testing.T) {
	js := appJS(t)
	body := func(fn string) string { return scriptFunc(t, js, fn) }
	for _, c := range []struct{ where, use string }{
		{"render", "snap." + jsonName(t, Snapshot{}, "ProblemsOmitted")},
		{"nodeHead", "doc." + jsonName(t, Doctor{}, "ProblemsOmitted")},
		{"pool6El", "p." + jsonName(t, Pool{}, "Omitted")},
		{"legend", "p." + jsonName(t, Pool{}, "Omitted")},
		{"networkEl", "n." + jsonName(t, Network{}, "OutsideOmitted")},
	} {
		if !strings.Contains(body(c.where), c.use) {
			t.Errorf("%s does not show %s", c.where, c.use)
		}
	}
}

// TestScriptShowsTheSummary: the page's summary line (renderSummary)
// shows every count of the snapshot's summary but the tasks' (running
// and passing tasks are those that matter), by the snapshot's names.
func TestScriptShowsTheSummary(t *testing.T) {
	js := appJS(t)
	fn := scriptFunc(t, js, "renderSummary")
	st := reflect.TypeOf(Summary{})
	for i := range st.NumField() {
		if f := st.Field(i); f.Name != "Tasks" && !strings.Contains(fn, "m."+jsonName(t, Summary{}, f.Name)) {
			t.Errorf("renderSummary does not show the summary's %s (m.%s)", f.Name, jsonName(t, Summary{}, f.Name))
		}
	}
}

// TestScriptShowsTheOutage: while the dashboard cannot read Consul, the
// page says since when (SourceError.Since: "Consul unreachable since"),
// and an agent's unknown state with the state it had (Agent.LastState),
// by the snapshot's names.
func TestScriptShowsTheOutage(t *testing.T) {
	js := appJS(t)
	body := func(fn string) string { return scriptFunc(t, js, fn) }
	for _, c := range []struct{ where, use string }{
		{"renderSources", "e." + jsonName(t, SourceError{}, "Since")},
		{"renderSources", "Consul unreachable since "},
		{"nodeHead", "agent." + jsonName(t, Agent{}, "LastState")},
	} {
		if !strings.Contains(body(c.where), c.use) {
			t.Errorf("%s does not show %s", c.where, c.use)
		}
	}
}

// TestScriptShowsOmittedChecks: a card's checks past MaxCardChecks are
// counted on the page (Task.ChecksOmitted), by the snapshot's name.
func TestScriptShowsOmittedChecks(t *testing.T) {
	js := appJS(t)
	fn := scriptFunc(t, js, "card")
	if name := jsonName(t, Task{}, "ChecksOmitted"); !strings.Contains(fn, "t."+name) {
		t.Errorf("card does not show the card's %s (t.%s)", "ChecksOmitted", name)
	}
}

// TestScriptShowsWhyATaskIsUnregistered: a card shows why its node's
// agent leaves the task out of Consul (Task.Unregistered) as text, by
// the snapshot's name.
func TestScriptShowsWhyATaskIsUnregistered(t *testing.T) {
	fn := scriptFunc(t, appJS(t), "card")
	name := jsonName(t, Task{}, "Unregistered")
	if !strings.Contains(fn, "text: 'left out on purpose: ' + t."+name) {
		t.Errorf("card does not show the card's Unregistered as text (t.%s)", name)
	}
	// Nor flags it red: it is not registered as its agent meant.
	if !strings.Contains(fn, "if (t."+name+") classes.push('left-out')") || !strings.Contains(appCSS(t), ".card.left-out {") {
		t.Errorf("a card left out on purpose is styled as a card Consul misses (no left-out class and rule)")
	}
}

// TestScriptSetsNoClassFromData: a class is the page's own word, never a
// value the cluster gave: a doctor result's status is whatever the agent
// wrote in KV, and "fail warn" (a failure, by the counts, as every status
// neither ok nor warn) styled the problem as a warning. Values become
// classes through slug, or a choice among the page's own classes.
func TestScriptSetsNoClassFromData(t *testing.T) {
	js := appJS(t)
	for _, m := range regexp.MustCompile(`class: *[a-z]+\.[a-z_]+ *[,}]`).FindAllString(js, -1) {
		t.Errorf("app.js sets a class from data: %s", m)
	}
	if fn := scriptFunc(t, js, "problem"); !strings.Contains(fn, `p.status === 'warn' ? 'warn' : 'fail'`) {
		t.Errorf("problem does not style a result as Build counts it (warn, else a failure):\n%s", fn)
	}
}
