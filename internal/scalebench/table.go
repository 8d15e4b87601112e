package scalebench

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Table is rows of labelled figures printed with aligned columns.
type Table struct {
	Header []string
	Rows   [][]string
}

// Add appends a row; cells beyond the header are kept, missing ones blank.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Write prints the table: each column as wide as its widest cell, two
// spaces between columns, a rule under the header.
func (t *Table) Write(w io.Writer) error {
	width := make([]int, len(t.Header))
	grow := func(row []string) {
		for i, c := range row {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	grow(t.Header)
	for _, r := range t.Rows {
		grow(r)
	}
	line := func(row []string) string {
		cells := make([]string, len(width))
		for i := range width {
			c := ""
			if i < len(row) {
				c = row[i]
			}
			cells[i] = c + strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
		}
		return strings.TrimRight(strings.Join(cells, "  "), " ") + "\n"
	}
	rule := make([]string, len(width))
	for i, n := range width {
		rule[i] = strings.Repeat("-", n)
	}
	var b strings.Builder
	b.WriteString(line(t.Header))
	b.WriteString(line(rule))
	for _, r := range t.Rows {
		b.WriteString(line(r))
	}
	_, err := fmt.Fprint(w, b.String())
	return err
}
