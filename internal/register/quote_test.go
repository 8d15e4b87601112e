package register

import (
	"fmt"
	"strings"
	"testing"
)

// TestWarningNamesQuoteToShow: a warning names the container and the
// label key, which whoever runs the container chooses; printed raw,
// "web\u3164" read "web" and a key's U+3164 hid. Either is quoted with
// what would not show escaped now; Graphic ones print as they did.
func TestWarningNamesQuoteToShow(t *testing.T) {
	for _, tc := range []struct {
		name, container, key, want string
	}{
		{"odd", "web\u3164", "SERVICE_NAME\u3164", `container "web\u3164": "SERVICE_NAME\u3164"="x": attribute name may hold only`},
		{"Graphic", "web", "SERVICE_NA.ME", `container web: SERVICE_NA.ME="x": attribute name may hold only`},
	} {
		_, warnings := Desired(macvlanContainer(func(c *Container) { c.Name = tc.container }, labels(tc.key, "x")), Policy{})
		var got []string
		for _, w := range warnings {
			got = append(got, fmt.Sprint(w))
		}
		if all := strings.Join(got, "\n"); !strings.Contains(all, tc.want) {
			t.Errorf("%s: warnings:\n%s\nwant one holding %s", tc.name, all, tc.want)
		}
	}
}
