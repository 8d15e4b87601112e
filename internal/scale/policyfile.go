package scale

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/underlay/underlay/internal/regularfile"
	"github.com/underlay/underlay/internal/secretfile"
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
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, errors.New("policy file: no YAML document (empty, or comments only): want services: NAME: {max: 10, …}")
	} else if err != nil {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	// One document: the policies after a "---" would be ignored unsaid.
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, errors.New("policy file: more than one YAML document (a \"---\" line): write every service under the one services")
	}
	out := PolicyFile{}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(doc.Services)) {
		labels := map[string]string{LabelEnabled: "true"}
		given := map[string]string{} // label: the key that set it
		for _, k := range slices.Sorted(maps.Keys(doc.Services[name])) {
			v := doc.Services[name][k]
			switch v.(type) {
			case map[string]any, []any, nil:
				errs = append(errs, fmt.Errorf("policy file: service %s: %s: want a single value", name, k))
				continue
			}
			label := LabelPrefix + strings.TrimPrefix(k, LabelPrefix)
			// "min" and "underlay.scale.min" are one setting: which one
			// counts would be a guess (the order a map is walked in).
			if prev, ok := given[label]; ok {
				errs = append(errs, fmt.Errorf("policy file: service %s: %q and %q are one setting, given twice: keep one", name, prev, k))
				continue
			}
			given[label] = k
			labels[label] = fmt.Sprint(v)
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

// maxPolicyFile bounds the policy file read: a policy is a few lines per
// service.
const maxPolicyFile = 4 << 20

// ReadPolicyFile reads the policy file at path and checks it
// (ParsePolicyFile), as FollowPolicyFile reads it again: a regular file
// of at most 4 MiB. A named pipe is refused rather than waited on (it
// would hold control's start until something wrote to it), a device
// such as /dev/zero rather than read without end.
// One that group or others may write, or that belongs to another user
// than this process's and root, is logged as a warning: whoever may
// write it sets every service's bounds.
func ReadPolicyFile(path string, log *slog.Logger) (PolicyFile, error) {
	b, st, err := regularfile.Read(path, maxPolicyFile)
	if err != nil {
		return nil, err
	}
	if p := policyFileProblem(st); p != "" {
		log.Warn("policy file "+p, "component", "scale_policy_file", "file", path)
	}
	f, err := ParsePolicyFile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// policyFileProblem says who besides its owner may write the policy file
// of st, as a warning's words; "" when no one.
func policyFileProblem(st fs.FileInfo) string {
	var probs []string
	if mode := st.Mode().Perm(); mode&0o022 != 0 {
		probs = append(probs, fmt.Sprintf("is writable by group or others (mode %#o), and whoever may write it sets every service's bounds: chmod go-w", mode))
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if p := secretfile.OwnerProblem(sys.Uid, uint32(os.Geteuid())); p != "" {
			probs = append(probs, p+"; give it to this process's user or root (chown)")
		}
	}
	return strings.Join(probs, "; it ")
}

// SetPolicies replaces the policy file's policies and lists the services
// again, so that every service's policy is made anew from them: a bound
// edited holds from the next decision, a service only the file enabled is
// let go when its entry goes.
func (c *Controller) SetPolicies(f PolicyFile) { c.setPoliciesChanged(f) }

// setPoliciesChanged is SetPolicies, doing nothing when f holds the
// policies in use; it reports whether they changed.
func (c *Controller) setPoliciesChanged(f PolicyFile) bool {
	c.mu.Lock()
	same := maps.EqualFunc(c.policies, f, maps.Equal)
	if !same {
		c.policies = f
	}
	c.mu.Unlock()
	if !same {
		c.requestResync()
	}
	return !same
}

// FollowPolicyFile reads the policy file at path every period until ctx
// ends, and puts a changed content in use (SetPolicies) once
// ParsePolicyFile accepts it. A content refused — a bad value, a file
// caught half written — or a file that cannot be read keeps the policies
// last in use, and is logged once, naming what is wrong.
func (c *Controller) FollowPolicyFile(ctx context.Context, path string, period time.Duration, log *slog.Logger) {
	log = log.With("component", "scale_policy_file", "file", path)
	// The first read is compared with the policies in use, not taken for
	// them: the file may have changed since they were read.
	var last []byte
	problem := ""
	// Who may write it was warned of by ReadPolicyFile at start; a
	// change is warned of once.
	access := ""
	if st, err := os.Stat(path); err == nil {
		access = policyFileProblem(st)
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		b, st, err := regularfile.Read(path, maxPolicyFile)
		if err == nil {
			if p := policyFileProblem(st); p != access {
				access = p
				if p != "" {
					log.Warn("policy file " + p)
				}
			}
		}
		if err == nil && bytes.Equal(b, last) {
			continue
		}
		var f PolicyFile
		if err == nil {
			f, err = ParsePolicyFile(b)
		}
		if err != nil {
			if p := err.Error(); p != problem {
				problem = p
				log.Warn("policy file not applied; the policies last read stay in use", "err", err)
			}
			continue
		}
		last, problem = b, ""
		if c.setPoliciesChanged(f) {
			log.Info("policy file changed; its policies are in use", "services", len(f))
		}
	}
}
