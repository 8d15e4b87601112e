// Package testnet keeps a unit test package off the machine's name
// service. Such tests reach made-up names (consul.example) through
// dialers of their own, to loopback; a test whose dialer failed to apply
// must fail, not ask the machine's resolver, off this machine. It imports
// only the standard library.
package testnet

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
)

// NoNameService makes every DNS lookup of the process fail (/etc/hosts
// still answers): call it from TestMain, before m.Run.
func NoNameService() {
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(_ context.Context, network, address string) (net.Conn, error) {
		return nil, fmt.Errorf("unit tests: no name service (a lookup would have gone to %s over %s)", address, network)
	}}
}

// Main is a TestMain that runs m with NoNameService.
func Main(m *testing.M) {
	NoNameService()
	os.Exit(m.Run())
}
