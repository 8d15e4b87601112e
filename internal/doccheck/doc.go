// Package doccheck holds checks that span the repository's packages: that
// what a package's doc.go says of it stays true as the code changes, and
// that the metrics the READMEs name are those the code defines, README's
// Layout names every package, and their links resolve.
package doccheck
