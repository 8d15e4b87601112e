package app

import (
	"bufio"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/underlay/underlay/deploy"
)

// defaultFromElsewhere says whether def is how a README's flag table
// gives the default of a flag whose value is found at run time (the
// environment, Docker, another flag): the flag's own default is empty.
func defaultFromElsewhere(def string) bool {
	switch def {
	case "", "env", "off", "Docker's host name", "Consul agent address", "`--listen`", "`--tls-client-ca`":
		return true
	}
	return false
}

// TestREADMEFlagTables: the agent's flag table in README.md lacked
// --task-metrics and --workers, which operators set. Each flag table
// names every flag its command takes (but --help and hidden ones), only
// flags it takes, each with the default the command gives it.
func TestREADMEFlagTables(t *testing.T) {
	tests := []struct {
		file, heading string
		cmd           []string
	}{
		{file: "../../README.md", heading: "### Flags", cmd: []string{"agent"}},
		{file: "../scale/README.md", heading: "## Flags", cmd: []string{"control"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.cmd, " "), func(t *testing.T) {
			cmd, _, err := newRootCommand(IOStreams{Out: io.Discard, ErrOut: io.Discard}).Find(tt.cmd)
			if err != nil {
				t.Fatal(err)
			}
			rows := readmeFlagTable(t, tt.file, tt.heading)
			named := map[string]bool{}
			for _, row := range rows {
				for i, name := range row.flags {
					named[name] = true
					f := commandFlag(cmd, name)
					if f == nil {
						t.Errorf("%s %q: %s has no --%s", tt.file, tt.heading, cmd.CommandPath(), name)
						continue
					}
					def := row.defaults[0]
					if len(row.defaults) == len(row.flags) {
						def = row.defaults[i]
					}
					if !sameDefault(f, def) {
						t.Errorf("%s %q: --%s's default is %q, the table says %q", tt.file, tt.heading, name, f.DefValue, def)
					}
				}
			}
			visit := func(f *pflag.Flag) {
				if !f.Hidden && f.Name != "help" && !named[f.Name] {
					t.Errorf("%s %q: no row for --%s (default %q: %s)", tt.file, tt.heading, f.Name, f.DefValue, f.Usage)
				}
			}
			cmd.LocalFlags().VisitAll(visit)
			cmd.InheritedFlags().VisitAll(visit)
		})
	}
}

// readmeRow is one row of a README's flag table.
type readmeRow struct {
	flags    []string // names, without --
	defaults []string // one for all flags, or one each
}

