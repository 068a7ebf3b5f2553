package pgmig

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// loadGoose loads a goose directory: VERSION_name.sql files with
// `-- +goose Up` and an optional `-- +goose Down` section. goose's Go
// migrations (VERSION_name.go) are code compiled into a goose binary and
// are refused.
func loadGoose(d *dirScan, opts *LoadOpts) ([]*Migration, error) {
	if len(d.gooseGo) > 0 {
		return nil, &LoadError{File: d.gooseGo[0], Err: fmt.Errorf("%w: a goose Go migration is code compiled into a goose binary, "+
			"and pgmig runs SQL only: apply it with goose before switching, or rewrite it as a .sql migration", ErrUnsupported)}
	}
	var files []numbered
	for _, rf := range d.files {
		digits, rest, ok := strings.Cut(rf.path, "_")
		if !ok || !allDigits(digits) || !strings.HasSuffix(rf.path, ".sql") {
			continue
		}
		v, err := parseVersion(rf.path, digits)
		if err != nil {
			return nil, err
		}
		files = append(files, numbered{rf: rf, version: v, name: nameOr(strings.TrimSuffix(rest, ".sql"), rf.path)})
	}
	if len(files) == 0 {
		return nil, noMigrations(FormatGoose)
	}
	if err := sortByVersion(files); err != nil {
		return nil, err
	}
	ms := make([]*Migration, len(files))
	for i, f := range files {
		up, down, tx, err := gooseSQL(f.rf, opts.Env)
		if err != nil {
			return nil, err
		}
		ms[i] = mappedMigration(FormatGoose, f.rf, f.version, f.name, up, down.sql, tx)
	}
	return ms, nil
}

// goose's annotations (internal/sqlparser in github.com/pressly/goose/v3).
const (
	gooseUp             = "Up"
	gooseDown           = "Down"
	gooseStatementBegin = "StatementBegin"
	gooseStatementEnd   = "StatementEnd"
	gooseNoTransaction  = "NO TRANSACTION"
	gooseEnvsubOn       = "ENVSUB ON"
	gooseEnvsubOff      = "ENVSUB OFF"
)

// gooseAnnotation reads an annotation line as goose does: no leading
// white space, every "--" removed, one "+goose", the rest matched in any
// case.
func gooseAnnotation(line string) (string, error) {
	if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
		return "", errors.New("a goose annotation must start at the beginning of the line (goose refuses leading white space)")
	}
	cmd := strings.Replace(strings.ReplaceAll(line, "--", ""), "+goose", "", 1)
	if strings.Contains(cmd, "+goose") {
		return "", errors.New("more than one +goose on the line")
	}
	cmd = strings.TrimSpace(cmd)
	for _, a := range []string{gooseUp, gooseDown, gooseStatementBegin, gooseStatementEnd, gooseNoTransaction, gooseEnvsubOn, gooseEnvsubOff} {
		if strings.EqualFold(cmd, a) {
			return a, nil
		}
	}
	if cmd == "" {
		return "", errors.New("an empty goose annotation")
	}
	return "", fmt.Errorf("unknown goose annotation %q (goose knows Up, Down, StatementBegin, StatementEnd, NO TRANSACTION, ENVSUB ON, ENVSUB OFF)", cmd)
}

