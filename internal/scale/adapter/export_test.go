package adapter

import "time"

// SetPruneEvery sets the time between two of l's prunes (pruneEvery), for
// the tests outside the package.
func SetPruneEvery(l *KVAlertLog, d time.Duration) { l.every = d }
