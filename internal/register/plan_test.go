package register

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// planService is a desired service with hash h and, when status is not
// empty, a HEALTHCHECK mirror in that status.
func planService(id, h, status string) Service {
	s := Service{ID: id, Name: "svc", Meta: map[string]string{MetaContainerID: "c1", MetaHash: h}}
	if status != "" {
		s.Health = &HealthMirror{CheckID: id + HealthCheckSuffix, Status: status, Output: "docker health: " + status}
	}
	return s
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name    string
		desired []Service
		actual  []Registered
		want    Changes
	}{
		{
			name: "empty and empty",
			want: Changes{},
		},
		{
			name:    "new service is registered",
			desired: []Service{planService("a", "h1", "")},
			want:    Changes{Register: []Service{planService("a", "h1", "")}},
		},
		{
			name:    "same hash writes nothing",
			desired: []Service{planService("a", "h1", "")},
			actual:  []Registered{{ID: "a", ContainerID: "c1", Hash: "h1"}},
			want:    Changes{},
		},
		{
			name:    "same hash and health status writes nothing",
			desired: []Service{planService("a", "h1", "passing")},
			actual:  []Registered{{ID: "a", ContainerID: "c1", Hash: "h1", HealthStatus: "passing"}},
			want:    Changes{},
		},
		{
			name:    "changed hash is registered again",
			desired: []Service{planService("a", "h2", "")},
			actual:  []Registered{{ID: "a", ContainerID: "c1", Hash: "h1"}},
			want:    Changes{Register: []Service{planService("a", "h2", "")}},
		},
		{
			name:    "changed hash and health registers without a separate health update",
			desired: []Service{planService("a", "h2", "critical")},
			actual:  []Registered{{ID: "a", ContainerID: "c1", Hash: "h1", HealthStatus: "passing"}},
			want:    Changes{Register: []Service{planService("a", "h2", "critical")}},
		},
		{
			name:    "only health status differs",
			desired: []Service{planService("a", "h1", "critical")},
			actual:  []Registered{{ID: "a", ContainerID: "c1", Hash: "h1", HealthStatus: "passing"}},
			want: Changes{Health: []HealthMirror{{
				CheckID: "a" + HealthCheckSuffix, Status: "critical", Output: "docker health: critical",
			}}},
		},
		{
			name:    "health mirror missing in Consul is updated",
			desired: []Service{planService("a", "h1", "passing")},
			actual:  []Registered{{ID: "a", ContainerID: "c1", Hash: "h1"}},
			want: Changes{Health: []HealthMirror{{
				CheckID: "a" + HealthCheckSuffix, Status: "passing", Output: "docker health: passing",
			}}},
		},
		{
			name:   "actual not desired is deregistered",
			actual: []Registered{{ID: "a", ContainerID: "c1", Hash: "h1"}, {ID: "b", ContainerID: "c1", Hash: "h2"}},
			want:   Changes{Deregister: []string{"a", "b"}},
		},
		{
			name: "mixed",
			desired: []Service{
				planService("new", "n1", ""),
				planService("same", "s1", "passing"),
				planService("changed", "c2", ""),
				planService("sick", "k1", "critical"),
			},
			actual: []Registered{
				{ID: "gone", Hash: "g1"},
				{ID: "same", Hash: "s1", HealthStatus: "passing"},
				{ID: "changed", Hash: "c1"},
				{ID: "sick", Hash: "k1", HealthStatus: "passing"},
				{ID: "gone2", Hash: "g2"},
			},
			want: Changes{
				Register:   []Service{planService("new", "n1", ""), planService("changed", "c2", "")},
				Deregister: []string{"gone", "gone2"},
				Health: []HealthMirror{{
					CheckID: "sick" + HealthCheckSuffix, Status: "critical", Output: "docker health: critical",
				}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Plan(tt.desired, tt.actual)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Plan mismatch (-want +got):\n%s", diff)
			}
			if wantEmpty := tt.want.Empty(); got.Empty() != wantEmpty {
				t.Errorf("Plan(...).Empty() = %v, want %v", got.Empty(), wantEmpty)
			}
		})
	}
}

// TestChangesEmpty: Empty and Len, the count of writes the pass's log
// reports, count every kind of write.
func TestChangesEmpty(t *testing.T) {
	tests := []struct {
		name string
		ch   Changes
		want bool
		len  int
	}{
		{"zero", Changes{}, true, 0},
		{"empty slices", Changes{Register: []Service{}, Deregister: []string{}, Health: []HealthMirror{}}, true, 0},
		{"register", Changes{Register: []Service{{ID: "a"}}}, false, 1},
		{"deregister", Changes{Deregister: []string{"a"}}, false, 1},
		{"health", Changes{Health: []HealthMirror{{CheckID: "a"}}}, false, 1},
		{"one register, two deregisters, three health updates", Changes{
			Register:   []Service{{ID: "a"}},
			Deregister: []string{"b", "c"},
			Health:     []HealthMirror{{CheckID: "d"}, {CheckID: "e"}, {CheckID: "f"}},
		}, false, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.ch.Empty(); got != tt.want {
				t.Errorf("Empty() = %v, want %v", got, tt.want)
			}
			if got := tt.ch.Len(); got != tt.len {
				t.Errorf("Len() = %d, want %d", got, tt.len)
			}
		})
	}
}

// TestPlanFromDesired runs Desired and Plan together the way the agent does:
// a resync of an unchanged container writes nothing, a HEALTHCHECK change is
// a health update, and a metadata change re-registers.
func TestPlanFromDesired(t *testing.T) {
	registered := func(svcs []Service) []Registered {
		var out []Registered
		for _, s := range svcs {
			r := Registered{ID: s.ID, ContainerID: s.ContainerID(), Hash: s.Meta[MetaHash]}
			if s.Health != nil {
				r.HealthStatus = s.Health.Status
			}
			out = append(out, r)
		}
		return out
	}
	healthy := macvlanContainer(labels("SERVICE_TAGS", "a"), func(c *Container) { c.Health = "healthy" })
	before, _ := Desired(healthy, testPolicy())
	actual := registered(before)

	tests := []struct {
		name string
		c    Container
		want func(after []Service) Changes
	}{
		{
			name: "unchanged resync",
			c:    healthy,
			want: func([]Service) Changes { return Changes{} },
		},
		{
			name: "container became unhealthy",
			c:    macvlanContainer(labels("SERVICE_TAGS", "a"), func(c *Container) { c.Health, c.HealthOutput = "unhealthy", "503" }),
			want: func(after []Service) Changes { return Changes{Health: []HealthMirror{*after[0].Health}} },
		},
		{
			name: "tags changed",
			c:    macvlanContainer(labels("SERVICE_TAGS", "b"), func(c *Container) { c.Health = "healthy" }),
			want: func(after []Service) Changes { return Changes{Register: after} },
		},
		{
			name: "container stopped",
			c:    macvlanContainer(func(c *Container) { c.Running = false }),
			want: func([]Service) Changes { return Changes{Deregister: []string{"node1:web:80"}} },
		},
		{
			name: "container ignored now",
			c:    macvlanContainer(labels("SERVICE_IGNORE", "true")),
			want: func([]Service) Changes { return Changes{Deregister: []string{"node1:web:80"}} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			after, _ := Desired(tt.c, testPolicy())
			got := Plan(after, actual)
			if diff := cmp.Diff(tt.want(after), got); diff != "" {
				t.Errorf("Plan mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