// readmeFlagTable reads the first table after heading in file: its rows
// whose first cell names flags.
func readmeFlagTable(t *testing.T, file, heading string) []readmeRow {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, text, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s: no heading %q", file, heading)
	}
	flagName := regexp.MustCompile("`--([a-z0-9-]+)")
	var rows []readmeRow
	inTable := false
	for line := range strings.Lines(text) {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		// A cell holds no |: markdown would end the cell there.
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`--") {
			continue
		}
		var row readmeRow
		for _, m := range flagName.FindAllStringSubmatch(cells[1], -1) {
			row.flags = append(row.flags, m[1])
		}
		row.defaults = strings.Split(strings.TrimSpace(cells[2]), ", ")
		if len(row.defaults) != 1 && len(row.defaults) != len(row.flags) {
			t.Errorf("%s: row of %v gives %d defaults", file, row.flags, len(row.defaults))
		}
		rows = append(rows, row)
	}
	if len(rows) < 10 {
		t.Fatalf("%s %q: found %d rows of flags", file, heading, len(rows))
	}
	return rows
}

// commandFlag is cmd's flag of that name, its own or inherited.
func commandFlag(cmd *cobra.Command, name string) *pflag.Flag {
	if f := cmd.Flags().Lookup(name); f != nil {
		return f
	}
	return cmd.InheritedFlags().Lookup(name)
}

// sameDefault says whether a README's default def is f's.
func sameDefault(f *pflag.Flag, def string) bool {
	if defaultFromElsewhere(def) {
		switch f.DefValue {
		case "", "[]", "false", "0":
			return true
		}
		return false
	}
	if f.Value.Type() == "duration" {
		want, err := time.ParseDuration(def)
		got, gerr := time.ParseDuration(f.DefValue)
		return err == nil && gerr == nil && want == got
	}
	return def == f.DefValue
}

// TestREADMECommands: each `underlay …` command in the code blocks of
// README.md, DEVELOPERS.md and the packages' READMEs names a command
// underlay has, and flags that command takes.
func TestREADMECommands(t *testing.T) {
	files, err := filepath.Glob("../*/README.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../README.md", "../../DEVELOPERS.md")
	root := newRootCommand(IOStreams{Out: io.Discard, ErrOut: io.Discard})
	checked := 0
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		checked += checkREADMECommands(t, root, file, string(b))
	}
	if checked < 20 {
		t.Fatalf("found %d underlay commands in %v's code blocks", checked, files)
	}
}

// checkREADMECommands checks the underlay commands of one markdown file's
// code blocks, and returns how many it found.
func checkREADMECommands(t *testing.T, root *cobra.Command, file, text string) int {
	t.Helper()
	checked := 0
	for _, line := range readmeCodeLines(text) {
		for _, args := range underlayCommands(line) {
			checked++
			cmd, rest, err := root.Find(args)
			if err != nil {
				t.Errorf("%s: %q: %v", file, line, err)
				continue
			}
			if !cmd.Runnable() && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
				t.Errorf("%s: %q: %s has no command %q", file, line, cmd.CommandPath(), rest[0])
			}
			for _, a := range rest {
				a = strings.Trim(a, "[]")
				if !strings.HasPrefix(a, "--") {
					continue
				}
				name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				if commandFlag(cmd, name) == nil {
					t.Errorf("%s: %q: %s has no --%s", file, line, cmd.CommandPath(), name)
				}
			}
		}
	}
	return checked
}

// readmeCodeLines are the lines of markdown's fenced code blocks, those
// continued with a backslash joined.
func readmeCodeLines(text string) []string {
	var lines []string
	in, cont := false, ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			in = !in
			continue
		}
		if !in {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cont += s
			continue
		}
		lines = append(lines, cont+line)
		cont = ""
	}
	return lines
}

// underlayCommands are the arguments of each underlay command line runs:
// underlay (or bin/underlay) at the start of the line, after a shell
// operator or opening $(, up to a comment, the next operator, or a --
// before another program's arguments.
func underlayCommands(line string) [][]string {
	var cmds [][]string
	line, _, _ = strings.Cut(line, " #")
	start := true
	var args []string
	in := false
	for _, w := range strings.Fields(line) {
		switch {
		case w == "|" || w == "&&" || w == ";" || w == "||":
			if in {
				cmds = append(cmds, args)
			}
			start, in, args = true, false, nil
		case w == "$(underlay" || start && (w == "underlay" || strings.HasSuffix(w, "bin/underlay")):
			if in {
				cmds = append(cmds, args)
			}
			start, in, args = false, true, nil
		case in && w == "--":
			// What follows is another program's command line.
			cmds = append(cmds, args)
			in, args = false, nil
		case start && strings.Contains(w, "=") && !strings.HasPrefix(w, "-"):
			// An environment assignment before the command.
		case in:
			args = append(args, w)
		default:
			start = false
		}
	}
	if in {
		cmds = append(cmds, args)
	}
	return cmds
}

// TestDeployFlags: what deploy/ ships sets only flags underlay takes: the
// stack's commands and UNDERLAY_* variables, the units' ExecStart lines,
// and the UNDERLAY_* settings the env files show (commented out or not).
func TestDeployFlags(t *testing.T) {
	root := newRootCommand(IOStreams{Out: io.Discard, ErrOut: io.Discard})
	find := func(where string, args []string) *cobra.Command {
		cmd, rest, err := root.Find(args)
		if err != nil || cmd == root {
			t.Errorf("%s: %q names no command: %v", where, args, err)
			return nil
		}
		for _, a := range rest {
			if name, ok := strings.CutPrefix(a, "--"); ok {
				name, _, _ = strings.Cut(name, "=")
				if commandFlag(cmd, name) == nil {
					t.Errorf("%s: %s has no --%s", where, cmd.CommandPath(), name)
				}
			}
		}
		return cmd
	}
	envFlag := func(where string, cmd *cobra.Command, variable string) {
		name, ok := strings.CutPrefix(variable, "UNDERLAY_")
		if !ok {
			return
		}
		name = strings.ReplaceAll(strings.ToLower(name), "_", "-")
		if commandFlag(cmd, name) == nil {
			t.Errorf("%s: %s sets --%s, which %s does not take", where, variable, name, cmd.CommandPath())
		}
	}

	var stack struct {
		Services map[string]struct {
			Command     []string
			Environment map[string]string
		}
	}
	if err := yaml.Unmarshal(deploy.Stack, &stack); err != nil {
		t.Fatalf("stack.yml: %v", err)
	}
	for name, svc := range stack.Services {
		where := "stack.yml service " + name
		if cmd := find(where, svc.Command); cmd != nil {
			for v := range svc.Environment {
				envFlag(where, cmd, v)
			}
		}
	}

	units := 0
	err := fs.WalkDir(deploy.Units, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(deploy.Units, p)
		if err != nil {
			return err
		}
		for line := range strings.Lines(string(b)) {
			if exec, ok := strings.CutPrefix(line, "ExecStart="); ok {
				units++
				words := strings.Fields(exec)
				find(p, words[1:])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if units < 2 {
		t.Fatalf("found %d ExecStart lines in the units", units)
	}

	setting := regexp.MustCompile(`(?m)^#?(UNDERLAY_[A-Z0-9_]+)=`)
	for file, command := range map[string]string{"agent.env": "agent", "control.env": "control"} {
		b, err := os.ReadFile("../../deploy/etc/" + file)
		if err != nil {
			t.Fatal(err)
		}
		cmd := find(file, []string{command})
		ms := setting.FindAllStringSubmatch(string(b), -1)
		if len(ms) < 3 {
			t.Fatalf("%s: found %d UNDERLAY_* settings", file, len(ms))
		}
		for _, m := range ms {
			envFlag(file, cmd, m[1])
		}
	}
}

// TestREADMECommandTable: README.md's table of commands, at its top,
// left out `underlay node`. It names every command underlay has (but
// cobra's help and completion).
func TestREADMECommandTable(t *testing.T) {
	const file = "../../README.md"
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	top, _, ok := strings.Cut(string(b), "\n## ")
	if !ok {
		t.Fatalf("%s: no second-level heading", file)
	}
	var firstCells strings.Builder
	for line := range strings.Lines(top) {
		if cells := strings.Split(line, "|"); len(cells) > 2 {
			firstCells.WriteString(cells[1])
		}
	}
	for _, cmd := range newRootCommand(IOStreams{Out: io.Discard, ErrOut: io.Discard}).Commands() {
		if cmd.Hidden || cmd.Name() == "help" || cmd.Name() == "completion" {
			continue
		}
		if !strings.Contains(firstCells.String(), "`underlay "+cmd.Name()) {
			t.Errorf("%s: the table of commands has no row for underlay %s (%s)", file, cmd.Name(), cmd.Short)
		}
	}
}
