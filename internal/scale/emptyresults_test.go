package scale

import (
	"encoding/json"
	"testing"
)

// TestWebhookWithoutAlertsAnswersAList: a notification of no alerts is
// answered {"results": []}, the list the README promises with one result
// per alert, not {"results": null}, which a client looping over the
// results (results.forEach) fails on.
func TestWebhookWithoutAlertsAnswersAList(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true"))
	for _, path := range []string{"/v1/underlay/alertmanager", "/v1/orbiter/handle/autoswarm/web/up"} {
		code, body := e.do(t, "POST", path, testToken, `{"version": "4", "status": "firing", "alerts": []}`)
		var ans map[string]json.RawMessage
		if err := json.Unmarshal([]byte(body), &ans); err != nil || code != 200 || string(ans["results"]) != "[]" {
			t.Errorf("POST %s of no alerts: %d %s, want 200 with \"results\": []", path, code, body)
		}
	}
}