// gooseSQL reads a goose file as goose's parser does, line by line: the up
// SQL is the lines between `-- +goose Up` and `-- +goose Down` (or the
// end), the down SQL the lines after `-- +goose Down`, annotation lines
// left out; `-- +goose NO TRANSACTION` anywhere makes the migration
// non-transactional. goose sends each statement on its own (a statement
// ends at a line whose last word ends with `;`, or at StatementEnd);
// pgmig sends the section as one text, which PostgreSQL runs statement by
// statement alike, and splits a non-transactional one with PostgreSQL's
// lexical rules, which need no StatementBegin/End around a $$ body.
//
// With `-- +goose ENVSUB ON`, the lines goose would send are expanded as
// goose expands them (envsub) from env; comments before a statement, which
// goose drops, stay as written.
func gooseSQL(rf *rawFile, env map[string]string) (up, down mappedSQL, tx bool, err error) {
	const (
		start = iota
		inUp
		inUpBlock
		inDown
		inDownBlock
	)
	text := rf.text
	state, tx, envsub := start, true, false
	ub, db := sqlBuilder{text: text}, sqlBuilder{text: text}
	// bufEmpty is goose's "no statement begun": the comment lines it skips
	// then are not expanded.
	bufEmpty := true
	upLine, blockLine := 0, 0
	fail := func(l fileLine, format string, args ...any) error {
		return lineErr(rf.path, l.num, ErrMarker, format, args...)
	}
	for _, l := range lines(text) {
		t := strings.TrimSpace(l.text)
		if strings.HasPrefix(t, "--") && strings.Contains(l.text, "+goose") {
			ann, err := gooseAnnotation(l.text)
			if err != nil {
				return up, down, false, fail(l, "%v", err)
			}
			switch ann {
			case gooseUp:
				if state != start {
					return up, down, false, fail(l, "a second `-- +goose Up` (the first is at line %d)", upLine)
				}
				state, upLine = inUp, l.num
			case gooseDown:
				switch state {
				case start:
					return up, down, false, fail(l, "`-- +goose Down` before `-- +goose Up`")
				case inUpBlock, inDownBlock:
					return up, down, false, fail(l, "`-- +goose Down` inside the StatementBegin block of line %d (no StatementEnd before it)", blockLine)
				case inDown:
					return up, down, false, fail(l, "a second `-- +goose Down`")
				}
				state = inDown
			case gooseStatementBegin:
				switch state {
				case inUp:
					state = inUpBlock
				case inDown:
					state = inDownBlock
				case start:
					return up, down, false, fail(l, "`-- +goose StatementBegin` before `-- +goose Up`")
				default:
					return up, down, false, fail(l, "`-- +goose StatementBegin` inside the StatementBegin block of line %d", blockLine)
				}
				blockLine = l.num
			case gooseStatementEnd:
				switch state {
				case inUpBlock:
					state = inUp
				case inDownBlock:
					state = inDown
				default:
					return up, down, false, fail(l, "`-- +goose StatementEnd` without a StatementBegin before it")
				}
			case gooseNoTransaction:
				tx = false
			case gooseEnvsubOn:
				envsub = true
			case gooseEnvsubOff:
				envsub = false
			}
			if ann == gooseUp || ann == gooseDown || ann == gooseStatementEnd {
				bufEmpty = true
			}
			continue
		}
		var b *sqlBuilder
		switch state {
		case start:
			if t == "" || strings.HasPrefix(t, "--") {
				continue
			}
			return up, down, false, fail(l, "SQL before `-- +goose Up` (goose refuses it: every statement belongs to the Up or the Down section)")
		case inUp, inUpBlock:
			b = &ub
		default:
			b = &db
		}
		skipped := bufEmpty && (strings.HasPrefix(t, "--") || l.text == "")
		if envsub && !skipped {
			if err := envsubLine(b, l, env); err != nil {
				return up, down, false, lineErr(rf.path, l.num, ErrSubstitution, "goose ENVSUB: %v", err)
			}
		} else {
			b.copy(l.start, l.end)
		}
		b.copy(l.end, l.next)
		if !skipped {
			bufEmpty = (state == inUp || state == inDown) && gooseEndsStatement(l.text)
		}
	}
	switch state {
	case start:
		return up, down, false, &LoadError{File: rf.path, Err: fmt.Errorf("%w: no `-- +goose Up` annotation (goose requires one in every migration)", ErrMarker)}
	case inUpBlock, inDownBlock:
		return up, down, false, lineErr(rf.path, blockLine, ErrMarker, "`-- +goose StatementBegin` without a StatementEnd after it")
	}
	up, down = ub.done(), db.done()
	for _, s := range []mappedSQL{up, down} {
		// ENVSUB's substring expansion cuts values by bytes, as goose does.
		if err := checkText([]byte(s.sql), "the SQL expanded by ENVSUB"); err != nil {
			return up, down, false, &LoadError{File: rf.path, Err: err}
		}
	}
	return up, down, tx, nil
}

