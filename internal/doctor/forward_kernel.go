package doctor

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"unsafe"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// KernelFirewall reads the FORWARD chains from the kernel itself, so that
// the agent's image, which has no iptables, can: nf_tables over netlink,
// x_tables (iptables-legacy) over getsockopt on a UDP socket. Both need
// CAP_NET_ADMIN and nothing else (no CAP_NET_RAW: iptables-legacy's raw
// socket is only its habit; any IPv4 socket reaches x_tables).
type KernelFirewall struct{}

// Forward implements Firewall: the FORWARD chain of table filter of each
// backend that has one. The kernel answers at once, without waiting on
// anything: the context is not consulted.
func (KernelFirewall) Forward(context.Context) ([]ForwardChain, error) {
	var chains []ForwardChain
	var errs []error
	if c, ok, err := nftForward(); err != nil {
		errs = append(errs, err)
	} else if ok {
		chains = append(chains, c)
	}
	if c, ok, err := legacyForward(); err != nil {
		errs = append(errs, err)
	} else if ok {
		chains = append(chains, c)
	}
	switch len(errs) {
	case 0:
		return chains, nil
	case 1:
		return chains, errs[0]
	}
	// One line, as the check's message quotes it.
	return chains, fmt.Errorf("%w; %w", errs[0], errs[1])
}

// nftForward reads nf_tables' chain FORWARD of table ip filter; ok is
// false when it does not exist or is no base chain (nothing hooks it).
func nftForward() (c ForwardChain, ok bool, err error) {
	chain, rules, err := readNFTForward()
	if err != nil || chain == nil {
		return c, false, err
	}
	return NFTForward(chain, rules)
}

// nf_tables attributes naming what is asked for.
const (
	nftaChainTable = 1
	nftaChainName  = 3
)

// readNFTForward returns the messages nf_tables answers for chain ip
// filter FORWARD and for its rules; chain is nil when the table or the
// chain does not exist (ENOENT) or the kernel has no nf_tables.
func readNFTForward() (chain []byte, rules [][]byte, err error) {
	req := nftRequest(unix.NFT_MSG_GETCHAIN, 0)
	req.AddData(nl.NewRtAttr(nftaChainTable, nl.ZeroTerminated(nftTable)))
	req.AddData(nl.NewRtAttr(nftaChainName, nl.ZeroTerminated(nftChain)))
	msgs, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EPROTONOSUPPORT):
		return nil, nil, nil
	case err != nil:
		return nil, nil, fmt.Errorf("read nf_tables chain ip %s %s: %w", nftTable, nftChain, err)
	case len(msgs) != 1:
		return nil, nil, fmt.Errorf("read nf_tables chain ip %s %s: %d answers", nftTable, nftChain, len(msgs))
	}
	req = nftRequest(unix.NFT_MSG_GETRULE, unix.NLM_F_DUMP)
	req.AddData(nl.NewRtAttr(nftaRuleTable, nl.ZeroTerminated(nftTable)))
	req.AddData(nl.NewRtAttr(nftaRuleChain, nl.ZeroTerminated(nftChain)))
	rs, err := req.Execute(unix.NETLINK_NETFILTER, unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE)
	if errors.Is(err, unix.ENOENT) { // removed since: nothing left to drop
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read nf_tables rules of chain ip %s %s: %w", nftTable, nftChain, err)
	}
	return msgs[0], rs, nil
}

// nftRequest is a nf_tables request of type t for family ip.
func nftRequest(t, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_NFTABLES<<8|t, flags)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.NFPROTO_IPV4, Version: unix.NFNETLINK_V0})
	return req
}

// IPTablesNames lists the legacy tables of this network namespace; absent
// while ip_tables is not loaded.
const IPTablesNames = "/proc/net/ip_tables_names"

// x_tables' getsockopt options (linux/netfilter_ipv4/ip_tables.h).
const (
	iptSoGetInfo    = 64
	iptSoGetEntries = 65
)

// legacyForward reads x_tables' table filter's FORWARD chain; ok is false
// when the namespace has no legacy table filter.
func legacyForward() (c ForwardChain, ok bool, err error) {
	info, entries, err := readLegacyFilter()
	if err != nil || info == nil {
		return c, false, err
	}
	c, err = LegacyForward(info, entries)
	return c, err == nil, err
}

// readLegacyFilter returns table filter's struct ipt_getinfo and its
// entries (after struct ipt_get_entries' header); nil when IPTablesNames
// does not list it. Only then is the table asked for: asking for a table
// the namespace lacks makes the kernel create it (and load its module),
// hooking a legacy FORWARD chain into every forwarded packet's path.
func readLegacyFilter() (info, entries []byte, err error) {
	names, err := os.ReadFile(IPTablesNames)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list legacy iptables tables: %w", err)
	}
	if !hasLine(names, "filter") {
		return nil, nil, nil
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("read legacy table filter: socket: %w", err)
	}
	defer unix.Close(fd)
	// The table may change between the two reads; the kernel then says
	// EAGAIN (its size changed), and both are read again.
	for range 3 {
		info = make([]byte, iptGetinfoLen)
		copy(info, "filter")
		if err := getsockopt(fd, iptSoGetInfo, info); err != nil {
			return nil, nil, fmt.Errorf("read legacy table filter: IPT_SO_GET_INFO: %w", err)
		}
		in, err := parseIPTInfo(info)
		if err != nil {
			return nil, nil, err
		}
		buf := make([]byte, iptGetEntriesHeaderLen+int(in.Size))
		copy(buf, "filter")
		binary.NativeEndian.PutUint32(buf[32:], in.Size)
		err = getsockopt(fd, iptSoGetEntries, buf)
		if errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read legacy table filter: IPT_SO_GET_ENTRIES: %w", err)
		}
		return info, buf[iptGetEntriesHeaderLen:], nil
	}
	return nil, nil, errors.New("read legacy table filter: it kept changing while read")
}

// getsockopt reads option opt of level IPPROTO_IP into b, which holds the
// request; x/sys/unix has no getsockopt into a caller's buffer.
func getsockopt(fd, opt int, b []byte) error {
	n := uint32(len(b))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_IP, uintptr(opt),
		uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// hasLine reports whether b has a line that is s.
func hasLine(b []byte, s string) bool {
	for _, l := range bytes.Split(b, []byte("\n")) {
		if string(bytes.TrimSpace(l)) == s {
			return true
		}
	}
	return false
}
