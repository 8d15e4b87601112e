package testnet

import (
	"context"
	"net"
	"strings"
	"testing"
)

func TestNoNameService(t *testing.T) {
	NoNameService()
	_, err := net.DefaultResolver.LookupHost(context.Background(), "consul.invalid")
	if err == nil || !strings.Contains(err.Error(), "no name service") {
		t.Fatalf("lookup of consul.invalid: %v, want the test's refusal", err)
	}
}