// gooseEndsStatement is goose's endsWithSemicolon: the last word before a
// word starting with "--" ends with ";".
func gooseEndsStatement(line string) bool {
	prev := ""
	for _, w := range strings.Fields(line) {
		if strings.HasPrefix(w, "--") {
			break
		}
		prev = w
	}
	return strings.HasSuffix(prev, ";")
}

// envsubLine appends line l expanded as goose's ENVSUB expands it, with
// github.com/mfridman/interpolate: $NAME and ${NAME} (unset: empty),
// ${NAME:-default} (unset or empty), ${NAME-default} (unset),
// ${NAME?message} (unset: an error), ${NAME:offset} and
// ${NAME:offset:length} (bytes; so ${NAME:?message} is an error, its
// offset not a number); $$ and \$ stand for $, \\ stays \\, $( stays as
// written, a $ at the end of the line stays. A $ followed by anything but a
// letter or { is an error, as in goose: $1 is one, and $$ becomes $, so a
// $$ body needs $$$$ while ENVSUB is on.
// Literal text maps back to the file exactly, an expansion to its $.
func envsubLine(b *sqlBuilder, l fileLine, env map[string]string) error {
	p := envParser{s: l.text, env: env}
	items, err := p.expression("")
	if err != nil {
		return err
	}
	for _, it := range items {
		if it.exp == nil {
			b.copy(l.start+it.src, l.start+it.src+len(it.text))
			continue
		}
		v, err := it.exp.expand(env)
		if err != nil {
			return err
		}
		b.insert(v, l.start+it.src)
	}
	return nil
}

// envItem is literal text (text == the source at src) or an expansion
// written at src.
type envItem struct {
	text string
	src  int
	exp  *envExpansion
}

type envExpansion struct {
	name    string
	op      string // "", ":-", "-", "?", ":"
	content []envItem
	offset  int
	length  int
	hasLen  bool
}

func (e *envExpansion) expand(env map[string]string) (string, error) {
	val, set := env[e.name]
	switch e.op {
	case ":-":
		if val == "" {
			return expandItems(e.content, env)
		}
	case "-":
		if !set {
			return expandItems(e.content, env)
		}
	case "?":
		if !set {
			msg, err := expandItems(e.content, env)
			if err != nil {
				return "", err
			}
			if msg == "" {
				msg = "not set"
			}
			return "", fmt.Errorf("$%s: %s", e.name, msg)
		}
	case ":":
		from := e.offset
		if from < 0 {
			from += len(val)
		}
		from = min(max(from, 0), len(val))
		if !e.hasLen {
			return val[from:], nil
		}
		to := e.length
		if to >= 0 {
			to += from
		} else {
			to = max(to+len(val), from)
		}
		return val[from:min(to, len(val))], nil
	}
	return val, nil
}

