package dockerhost

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/docker/docker/client"
)

// TestAPIVersionErrorQuotesToShow: the API version a daemon reports, when
// it is not one Raw puts in a path, is quoted with what would not show
// escaped (%q left U+3164 as it is, and "1.4\u3164" read "1.4"); one that
// is Graphic is quoted as %q quotes it.
func TestAPIVersionErrorQuotesToShow(t *testing.T) {
	for _, tc := range []struct{ reported, want string }{
		{"1.4\u3164", `API version "1.4\u3164" is not of the form 1.N`},
		{"v1.44", `API version "v1.44" is not of the form 1.N`},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"ApiVersion":"` + tc.reported + `"}`))
		}))
		api, err := client.NewClientWithOpts(client.WithHost("tcp://" + strings.TrimPrefix(srv.URL, "http://")))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := NewRaw(api, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = raw.APIVersion(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("reported %q: error %v, want it to hold %s", tc.reported, err, tc.want)
		}
		api.Close()
		srv.Close()
	}
}
