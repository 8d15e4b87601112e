package doctor

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// kernelCases set up table filter's FORWARD chain in a private network
// namespace with Debian's iptables (nf_tables) and iptables-legacy, for
// TestKernelFirewall.
var kernelCases = []struct {
	name  string
	setup [][]string
}{
	{"no chain at all", nil},
	{"nft DROP", [][]string{nftDrop}},
	{"nft DROP, accept rule", [][]string{nftDrop, nftAccept}},
	{"nft DROP, accept rule with -i eth0", [][]string{nftDrop, {"iptables-nft", "-A", "FORWARD", "-i", "eth0", "-m", "physdev", "--physdev-is-bridged", "-j", "ACCEPT"}}},
	{"nft DROP, negated accept rule", [][]string{nftDrop, {"iptables-nft", "-A", "FORWARD", "-m", "physdev", "!", "--physdev-is-bridged", "-j", "ACCEPT"}}},
	{"nft DROP, commented accept rule", [][]string{nftDrop, {"iptables-nft", "-A", "FORWARD", "-m", "physdev", "--physdev-is-bridged", "-m", "comment", "--comment", "x", "-j", "ACCEPT"}}},
	{"nft DROP, accept rule after others", [][]string{nftDrop, {"iptables-nft", "-A", "FORWARD", "-p", "tcp", "-j", "ACCEPT"}, nftAccept}},
	{"nft ACCEPT", [][]string{{"iptables-nft", "-P", "FORWARD", "ACCEPT"}}},
	{"legacy DROP", [][]string{legacyDrop}},
	{"legacy DROP, accept rule", [][]string{legacyDrop, legacyAccept}},
	{"legacy DROP, accept rule with -i eth0", [][]string{legacyDrop, {"iptables-legacy", "-A", "FORWARD", "-i", "eth0", "-m", "physdev", "--physdev-is-bridged", "-j", "ACCEPT"}}},
	{"legacy DROP, negated accept rule", [][]string{legacyDrop, {"iptables-legacy", "-A", "FORWARD", "-m", "physdev", "!", "--physdev-is-bridged", "-j", "ACCEPT"}}},
	{"legacy DROP, accept rule after others", [][]string{legacyDrop, {"iptables-legacy", "-A", "FORWARD", "-i", "eth0", "-j", "ACCEPT"}, legacyAccept}},
	{"legacy ACCEPT", [][]string{{"iptables-legacy", "-P", "FORWARD", "ACCEPT"}}},
	{"both DROP, nft accepts bridged", [][]string{nftDrop, nftAccept, legacyDrop}},
	{"both DROP, both accept bridged", [][]string{nftDrop, nftAccept, legacyDrop, legacyAccept}},
}

var (
	nftDrop      = []string{"iptables-nft", "-P", "FORWARD", "DROP"}
	nftAccept    = []string{"iptables-nft", "-A", "FORWARD", "-m", "physdev", "--physdev-is-bridged", "-j", "ACCEPT"}
	legacyDrop   = []string{"iptables-legacy", "-P", "FORWARD", "DROP"}
	legacyAccept = []string{"iptables-legacy", "-A", "FORWARD", "-m", "physdev", "--physdev-is-bridged", "-j", "ACCEPT"}
)

// Environment variables by which TestKernelFirewall runs itself again:
// in a private network namespace for one case, and there, with
// CAP_NET_ADMIN alone, as the reader.
const (
	envKernelCase = "UNDERLAY_TEST_NF_CASE"
	envKernelRead = "UNDERLAY_TEST_NF_READ"
	// envKernelParentNS names the test's own network namespace, which a
	// case's must not be.
	envKernelParentNS = "UNDERLAY_TEST_NF_PARENT_NS"
)

// TestKernelFirewall reads FORWARD chains that Debian's iptables made, in
// the real kernel, and checks the reader against `iptables -S FORWARD`
// (ParseForward) of each backend the case set up. Each case runs in a
// network namespace of its own (unshare --net): the host's firewall is
// never touched. The reader runs with CAP_NET_ADMIN alone, as the agent
// does; the check, as Env.Checks makes it, runs with no iptables on PATH.
func TestKernelFirewall(t *testing.T) {
	switch {
	case os.Getenv(envKernelRead) == "1":
		kernelRead(t)
		return
	case os.Getenv(envKernelCase) != "":
		kernelCase(t)
		return
	}
	if os.Getenv("UNDERLAY_INTEGRATION") != "1" {
		t.Skip("integration test: run with UNDERLAY_INTEGRATION=1 (scripts/test.sh does)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("UNDERLAY_INTEGRATION=1 but not root: the test makes network namespaces and their firewalls")
	}
	ns, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range kernelCases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command("unshare", "--net", "--", os.Args[0], "-test.run", "^TestKernelFirewall$", "-test.v")
			cmd.Env = append(os.Environ(), envKernelCase+"="+strconv.Itoa(i), envKernelParentNS+"="+ns)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("in a private network namespace: %v\n%s", err, out)
			}
			t.Logf("%s", out)
		})
	}
}

