package scalebench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Ints parses a list of positive whole numbers separated by spaces or
// commas ("3 6 10"); an empty s gives def. A bad element is named.
func Ints(s string, def []int) ([]int, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
	if len(fields) == 0 {
		return def, nil
	}
	out := make([]int, 0, len(fields))
	for _, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q in %q: want a positive whole number", f, s)
		}
		out = append(out, n)
	}
	return out, nil
}

// EnvInts is Ints of environment variable name, the error naming it.
func EnvInts(name string, def ...int) ([]int, error) {
	v, err := Ints(os.Getenv(name), def)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return v, nil
}

// EnvInt is the single number environment variable name holds, def when
// it is empty.
func EnvInt(name string, def int) (int, error) {
	v, err := EnvInts(name, def)
	if err != nil {
		return 0, err
	}
	if len(v) != 1 {
		return 0, fmt.Errorf("%s=%q: want one number", name, os.Getenv(name))
	}
	return v[0], nil
}
