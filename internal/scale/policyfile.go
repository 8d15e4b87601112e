package scale

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// PolicyFile holds policies kept in a file rather than on services, by
// service name. Each entry is written with the label names less their
// "underlay.scale." prefix:
//
//	services:
//	  web:
//	    min: 2
//	    max: 10
//	    step-up: 50%
//	    cooldown-down: 10m
//	    allow-down: true
//
// A service named in the file is autoscaled (unless it says enabled: false)
// whatever its switch labels (orbiter, underlay.scale.enabled) say, and the
// file's settings win over the service's labels.
type PolicyFile map[string]map[string]string

// ParsePolicyFile reads and checks a policy file; every bad entry is
// reported, naming the service, the setting and the value.
func ParsePolicyFile(data []byte) (PolicyFile, error) {
	var doc struct {
		Services map[string]map[string]any `yaml:"services"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	out := PolicyFile{}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(doc.Services)) {
		labels := map[string]string{LabelEnabled: "true"}
		for k, v := range doc.Services[name] {
			switch v.(type) {
			case map[string]any, []any, nil:
				errs = append(errs, fmt.Errorf("policy file: service %s: %s: want a single value", name, k))
				continue
			}
			labels[LabelPrefix+strings.TrimPrefix(k, LabelPrefix)] = fmt.Sprint(v)
		}
		if _, err := ParsePolicy(labels); err != nil {
			errs = append(errs, fmt.Errorf("policy file: service %s: %w", name, err))
			continue
		}
		out[name] = labels
	}
	return out, errors.Join(errs...)
}

// apply returns a service's labels with the file's settings for it on top.
// The entry's enabled decides alone: the service's own switches are dropped,
// since a label orbiter=false would otherwise still turn off a service the
// file enables (either switch saying false disables).
func (f PolicyFile) apply(svc Service) map[string]string {
	entry, ok := f[svc.Name]
	if !ok {
		return svc.Labels
	}
	merged := make(map[string]string, len(svc.Labels)+len(entry))
	maps.Copy(merged, svc.Labels)
	delete(merged, LabelOrbiter)
	maps.Copy(merged, entry)
	return merged
}