func expandItems(items []envItem, env map[string]string) (string, error) {
	var b strings.Builder
	for _, it := range items {
		if it.exp == nil {
			b.WriteString(it.text)
			continue
		}
		v, err := it.exp.expand(env)
		if err != nil {
			return "", err
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

// envParser parses interpolate's grammar (a recursive descent over runes).
type envParser struct {
	s   string
	pos int
	env map[string]string
}

const envEOF = -1

func (p *envParser) peek() rune {
	if p.pos >= len(p.s) {
		return envEOF
	}
	r, _ := utf8.DecodeRuneInString(p.s[p.pos:])
	return r
}

func (p *envParser) next() rune {
	if p.pos >= len(p.s) {
		return envEOF
	}
	r, n := utf8.DecodeRuneInString(p.s[p.pos:])
	p.pos += n
	return r
}

func (p *envParser) scanUntil(stop func(rune) bool) string {
	start := p.pos
	for p.pos < len(p.s) {
		r, n := utf8.DecodeRuneInString(p.s[p.pos:])
		if stop(r) {
			break
		}
		p.pos += n
	}
	return p.s[start:p.pos]
}

func (p *envParser) expression(stop string) ([]envItem, error) {
	var items []envItem
	for {
		c := p.peek()
		if c == envEOF || strings.ContainsRune(stop, c) {
			return items, nil
		}
		rest := p.s[p.pos:]
		switch {
		case strings.HasPrefix(rest, `\\`):
			items = append(items, envItem{text: `\\`, src: p.pos})
			p.pos += 2
			continue
		case strings.HasPrefix(rest, `\$`):
			items = append(items, envItem{text: "$", src: p.pos + 1})
			p.pos += 2
			continue
		case strings.HasPrefix(rest, `$$`):
			items = append(items, envItem{text: "$", src: p.pos})
			p.pos += 2
			continue
		case strings.HasPrefix(rest, `$(`):
			items = append(items, envItem{text: "$(", src: p.pos})
			p.pos += 2
			continue
		case c == '$' && p.pos < len(p.s)-1:
			at := p.pos
			e, err := p.expansion()
			if err != nil {
				return nil, err
			}
			items = append(items, envItem{src: at, exp: e})
			continue
		}
		start := p.pos
		p.next()
		p.scanUntil(func(r rune) bool { return r == '$' || r == '\\' || strings.ContainsRune(stop, r) })
		items = append(items, envItem{text: p.s[start:p.pos], src: start})
	}
}

func (p *envParser) identifier() (string, error) {
	if c := p.peek(); !unicode.IsLetter(c) {
		return "", fmt.Errorf("expected a variable name after $ at column %d, got %s", utf8.RuneCountInString(p.s[:p.pos])+1, runeName(c))
	}
	return p.scanUntil(func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsNumber(r) && r != '_' }), nil
}

func runeName(r rune) string {
	if r == envEOF {
		return "the end of the line"
	}
	return strconv.QuoteRune(r)
}

func (p *envParser) expansion() (*envExpansion, error) {
	p.next() // $
	if p.peek() != '{' {
		name, err := p.identifier()
		if err != nil {
			return nil, err
		}
		return &envExpansion{name: name}, nil
	}
	p.next() // {
	name, err := p.identifier()
	if err != nil {
		return nil, err
	}
	e := &envExpansion{name: name}
	if p.peek() == '}' {
		p.next()
		return e, nil
	}
	switch op := p.next(); op {
	case ':':
		e.op = ":"
		if p.peek() == '-' {
			p.next()
			e.op = ":-"
		}
	case '?', '-':
		e.op = string(op)
	default:
		return nil, fmt.Errorf("expected an operator (:-, -, ?, :) in ${%s...}, got %s", name, runeName(op))
	}
	if e.op == ":" {
		off := p.scanUntil(func(r rune) bool { return r == ':' || r == '}' })
		if e.offset, err = strconv.Atoi(strings.TrimSpace(off)); err != nil {
			return nil, fmt.Errorf("${%s:%s...}: the offset is not a number", name, off)
		}
		if p.peek() != '}' {
			p.next()
			n := p.scanUntil(func(r rune) bool { return r == '}' })
			if e.length, err = strconv.Atoi(strings.TrimSpace(n)); err != nil {
				return nil, fmt.Errorf("${%s:%s:%s...}: the length is not a number", name, off, n)
			}
			e.hasLen = true
		}
	} else if e.content, err = p.expression("}"); err != nil {
		return nil, err
	}
	if c := p.next(); c != '}' {
		return nil, fmt.Errorf("${%s...} is not closed with }, got %s", name, runeName(c))
	}
	return e, nil
}
