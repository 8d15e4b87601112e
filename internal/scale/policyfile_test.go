package scale

import (
	"strings"
	"testing"
)

func TestParsePolicyFile(t *testing.T) {
	f, err := ParsePolicyFile([]byte(`
services:
  web:
    min: 2
    max: 10
    step-up: 50%
    allow-down: true
  api:
    underlay.scale.max: 3
`))
	if err != nil {
		t.Fatal(err)
	}
	web := f.apply(Service{Name: "web", Labels: map[string]string{LabelMax: "4", "other": "x"}})
	p, err := ParsePolicy(web)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Enabled || p.Min != 2 || p.Max != 10 || !p.AllowDown || web["other"] != "x" {
		t.Errorf("web policy %+v from %v: want enabled, 2..10, allow-down, the file winning over labels", p, web)
	}
	if p, _ := ParsePolicy(f.apply(Service{Name: "api"})); p.Max != 3 {
		t.Errorf("api max %d, want 3 (prefixed key accepted)", p.Max)
	}
	if got := f.apply(Service{Name: "unlisted", Labels: map[string]string{"a": "b"}}); len(got) != 1 {
		t.Errorf("an unlisted service's labels changed: %v", got)
	}

	for _, tt := range []struct{ doc, want string }{
		{"services:\n  web:\n    min: 5\n    max: 2\n", "web"},
		{"services:\n  web:\n    max: lots\n", `"lots"`},
		{"services:\n  web:\n    nonsense: 1\n", "nonsense"},
		{"services:\n  web:\n    max: [1, 2]\n", "max: want a single value"},
		{"servics:\n  web: {}\n", "servics"},
		{"services:\n  web:\n    cooldown-up: 10000000000\n", `service web: bad scaling label: underlay.scale.cooldown-up="10000000000": above the most, 24h0m0s`},
		{"services:\n  web:\n    orbiter.cooldown: 10000000000\n", `underlay.scale.orbiter.cooldown`},
		{"services:\n  web:\n    max: 1e19\n", `underlay.scale.max="1e+19": not a whole number`},
		{"services:\n  web:\n    max: 99999999999999999999\n", `underlay.scale.max=`},
		{"services:\n  web:\n    stabilization-down: 999999h\n", `above the most`},
	} {
		if _, err := ParsePolicyFile([]byte(tt.doc)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParsePolicyFile(%q) = %v, want an error naming %q", tt.doc, err, tt.want)
		}
	}
}

// The file's enabled wins over the service's switch labels, as it does over
// every other label: a file entry turns a service labelled orbiter=false on,
// and one saying enabled: false turns a labelled service off.
func TestPolicyFileSwitchWinsOverLabels(t *testing.T) {
	f, err := ParsePolicyFile([]byte("services:\n  web:\n    max: 4\n  off:\n    enabled: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, labels := range []map[string]string{
		{LabelOrbiter: "false"},
		{LabelEnabled: "false"},
		{LabelOrbiter: "false", LabelEnabled: "false"},
		{LabelOrbiter: "maybe"},
	} {
		merged := f.apply(Service{Name: "web", Labels: labels})
		p, err := ParsePolicy(merged)
		if err != nil || !p.Enabled || p.Max != 4 || !OptedIn(merged) {
			t.Errorf("web labelled %v, listed in the file: policy %+v, err %v, opted in %v; want enabled by the file, max 4",
				labels, p, err, OptedIn(merged))
		}
	}
	for _, labels := range []map[string]string{
		{LabelOrbiter: "true"},
		{LabelEnabled: "true"},
	} {
		merged := f.apply(Service{Name: "off", Labels: labels})
		if p, err := ParsePolicy(merged); err != nil || p.Enabled || OptedIn(merged) {
			t.Errorf("off labelled %v, enabled: false in the file: policy %+v, err %v; want disabled by the file", labels, p, err)
		}
	}
}
