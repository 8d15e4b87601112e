package register

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// metadata is a container's registrator-style SERVICE_* settings, read from
// its environment and then its labels, so labels win.
type metadata struct {
	base  map[string]setting         // SERVICE_NAME → base["name"]
	ports map[int]map[string]setting // SERVICE_80_NAME → ports[80]["name"]
}

// setting is one SERVICE_* value and where it came from, for warnings.
type setting struct {
	value  string
	source string // "SERVICE_80_NAME"
}

var attrKey = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

const servicePrefix = "SERVICE_"

// maxSettings is how many SERVICE_* entries of a container are read, and
// maxSettingValue the longest value taken, in bytes: Docker bounds
// neither, and every service of the container goes through its settings.
const (
	maxSettings     = 1024
	maxSettingValue = 4096
)

func parseMetadata(c Container, warn func(key, value, problem string)) metadata {
	md := metadata{base: map[string]setting{}, ports: map[int]map[string]setting{}}
	read, skipped := 0, 0
	add := func(key, value string) {
		rest, ok := strings.CutPrefix(key, servicePrefix)
		if !ok || rest == "" {
			return
		}
		if read == maxSettings {
			skipped++
			return
		}
		read++
		if len(value) > maxSettingValue {
			warn(key, value, fmt.Sprintf("%d bytes, longer than the %d bytes a setting may have; ignored", len(value), maxSettingValue))
			return
		}
		attr := strings.ToLower(rest)
		target := md.base
		if first, tail, found := strings.Cut(attr, "_"); found && first != "" && first[0] >= '0' && first[0] <= '9' {
			port, err := strconv.Atoi(first)
			if err != nil || port < 1 || port > 65535 {
				warn(key, value, "not a port number between 1 and 65535 after SERVICE_; ignored")
				return
			}
			if md.ports[port] == nil {
				md.ports[port] = map[string]setting{}
			}
			target, attr = md.ports[port], tail
		}
		if !attrKey.MatchString(attr) {
			warn(key, value, "attribute name may hold only letters, digits, '_' and '-'; ignored")
			return
		}
		target[attr] = setting{value: value, source: key}
	}
	for _, kv := range c.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			add(k, v)
		}
	}
	// Sorted, so keys that differ only in case after SERVICE_ resolve the
	// same way every time (and the same are read past maxSettings).
	var keys []string
	for k := range c.Labels {
		if strings.HasPrefix(k, servicePrefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		add(k, c.Labels[k])
	}
	if skipped > 0 {
		warn("", "", fmt.Sprintf("%d SERVICE_* settings; the first %d (environment, then labels in key order) are read and %d ignored", read+skipped, maxSettings, skipped))
	}
	return md
}

// forPort merges the container-wide settings with those of one port; the
// port's own win. fromPort reports which keys the port set itself.
func (md metadata) forPort(port int) (attrs map[string]setting, fromPort map[string]bool) {
	attrs = make(map[string]setting, len(md.base))
	fromPort = map[string]bool{}
	for k, v := range md.base {
		attrs[k] = v
	}
	for k, v := range md.ports[port] {
		attrs[k] = v
		fromPort[k] = true
	}
	return attrs, fromPort
}

// get is the setting key of port, else the container-wide one; as
// forPort, without merging every setting.
func (md metadata) get(port int, key string) (setting, bool) {
	if s, ok := md.ports[port][key]; ok {
		return s, true
	}
	s, ok := md.base[key]
	return s, ok
}

func truthy(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "0", "false", "no", "off":
		return false
	}
	return true
}
