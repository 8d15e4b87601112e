package kvtest

// SetWaitHook sets kv's waitHook, called with the store's lock held as a
// Wait starts to block. Set it before any Wait.
func SetWaitHook(kv *KV, f func()) { kv.waitHook = f }
