package doctor

// The FORWARD chain as the kernel gives it, read without the iptables
// binary (the agent's image has none): nf_tables over netlink
// (iptables-nft, Debian's default iptables) and x_tables over getsockopt
// (iptables-legacy). This file is the pure half: it decodes the kernel's
// bytes; forward_kernel.go asks for them.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"
)

// ForwardChain is one netfilter backend's FORWARD chain in table filter.
type ForwardChain struct {
	// Backend is "nf_tables" (iptables-nft) or "legacy" (iptables-legacy).
	Backend string
	// Policy is the chain's policy: ACCEPT or DROP.
	Policy string
	// AcceptsBridged is true when a rule of the chain itself accepts all
	// bridged traffic: `-m physdev --physdev-is-bridged -j ACCEPT` and
	// nothing more (acceptBridged); rules in chains it jumps to are not
	// followed, as `iptables -S FORWARD` does not show them.
	AcceptsBridged bool
}

// Backends' names, as ForwardChain.Backend gives them.
const (
	BackendNFT    = "nf_tables"
	BackendLegacy = "legacy"
)

// Netfilter verdicts (linux/netfilter.h) and x_tables' physdev match
// (linux/netfilter/xt_physdev.h).
const (
	nfDrop   = 0
	nfAccept = 1

	physdevOpBridged = 0x04
	// physdevInfoLen is sizeof(struct xt_physdev_info): four 16-byte
	// names and masks, then invert and bitmask.
	physdevInfoLen = 4*16 + 2
)

// verdictName names a chain policy; "" for one iptables cannot set.
func verdictName(v int32) string {
	switch v {
	case nfDrop:
		return "DROP"
	case nfAccept:
		return "ACCEPT"
	}
	return ""
}

// physdevBridgedOnly reports whether info, a struct xt_physdev_info,
// matches all bridged traffic and nothing narrower: --physdev-is-bridged
// alone, not negated.
func physdevBridgedOnly(info []byte) bool {
	if len(info) < physdevInfoLen {
		return false
	}
	invert, bitmask := info[64], info[65]
	return bitmask == physdevOpBridged && invert == 0
}

// NFTForward reads nf_tables' chain FORWARD from the kernel's answers:
// the chain's message and its rules'. ok is false for a regular chain,
// which no hook reaches (but by a jump) and so drops nothing by policy.
func NFTForward(chain []byte, rules [][]byte) (c ForwardChain, ok bool, err error) {
	c = ForwardChain{Backend: BackendNFT}
	if c.Policy, err = parseNFTChain(chain); err != nil || c.Policy == "" {
		return c, false, err
	}
	for _, r := range rules {
		if !nftRuleInForward(r) { // a kernel that does not filter the dump
			continue
		}
		a, err := parseNFTRule(r)
		if err != nil {
			return c, false, err
		}
		c.AcceptsBridged = c.AcceptsBridged || a
	}
	return c, true, nil
}

// LegacyForward reads x_tables' table filter's FORWARD chain from the
// kernel's answers: its struct ipt_getinfo and its entries.
func LegacyForward(info, entries []byte) (ForwardChain, error) {
	in, err := parseIPTInfo(info)
	if err != nil {
		return ForwardChain{Backend: BackendLegacy}, err
	}
	return parseIPTForward(in, entries)
}

// nlAttr is one netlink attribute: its type (flags cleared) and payload.
type nlAttr struct {
	typ  uint16
	data []byte
}

// nlaTypeMask clears NLA_F_NESTED and NLA_F_NET_BYTEORDER from a type.
const nlaTypeMask = 0x3fff

// parseAttrs splits b into netlink attributes (native-endian headers,
// 4-byte aligned).
func parseAttrs(b []byte) ([]nlAttr, error) {
	var out []nlAttr
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("netlink attribute header cut short: %d bytes", len(b))
		}
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		if n < 4 || n > len(b) {
			return nil, fmt.Errorf("netlink attribute of length %d in %d bytes", n, len(b))
		}
		out = append(out, nlAttr{typ: binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask, data: b[4:n]})
		if a := (n + 3) &^ 3; a < len(b) {
			b = b[a:]
		} else {
			b = nil
		}
	}
	return out, nil
}

