package register

// Changes are the Consul writes that turn the actual services into the desired ones.
type Changes struct {
	Register   []Service
	Deregister []string // service IDs
	// Health are mirror checks whose status alone changed.
	Health []HealthMirror
}

// Empty reports whether nothing needs writing.
func (c Changes) Empty() bool {
	return len(c.Register) == 0 && len(c.Deregister) == 0 && len(c.Health) == 0
}

// Len is the number of writes.
func (c Changes) Len() int { return len(c.Register) + len(c.Deregister) + len(c.Health) }

// Plan compares the desired services with the registered ones (both for the
// same scope, such as one container) and returns the writes needed. A service
// whose hash matches is left alone, so an unchanged resync writes nothing.
func Plan(desired []Service, actual []Registered) Changes {
	var ch Changes
	have := make(map[string]Registered, len(actual))
	for _, r := range actual {
		have[r.ID] = r
	}
	want := make(map[string]bool, len(desired))
	for _, s := range desired {
		want[s.ID] = true
		r, ok := have[s.ID]
		switch {
		case !ok || r.Hash != s.Meta[MetaHash]:
			ch.Register = append(ch.Register, s)
		case s.Health != nil && r.HealthStatus != s.Health.Status:
			ch.Health = append(ch.Health, *s.Health)
		}
	}
	for _, r := range actual {
		if !want[r.ID] {
			ch.Deregister = append(ch.Deregister, r.ID)
		}
	}
	return ch
}
