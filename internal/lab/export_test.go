package lab

// OwnLinkNames are the names of every link lab name may make in the root
// namespace (ownLinkNames), for the integration tests outside the package.
func OwnLinkNames(name string) []string { return ownLinkNames(name) }
