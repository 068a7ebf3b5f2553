package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// output is where everything the user sees goes. report is the one place
// a command's result and error become text or JSON; live progress
// (progress.go) and waiting messages (info) are the only other writers, and
// neither writes to stdout in JSON mode.
type output struct {
	stdout, stderr io.Writer
	json, quiet    bool
	ttyOut, ttyErr bool // colours and live updates
	// dir is --dir: file names are shown relative to the current
	// directory, so editors and terminals can open them.
	dir string
	// cmd is the command being run: it names the operation in errors and
	// chooses hints.
	cmd *command
	// hints is data gathered for the error's hint while the connection
	// was still open (hints.go).
	hints hintData
}

// result is what a command produced, for people (text) and for machines
// (jsonValue, encoded as one JSON document).
type result interface {
	text(o *output)
	jsonValue() any
}

func newOutput(stdout, stderr io.Writer, asJSON, quiet bool) *output {
	noColor := os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb"
	return &output{
		stdout: stdout, stderr: stderr, json: asJSON, quiet: quiet,
		ttyOut: !noColor && isTerminal(stdout),
		ttyErr: !noColor && isTerminal(stderr),
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// report renders a command's outcome. In JSON mode it writes exactly one
// document on stdout: the result, the error object ({"error": {...}}), or —
// when a command has both (status with drifted files) — the result's
// fields with an "error" field added.
func (o *output) report(res result, err error) {
	if !o.json {
		if res != nil {
			res.text(o)
		}
		if err != nil {
			o.fail(err)
		}
		return
	}
	var doc []byte
	switch {
	case err == nil && res == nil:
		return
	case err == nil:
		doc = marshal(res.jsonValue())
	case res == nil:
		doc = marshal(o.errorObject(err))
	default:
		doc = withError(marshal(res.jsonValue()), marshal(o.errorObject(err).Error))
	}
	if l, ok := res.(interface{ oneLine() bool }); ok && l.oneLine() {
		_, _ = o.stdout.Write(append(doc, '\n'))
		return
	}
	var indented bytes.Buffer
	if json.Indent(&indented, doc, "", "  ") != nil {
		indented.Reset()
		indented.Write(doc)
	}
	indented.WriteByte('\n')
	_, _ = o.stdout.Write(indented.Bytes())
}

func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Every value rendered here is plain data; say so if one is not.
		return []byte(fmt.Sprintf(`{"error":{"message":%q,"exit_code":%d}}`, "encoding the result: "+err.Error(), exitUsage))
	}
	return bytes.TrimSpace(b.Bytes())
}

// withError adds "error": errObj as the last field of the JSON object obj.
func withError(obj, errObj []byte) []byte {
	body := bytes.TrimSuffix(bytes.TrimSpace(obj), []byte("}"))
	var b bytes.Buffer
	b.Write(body)
	if len(bytes.TrimSpace(bytes.TrimPrefix(body, []byte("{")))) > 0 {
		b.WriteByte(',')
	}
	b.WriteString(`"error":`)
	b.Write(errObj)
	b.WriteByte('}')
	return b.Bytes()
}

func (o *output) path(file string) string {
	if o.dir == "" || o.dir == "." || filepath.IsAbs(file) {
		return file
	}
	return filepath.Join(o.dir, file)
}

const (
	bold   = "\033[1m"
	red    = "\033[31m"
	green  = "\033[32m"
	yellow = "\033[33m"
	dim    = "\033[2m"
	reset  = "\033[0m"
)

func paint(on bool, color, s string) string {
	if !on {
		return s
	}
	return color + s + reset
}

// info is a human message on stderr (not in --json or --quiet mode).
func (o *output) info(format string, args ...any) {
	if o.quiet || o.json {
		return
	}
	fmt.Fprintf(o.stderr, "pgmig: "+format+"\n", args...)
}

// say is a line of a result for people on stdout (not with --quiet).
func (o *output) say(format string, args ...any) {
	if o.quiet {
		return
	}
	fmt.Fprintf(o.stdout, format+"\n", args...)
}