// attr returns the first attribute of type t in as; nil when none.
func attr(as []nlAttr, t uint16) []byte {
	for _, a := range as {
		if a.typ == t {
			return a.data
		}
	}
	return nil
}

// nf_tables' table and chain, as iptables-nft names them.
const (
	nftTable = "filter"
	nftChain = "FORWARD"
)

// nftRuleInForward reports whether a rule's message names table filter's
// chain FORWARD.
func nftRuleInForward(msg []byte) bool {
	if len(msg) < nfgenmsgLen {
		return false
	}
	as, err := parseAttrs(msg[nfgenmsgLen:])
	return err == nil && cString(attr(as, nftaRuleTable)) == nftTable && cString(attr(as, nftaRuleChain)) == nftChain
}

// nf_tables attributes (linux/netfilter/nf_tables.h).
const (
	nftaRuleTable = 1
	nftaRuleChain = 2

	nftaChainPolicy = 5
	nftaChainHook   = 4

	nftaRuleExpressions = 4
	nftaRuleUserdata    = 7

	nftaListElem = 1
	nftaExprName = 1
	nftaExprData = 2

	nftaMatchName = 1
	nftaMatchInfo = 3

	nftaImmediateDreg = 1
	nftaImmediateData = 2
	nftaDataVerdict   = 2
	nftaVerdictCode   = 1
	nftRegVerdict     = 0

	// nfgenmsgLen is sizeof(struct nfgenmsg), before a message's attributes.
	nfgenmsgLen = 4
)

// parseNFTChain reads a NFT_MSG_NEWCHAIN message (its nfgenmsg and
// attributes): the chain's policy, or "" for a regular chain, which no
// hook reaches but by a jump and so drops nothing by policy.
func parseNFTChain(msg []byte) (policy string, err error) {
	if len(msg) < nfgenmsgLen {
		return "", fmt.Errorf("nf_tables chain message of %d bytes", len(msg))
	}
	as, err := parseAttrs(msg[nfgenmsgLen:])
	if err != nil {
		return "", fmt.Errorf("nf_tables chain: %w", err)
	}
	if attr(as, nftaChainHook) == nil {
		return "", nil
	}
	p := attr(as, nftaChainPolicy)
	if len(p) != 4 {
		return "", errors.New("nf_tables base chain without a policy")
	}
	v := int32(binary.BigEndian.Uint32(p))
	if policy = verdictName(v); policy == "" {
		return "", fmt.Errorf("nf_tables chain policy %d is neither ACCEPT nor DROP", v)
	}
	return policy, nil
}

// parseNFTRule reads a NFT_MSG_NEWRULE message (its nfgenmsg and
// attributes): whether the rule is iptables-nft's `-m physdev
// --physdev-is-bridged -j ACCEPT` and nothing more, that is the
// expressions x_tables' match physdev (its info as physdevBridgedOnly
// wants), optionally a counter, then an immediate ACCEPT verdict. Any
// other expression (an interface's meta and cmp, a protocol's payload)
// narrows the rule; a comment (userdata, which iptables-nft shows as
// `-m comment`) makes it another rule than ParseForward's.
func parseNFTRule(msg []byte) (acceptsBridged bool, err error) {
	if len(msg) < nfgenmsgLen {
		return false, fmt.Errorf("nf_tables rule message of %d bytes", len(msg))
	}
	as, err := parseAttrs(msg[nfgenmsgLen:])
	if err != nil {
		return false, fmt.Errorf("nf_tables rule: %w", err)
	}
	if attr(as, nftaRuleUserdata) != nil {
		return false, nil
	}
	elems, err := parseAttrs(attr(as, nftaRuleExpressions))
	if err != nil {
		return false, fmt.Errorf("nf_tables rule expressions: %w", err)
	}
	var physdev, accept bool
	for i, e := range elems {
		if e.typ != nftaListElem {
			return false, fmt.Errorf("nf_tables rule expression of type %d", e.typ)
		}
		ex, err := parseAttrs(e.data)
		if err != nil {
			return false, fmt.Errorf("nf_tables rule expression %d: %w", i, err)
		}
		data, err := parseAttrs(attr(ex, nftaExprData))
		if err != nil {
			return false, fmt.Errorf("nf_tables rule expression %d: %w", i, err)
		}
		switch name := cString(attr(ex, nftaExprName)); {
		case name == "match" && !physdev && !accept:
			if cString(attr(data, nftaMatchName)) != "physdev" || !physdevBridgedOnly(attr(data, nftaMatchInfo)) {
				return false, nil
			}
			physdev = true
		case name == "counter" && !accept:
		case name == "immediate" && physdev && !accept:
			if accept = immediateAccepts(data); !accept {
				return false, nil
			}
		default:
			return false, nil
		}
	}
	return physdev && accept, nil
}

