// Package doccheck holds checks that span the repository's packages: that
// what a package's doc.go says of it stays true as the code changes.
package doccheck
