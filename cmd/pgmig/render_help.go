package main

import (
	"fmt"
	"io"
	"strings"
)

// helpResult is `pgmig help [COMMAND]` and `pgmig COMMAND --help`: the
// table of commands, or one command's usage and flags, both read from the
// command table.
type helpResult struct{ cmd *command }

func (r helpResult) text(o *output) {
	if r.cmd == nil {
		o.generalHelp(o.stdout)
		return
	}
	o.commandHelp(o.stdout, r.cmd)
}

type jsonFlag struct {
	Name    string   `json:"name"`
	Arg     string   `json:"arg,omitempty"`
	Usage   string   `json:"usage"`
	Default string   `json:"default,omitempty"`
	Env     []string `json:"env"`
	Config  string   `json:"config,omitempty"`
	Shared  bool     `json:"shared"`
}

func (r helpResult) jsonValue() any {
	if r.cmd == nil {
		type cmdJSON struct {
			Name    string `json:"name"`
			Usage   string `json:"usage"`
			Summary string `json:"summary"`
		}
		type codeJSON struct {
			Code    int    `json:"code"`
			Meaning string `json:"meaning"`
		}
		v := struct {
			Commands  []cmdJSON  `json:"commands"`
			ExitCodes []codeJSON `json:"exit_codes"`
		}{}
		for _, c := range commands {
			v.Commands = append(v.Commands, cmdJSON{c.name, c.usageLine(), c.summary})
		}
		for _, e := range exitCodes {
			v.ExitCodes = append(v.ExitCodes, codeJSON{e.code, e.meaning})
		}
		return v
	}
	v := struct {
		Command string     `json:"command"`
		Usage   string     `json:"usage"`
		Summary string     `json:"summary"`
		Help    string     `json:"help"`
		Flags   []jsonFlag `json:"flags"`
	}{Command: r.cmd.name, Usage: r.cmd.usageLine(), Summary: r.cmd.summary, Help: r.cmd.help, Flags: []jsonFlag{}}
	for _, d := range r.cmd.flags {
		v.Flags = append(v.Flags, jsonFlag{Name: d.name, Arg: d.arg, Usage: d.usage, Default: d.defaultText(),
			Env: d.envVars(), Config: configKeyOf(d), Shared: sharedFlagNames[d.name]})
	}
	return v
}

// configKeyOf is where the config file sets d, as help shows it.
func configKeyOf(d *flagDef) string {
	switch {
	case d == flagDatabase:
		return "[database]"
	case d == flagData:
		return "[data]"
	case d.config != "":
		return d.config
	}
	return ""
}

const helpIntro = `pgmig applies PostgreSQL schema migrations with the pgmig engine, which runs
inside the database. Migration files use tern's format (001_name.sql).

Usage:
  pgmig <command> [flags]
  pgmig <command> --help      that command's usage and flags (also: pgmig help <command>)
`

const helpSettings = `Settings: a flag wins over its environment variable (PGMIG_<FLAG>, e.g.
PGMIG_LOCK_TIMEOUT=30s; for the connection also DATABASE_URL), which wins over
the config file (--config FILE, else ./pgmig.conf, else ./tern.conf), which wins
over the default. libpq's PG* variables and ~/.pgpass fill in what the
connection string leaves out. ` + "`pgmig config`" + ` shows every setting and where it
came from.
`

func (o *output) generalHelp(w io.Writer) {
	fmt.Fprint(w, helpIntro)
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, wrap(c.summary, 64, strings.Repeat(" ", 13)))
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, helpSettings)
	fmt.Fprintln(w, "\nExit codes:")
	for _, e := range exitCodes {
		fmt.Fprintf(w, "  %d  %s\n", e.code, wrap(e.meaning, 72, "     "))
	}
	fmt.Fprintln(w, "\nSee docs/cli.md.")
}

func (o *output) commandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "usage: %s\n\n", c.usageLine())
	fmt.Fprintf(w, "%s\n", wrap(c.help, 78, ""))
	var own, shared []*flagDef
	for _, d := range c.flags {
		if sharedFlagNames[d.name] {
			shared = append(shared, d)
		} else {
			own = append(own, d)
		}
	}
	printFlags := func(title string, flags []*flagDef) {
		if len(flags) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		for _, d := range flags {
			name := "--" + d.name
			if d.arg != "" {
				name += " " + d.arg
			}
			fmt.Fprintf(w, "  %s\n      %s\n", name, wrap(d.usage, 72, "      "))
			var notes []string
			if def := d.defaultText(); def != "" {
				notes = append(notes, "default: "+def)
			}
			notes = append(notes, "env: "+strings.Join(d.envVars(), ", "))
			if k := configKeyOf(d); k != "" {
				notes = append(notes, "config: "+k)
			}
			fmt.Fprintf(w, "      %s\n", wrap(strings.Join(notes, "; "), 72, "      "))
		}
	}
	printFlags("Flags", own)
	printFlags("Shared flags", shared)
	fmt.Fprintf(w, "\n%s", helpSettings)
}

// wrap breaks s into lines of at most width characters, indenting every
// line after the first with indent.
func wrap(s string, width int, indent string) string {
	var b strings.Builder
	n := 0
	for i, word := range strings.Fields(s) {
		if i > 0 {
			if n+1+len([]rune(word)) > width {
				b.WriteString("\n" + indent)
				n = 0
			} else {
				b.WriteByte(' ')
				n++
			}
		}
		b.WriteString(word)
		n += len([]rune(word))
	}
	return b.String()
}