// immediateAccepts reports whether an immediate expression's attributes
// set the verdict register to ACCEPT.
func immediateAccepts(data []nlAttr) bool {
	reg := attr(data, nftaImmediateDreg)
	if len(reg) != 4 || binary.BigEndian.Uint32(reg) != nftRegVerdict {
		return false
	}
	d, err := parseAttrs(attr(data, nftaImmediateData))
	if err != nil {
		return false
	}
	v, err := parseAttrs(attr(d, nftaDataVerdict))
	if err != nil {
		return false
	}
	code := attr(v, nftaVerdictCode)
	return len(code) == 4 && binary.BigEndian.Uint32(code) == nfAccept
}

// cString is b up to its first NUL.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// x_tables' structures (linux/netfilter_ipv4/ip_tables.h,
// linux/netfilter/x_tables.h), as this machine lays them out: the kernel
// aligns entries to its alignment of a 64-bit counter (XT_ALIGN).
const (
	xtAlign = int(unsafe.Alignof(uint64(0)))

	// iptGetinfoLen is sizeof(struct ipt_getinfo): name[32], valid_hooks,
	// hook_entry[5], underflow[5], num_entries, size.
	iptGetinfoLen = 32 + 4 + 5*4 + 5*4 + 4 + 4
	// iptIPLen is sizeof(struct ipt_ip), the addresses, interfaces,
	// protocol and flags an entry matches.
	iptIPLen = 84
	// iptEntryLen is sizeof(struct ipt_entry): ipt_ip, nfcache,
	// target_offset, next_offset, comefrom, then two 64-bit counters.
	iptEntryLen = (iptIPLen+4+2+2+4+xtAlign-1)/xtAlign*xtAlign + 16
	// xtEntryMatchLen is sizeof(struct xt_entry_match) (and of
	// xt_entry_target) as userspace sees it: size, name[29], revision.
	xtEntryMatchLen = 32
	// xtNameOffset is the name's offset in either.
	xtNameOffset = 2

	// iptGetEntriesHeaderLen is the offset of the entries in struct
	// ipt_get_entries: name[32] and size, aligned as an entry.
	iptGetEntriesHeaderLen = (32 + 4 + xtAlign - 1) / xtAlign * xtAlign

	nfInetForward = 2
)

// iptInfo is what IPT_SO_GET_INFO says of a table (struct ipt_getinfo).
type iptInfo struct {
	ValidHooks uint32
	HookEntry  [5]uint32
	Underflow  [5]uint32
	NumEntries uint32
	Size       uint32
}

// parseIPTInfo reads a struct ipt_getinfo.
func parseIPTInfo(b []byte) (iptInfo, error) {
	var in iptInfo
	if len(b) < iptGetinfoLen {
		return in, fmt.Errorf("ipt_getinfo of %d bytes, want %d", len(b), iptGetinfoLen)
	}
	u := func(off int) uint32 { return binary.NativeEndian.Uint32(b[off : off+4]) }
	in.ValidHooks = u(32)
	for i := range 5 {
		in.HookEntry[i] = u(36 + 4*i)
		in.Underflow[i] = u(56 + 4*i)
	}
	in.NumEntries, in.Size = u(76), u(80)
	return in, nil
}

