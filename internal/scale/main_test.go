package scale

import (
	"testing"

	"github.com/underlay/underlay/internal/testnet"
)

// TestMain keeps the tests, which reach made-up names through dialers of
// their own, from asking the machine's resolver.
func TestMain(m *testing.M) { testnet.Main(m) }
