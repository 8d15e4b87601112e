package doctor

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestParseForwardFixtures decodes what the kernel answered the readers
// for chains the fixtures' iptables commands made (testdata/forward: each
// file names them; captured on x86-64, whose layout arm64 shares).
func TestParseForwardFixtures(t *testing.T) {
	tests := []struct {
		file string
		want []ForwardChain
	}{
		{"nft-drop", []ForwardChain{{BackendNFT, "DROP", false}}},
		{"nft-accept-policy", []ForwardChain{{BackendNFT, "ACCEPT", false}}},
		{"nft-drop-accept", []ForwardChain{{BackendNFT, "DROP", true}}},
		// Each narrower rule leaves some bridged traffic to the policy.
		{"nft-drop-iface", []ForwardChain{{BackendNFT, "DROP", false}}},
		{"nft-drop-negated", []ForwardChain{{BackendNFT, "DROP", false}}},
		{"nft-drop-physdev-in", []ForwardChain{{BackendNFT, "DROP", false}}},
		{"nft-drop-physdev-return", []ForwardChain{{BackendNFT, "DROP", false}}},
		{"legacy-drop", []ForwardChain{{BackendLegacy, "DROP", false}}},
		{"legacy-accept-policy", []ForwardChain{{BackendLegacy, "ACCEPT", true}}},
		{"legacy-drop-accept", []ForwardChain{{BackendLegacy, "DROP", true}}},
		{"legacy-drop-iface", []ForwardChain{{BackendLegacy, "DROP", false}}},
		{"legacy-drop-negated", []ForwardChain{{BackendLegacy, "DROP", false}}},
		{"legacy-drop-physdev-return", []ForwardChain{{BackendLegacy, "DROP", false}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := parseFixture(t, filepath.Join("testdata", "forward", tt.file+".txt"))
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// parseFixture decodes a fixture's kernel answers as KernelFirewall does.
func parseFixture(t *testing.T, path string) ([]ForwardChain, error) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var chain, info, entries []byte
	var rules [][]byte
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ": ")
		if !ok || strings.HasPrefix(l, "#") {
			continue
		}
		h, err := hex.DecodeString(strings.TrimSpace(v))
		if err != nil {
			t.Fatalf("%s: %q: %v", path, l, err)
		}
		switch k {
		case "nft chain":
			chain = h
		case "nft rule":
			rules = append(rules, h)
		case "legacy info":
			info = h
		case "legacy entries":
			entries = h
		}
	}
	var out []ForwardChain
	if len(chain) > 0 {
		c, ok, err := NFTForward(chain, rules)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, c)
		}
	}
	if len(info) > 0 {
		c, err := LegacyForward(info, entries)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// TestParseForwardCutShort: kernel answers cut anywhere are never a
// panic, and legacy answers cut short are an error.
func TestParseForwardCutShort(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "forward", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("fixtures: %v %v", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var info []byte
		for _, l := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(l, ": ")
			h, err := hex.DecodeString(strings.TrimSpace(v))
			if err != nil || len(h) == 0 || strings.HasPrefix(l, "#") {
				continue
			}
			for n := range len(h) {
				switch k {
				case "nft chain":
					parseNFTChain(h[:n])
				case "nft rule":
					parseNFTRule(h[:n])
				case "legacy info":
					info = h
					if _, err := parseIPTInfo(h[:n]); err == nil {
						t.Errorf("%s: ipt_getinfo cut to %d bytes read", f, n)
					}
				case "legacy entries":
					if c, err := LegacyForward(info, h[:n]); err == nil {
						t.Errorf("%s: entries cut to %d bytes read as %+v", f, n, c)
					}
				}
			}
		}
	}
}

// TestNFTForwardOtherChain: a kernel that does not filter the rules'
// dump by chain answers other chains' rules too; their accept rules are
// not FORWARD's.
func TestNFTForwardOtherChain(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "forward", "nft-drop-accept.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var chain []byte
	var rules [][]byte
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ": ")
		h, _ := hex.DecodeString(strings.TrimSpace(v))
		switch k {
		case "nft chain":
			chain = h
		case "nft rule":
			// The same rule in chain FORWARX.
			rules = append(rules, bytes.ReplaceAll(h, []byte("FORWARD\x00"), []byte("FORWARX\x00")))
		}
	}
	c, ok, err := NFTForward(chain, rules)
	if err != nil || !ok || c.AcceptsBridged || len(rules) != 2 {
		t.Errorf("got %+v, %v, %v from %d rules; want FORWARD's policy and no accept rule", c, ok, err, len(rules))
	}
}