// parseIPTForward reads the FORWARD chain out of a table's entries (the
// entry table IPT_SO_GET_ENTRIES returns, after its header): the policy
// is the standard verdict of the hook's underflow entry, and the rules
// are the entries from the hook's entry up to it.
func parseIPTForward(info iptInfo, entries []byte) (ForwardChain, error) {
	c := ForwardChain{Backend: BackendLegacy}
	if info.ValidHooks&(1<<nfInetForward) == 0 {
		return c, errors.New("legacy table filter has no FORWARD hook")
	}
	if len(entries) != int(info.Size) {
		return c, fmt.Errorf("legacy table filter of %d bytes, %d read", info.Size, len(entries))
	}
	start, end := int(info.HookEntry[nfInetForward]), int(info.Underflow[nfInetForward])
	if start > end || end+iptEntryLen > len(entries) {
		return c, fmt.Errorf("legacy FORWARD entries %d to %d out of %d bytes", start, end, len(entries))
	}
	for off := start; off < end; {
		e, next, err := iptEntry(entries, off)
		if err != nil {
			return c, err
		}
		if iptAcceptsBridged(e) {
			c.AcceptsBridged = true
		}
		off = next
	}
	e, _, err := iptEntry(entries, end)
	if err != nil {
		return c, err
	}
	v, ok := iptStandardVerdict(e)
	if !ok {
		return c, errors.New("legacy FORWARD policy entry has no standard target")
	}
	// A standard target's verdict is -NF_DROP-1 or -NF_ACCEPT-1.
	if c.Policy = verdictName(-v - 1); c.Policy == "" {
		return c, fmt.Errorf("legacy FORWARD policy verdict %d is neither ACCEPT nor DROP", v)
	}
	return c, nil
}

// iptEntry returns the entry at off in entries, and the next one's offset.
func iptEntry(entries []byte, off int) (e []byte, next int, err error) {
	if off < 0 || off+iptEntryLen > len(entries) {
		return nil, 0, fmt.Errorf("legacy entry at %d out of %d bytes", off, len(entries))
	}
	n := int(binary.NativeEndian.Uint16(entries[off+iptIPLen+6:]))
	if n < iptEntryLen || off+n > len(entries) {
		return nil, 0, fmt.Errorf("legacy entry at %d of size %d out of %d bytes", off, n, len(entries))
	}
	return entries[off : off+n], off + n, nil
}

// iptTarget returns an entry's target (header and data).
func iptTarget(e []byte) []byte {
	t := int(binary.NativeEndian.Uint16(e[iptIPLen+4:]))
	if t < iptEntryLen || t+xtEntryMatchLen > len(e) {
		return nil
	}
	return e[t:]
}

// iptStandardVerdict returns the verdict of an entry's standard target
// (name ""): negative for a verdict, else a jump's offset.
func iptStandardVerdict(e []byte) (int32, bool) {
	t := iptTarget(e)
	if t == nil || len(t) < xtEntryMatchLen+4 || cString(t[xtNameOffset:xtNameOffset+29]) != "" {
		return 0, false
	}
	return int32(binary.NativeEndian.Uint32(t[xtEntryMatchLen:])), true
}

// iptAcceptsBridged reports whether an entry is `-m physdev
// --physdev-is-bridged -j ACCEPT` and nothing more: it matches any
// address, interface and protocol, has the one match physdev (as
// physdevBridgedOnly wants) and the standard target ACCEPT.
func iptAcceptsBridged(e []byte) bool {
	for _, b := range e[:iptIPLen] {
		if b != 0 {
			return false
		}
	}
	t := int(binary.NativeEndian.Uint16(e[iptIPLen+4:]))
	if t < iptEntryLen || t > len(e) {
		return false
	}
	matches := e[iptEntryLen:t]
	if len(matches) < xtEntryMatchLen {
		return false
	}
	n := int(binary.NativeEndian.Uint16(matches[0:2]))
	if n != len(matches) || cString(matches[xtNameOffset:xtNameOffset+29]) != "physdev" ||
		!physdevBridgedOnly(matches[xtEntryMatchLen:]) {
		return false
	}
	v, ok := iptStandardVerdict(e)
	return ok && v == -nfAccept-1
}