// kernelCase sets a case up in this (private) network namespace and
// checks the reader and the check there.
func kernelCase(t *testing.T) {
	self, err := os.Readlink("/proc/self/ns/net")
	if parent := os.Getenv(envKernelParentNS); err != nil || parent == "" || self == parent {
		t.Fatalf("not in a private network namespace (%s, the test's %q; %v): refusing to touch the firewall", self, parent, err)
	}
	i, err := strconv.Atoi(os.Getenv(envKernelCase))
	if err != nil || i < 0 || i >= len(kernelCases) {
		t.Fatalf("%s=%q names no case", envKernelCase, os.Getenv(envKernelCase))
	}
	c := kernelCases[i]
	var want []ForwardChain
	for _, b := range []struct{ cmd, backend string }{{"iptables-nft", BackendNFT}, {"iptables-legacy", BackendLegacy}} {
		if !slices.ContainsFunc(c.setup, func(a []string) bool { return a[0] == b.cmd }) {
			continue
		}
		for _, a := range c.setup {
			if a[0] == b.cmd {
				run(t, a...)
			}
		}
		out := run(t, b.cmd, "-S", "FORWARD")
		p, bridged, err := ParseForward(out)
		if err != nil {
			t.Fatalf("%s -S FORWARD: %v\n%s", b.cmd, err, out)
		}
		t.Logf("%s -S FORWARD:\n%s", b.cmd, out)
		want = append(want, ForwardChain{Backend: b.backend, Policy: p, AcceptsBridged: bridged})
	}

	// The reader, with CAP_NET_ADMIN alone.
	cmd := exec.Command("setpriv", "--inh-caps=-all,+net_admin", "--ambient-caps=-all,+net_admin", "--bounding-set=-all,+net_admin",
		"--", os.Args[0], "-test.run", "^TestKernelFirewall$")
	cmd.Env = append(os.Environ(), envKernelRead+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("reader: %v\n%s", err, out)
	}
	var got kernelReading
	line, _, _ := strings.Cut(string(out), "\n")
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("reader's answer %q: %v", out, err)
	}
	if got.CapEff != "0000000000001000" {
		t.Errorf("reader ran with capabilities %s, want CAP_NET_ADMIN (0000000000001000) alone", got.CapEff)
	}
	if got.Err != "" || !slices.Equal(got.Chains, want) {
		t.Errorf("read %+v (error %q), iptables -S says %+v", got.Chains, got.Err, want)
	}

	// The check as the doctor runs it, with no iptables to run.
	t.Setenv("PATH", "")
	var check NetfilterCheck
	for _, c := range (Env{}).Checks() {
		if n, ok := c.(NetfilterCheck); ok {
			check = n
		}
	}
	check.Files = fakeFiles{BridgeNFCallIPTables: "1\n"}
	rs := check.Run(context.Background(), t.Logf)
	trapped := slices.ContainsFunc(want, func(c ForwardChain) bool { return c.Policy == "DROP" && !c.AcceptsBridged })
	if len(rs) != 1 || rs[0].Status != map[bool]Status{true: Warn, false: OK}[trapped] {
		t.Errorf("check: %+v, want a warning: %v", rs, trapped)
	}
	t.Logf("check: %s %s (fix %q)", rs[0].Status, rs[0].Message, rs[0].Fix)
}

// kernelReading is the reader's answer, as kernelRead prints it.
type kernelReading struct {
	CapEff string
	Chains []ForwardChain
	Err    string
}

// kernelRead prints, on one line, the reader's answer and its
// capabilities; then, for fixtures, what the kernel said, in hex.
func kernelRead(t *testing.T) {
	var r kernelReading
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			r.CapEff = strings.TrimSpace(v)
		}
	}
	r.Chains, err = KernelFirewall{}.Forward(context.Background())
	if err != nil {
		r.Err = err.Error()
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s\n", b)
	chain, rules, err := readNFTForward()
	fmt.Printf("nft chain: %s (%v)\n", hex.EncodeToString(chain), err)
	for _, r := range rules {
		fmt.Printf("nft rule: %s\n", hex.EncodeToString(r))
	}
	info, entries, err := readLegacyFilter()
	fmt.Printf("legacy info: %s (%v)\nlegacy entries: %s\n", hex.EncodeToString(info), err, hex.EncodeToString(entries))
}

// run runs a command, failing t unless it succeeds, and returns its output.
func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// acceptBridged is the rule that accepts all bridged traffic, as
// `iptables -S` prints it (acceptBridgedArgs).
var acceptBridged = strings.Fields("-A FORWARD " + acceptBridgedArgs)

// ParseForward reads `iptables -S FORWARD`: the chain's policy, and
// whether a rule accepts all bridged traffic. TestKernelFirewall holds
// the kernel readers to it.
func ParseForward(out string) (policy string, acceptsBridged bool, err error) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "-P" && f[1] == "FORWARD":
			policy = f[2]
		case slices.Equal(f, acceptBridged):
			acceptsBridged = true
		}
	}
	if policy == "" {
		return "", false, errors.New("iptables -S FORWARD shows no policy")
	}
	return policy, acceptsBridged, nil
}
