package pgmig

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	pgmigsql "github.com/pgmig/pgmig/sql"
)

// BundleOpts configures Bundle. A nil *BundleOpts means defaults.
type BundleOpts struct {
	// WithEngine makes the script install the engine embedded in this
	// package first, or upgrade an older one to it (nothing when that
	// version or a newer one is installed; racing sessions are serialised
	// by the install script's own lock).
	WithEngine bool
	// NonTransactionalApplied: the non-transactional migrations are known
	// to be applied wherever the script will run. They go into the bundle
	// as checksum-only entries (so drift checks still cover them), and the
	// script refuses to run, changing nothing, on a database where one of
	// them is still pending. Without it Bundle refuses them
	// (*NonTransactionalError).
	NonTransactionalApplied bool
	// ClientInfo is stored in the history with each migration the script
	// applies. Default "pgmig bundle <first 12 digits of the history
	// digest>".
	ClientInfo string
}

// ErrNonTransactional: a migration marked `---- tern: disable-tx ----`
// cannot be applied by a plain SQL script (see NonTransactionalError).
var ErrNonTransactional = errors.New("non-transactional migrations cannot be applied by a SQL script")

// NonTransactionalError names the non-transactional migrations Bundle
// refused. Their statements must run outside any transaction while a
// second connection holds the migration lock (docs/nontransactional.md):
// only a client such as `pgmig push` can do that, never one SQL statement.
// It matches ErrNonTransactional.
type NonTransactionalError struct {
	Migrations []*Migration
}

func (e *NonTransactionalError) Error() string {
	names := make([]string, len(e.Migrations))
	for i, m := range e.Migrations {
		names[i] = fmt.Sprintf("%s (version %s)", cmp.Or(m.File, m.Name), m.displayVersion())
	}
	first := e.Migrations[0]
	return fmt.Sprintf("%s: %s: a plain SQL script cannot run them safely (their statements must run outside a transaction "+
		"while a second connection holds the migration lock, which `pgmig push` does). Apply them with `pgmig push`; "+
		"bundle only the migrations before them (--target %d); or, where they are applied already everywhere the script "+
		"will run, bundle them as checksum-only entries (--nontx-applied)",
		ErrNonTransactional, strings.Join(names, ", "), first.Version-1)
}

func (e *NonTransactionalError) Is(target error) bool { return target == ErrNonTransactional }

func (m *Migration) displayVersion() string {
	if m.Label != "" {
		return m.Label
	}
	return strconv.FormatInt(m.Version, 10)
}

// Bundle returns one self-contained SQL script that applies migrations
// when run: `psql -v ON_ERROR_STOP=1 -f release.sql`, pasted into an admin
// GUI, or sent as one simple-protocol message (`psql -c "$(cat
// release.sql)"`). It is a single statement, a DO block holding the batch
// (Batch) inline, which calls the engine's migrate_run: the same lock,
// checks and commits as `pgmig push`, so running it twice, or from many
// sessions at once, applies every migration exactly once, and a failing
// migration rolls back its own transaction with PostgreSQL's error and the
// engine's PM010 warning naming it. The DO block commits (migrate_run does),
// so it must run in autocommit, not inside BEGIN ... COMMIT.
//
// The text is pure ASCII whatever the migrations contain (JSON \u escapes),
// so no client encoding can alter it, and every quote is a dollar quote
// whose tag occurs nowhere in what it quotes. A header comment gives the
// history digest of the migrations (HistoryDigest), their count and
// pgmig's version. Non-transactional migrations are refused
// (*NonTransactionalError) unless opts.NonTransactionalApplied.
func Bundle(migrations []*Migration, opts *BundleOpts) (string, error) {
	if opts == nil {
		opts = &BundleOpts{}
	}
	if len(migrations) == 0 {
		return "", ErrNoMigrations
	}
	ms := slices.Clone(migrations)
	slices.SortStableFunc(ms, func(a, b *Migration) int { return cmp.Compare(a.Version, b.Version) })
	var nontx []*Migration
	for _, m := range ms {
		if !m.Transactional {
			nontx = append(nontx, m)
		}
	}
	if len(nontx) > 0 && !opts.NonTransactionalApplied {
		return "", &NonTransactionalError{Migrations: nontx}
	}
	batch, err := asciiBatch(ms)
	if err != nil {
		return "", fmt.Errorf("encoding batch: %w", err)
	}
	digest := HistoryDigest(ms)
	clientInfo := opts.ClientInfo
	if clientInfo == "" {
		clientInfo = "pgmig bundle " + digest[:12]
	}

	var engine string
	if opts.WithEngine {
		if engine, err = engineScript(); err != nil {
			return "", err
		}
	}
	batchTag := quoteTag("pgmig_batch", batch)
	engineTag := quoteTag("pgmig_engine", engine)

	var b strings.Builder
	writeBundleBody(&b, bundleParts{
		batch: batchTag + "\n" + batch + "\n" + batchTag, engine: engine, engineTag: engineTag,
		clientInfo: sqlLiteral(clientInfo), digest: digest, count: len(ms), nontx: len(nontx) > 0,
	})
	body := b.String()
	doTag := quoteTag("pgmig_bundle", body)

	var out strings.Builder
	writeBundleHeader(&out, ms, digest, opts.WithEngine)
	out.WriteString("DO " + doTag + "\n")
	out.WriteString(body)
	out.WriteString(doTag + ";\n")
	return out.String(), nil
}

type bundleParts struct {
	batch      string // the batch JSON, dollar-quoted
	engine     string // the engine's install script ("": not bundled)
	engineTag  string
	clientInfo string // SQL literal
	digest     string
	count      int
	nontx      bool // the batch has checksum-only non-transactional entries
}

// writeBundleHeader writes the comment at the top: what the script is,
// how to run it, and the migrations it holds (names reduced to printable
// ASCII without backslashes, so no client reads anything but a comment).
func writeBundleHeader(w *strings.Builder, ms []*Migration, digest string, withEngine bool) {
	engine := pgmigsql.Version()
	fmt.Fprintf(w, "-- pgmig release bundle: %d migration%s, versions %s to %s.\n", len(ms), plural(len(ms)),
		commentText(ms[0].displayVersion(), 40), commentText(ms[len(ms)-1].displayVersion(), 40))
	fmt.Fprintf(w, "-- Generated by pgmig %s. History digest of these migrations: %s\n", engine, digest)
	w.WriteString("-- (select migrate_history_digest() returns it once exactly these migrations are applied).\n")
	if withEngine {
		fmt.Fprintf(w, "-- It installs the pgmig engine %s first, or upgrades an older one (a newer one is kept).\n", engine)
	} else {
		fmt.Fprintf(w, "-- It needs the pgmig engine %s (or newer) in the database: pgmig install, psql -f pgmig.sql,\n", majorMinor(engine))
		w.WriteString("-- or a bundle made with --with-engine.\n")
	}
	w.WriteString(`--
-- Run it in autocommit (it commits by itself; not inside BEGIN ... COMMIT, not psql -1):
--   psql -v ON_ERROR_STOP=1 -f release.sql
-- or paste the whole file into an admin GUI and run it as one statement. It is one statement
-- (a DO block), so psql -c "$(cat release.sql)" works too (up to 128 kB, Linux's limit on one
-- argument).
-- It applies what is pending with pgmig's migrate_run: under the migration lock, exactly once
-- however many sessions run it at once, each transaction all or nothing (a failing migration
-- is named in the error and its transaction rolled back). Running it again does nothing.
--
-- Migrations:
`)
	for _, m := range ms {
		note := ""
		switch {
		case !m.Transactional:
			note = "  (non-transactional: must be applied already; the script refuses to run otherwise)"
		case m.CommitAfter:
			note = "  (commit-after)"
		}
		fmt.Fprintf(w, "--   %s  %s%s\n", commentText(m.displayVersion(), 40), commentText(m.Name, 100), note)
	}
	w.WriteString("\n")
}

// writeBundleBody writes the DO block's body (between its dollar quotes).
// Qualified names only until search_path is pinned; the caller's path is
// put back for the engine, which runs the migrations with it.
func writeBundleBody(w *strings.Builder, p bundleParts) {
	engine := pgmigsql.Version()
	fmt.Fprintf(w, `DECLARE
    v_batch  jsonb := %s;
    v_path   text := pg_catalog.current_setting('search_path');
    v_engine text;
    v_result jsonb;
    v_text   text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    -- The installed engine (its functions are called through EXECUTE: a call to one that does not
    -- exist would fail when this block is planned, before it could say so).
%s`, p.batch, engineVersionSQL("    "))
	if p.engine != "" {
		fmt.Fprintf(w, `    IF v_engine IS NULL OR %[4]s THEN
        -- Racing sessions: the install script's own lock, taken here so that the version is
        -- checked again under it and only the first session installs.
        PERFORM pg_advisory_xact_lock(482771560807);
%[5]s        IF v_engine IS NULL OR %[4]s THEN
            -- The install script (sql/build/pgmig.sql without its BEGIN/COMMIT: this block is its
            -- transaction, committed by migrate_run's first COMMIT below), run as psql -f would.
            v_text := current_setting('client_min_messages');
            PERFORM pg_catalog.set_config('search_path', v_path, true);
            EXECUTE %[2]s
%[3]s
%[2]s;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            PERFORM pg_catalog.set_config('client_min_messages', v_text, true);
            RAISE NOTICE USING MESSAGE = format('pgmig: installed the pgmig engine %%s (%%s)', %[1]s,
                                                coalesce('was ' || v_engine, 'new install'));
            v_engine := %[1]s;
        END IF;
    END IF;
`, sqlLiteral(engine), p.engineTag, p.engine, versionLessSQL("v_engine", engine), engineVersionSQL("        "))
	} else {
		fmt.Fprintf(w, `    IF v_engine IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM006',
            MESSAGE = 'pgmig: the pgmig engine is not installed in this database; nothing was applied',
            HINT = 'Install it first (pgmig install, or psql -f pgmig.sql), or make the release with pgmig bundle --with-engine.';
    END IF;
    IF %[2]s THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM006',
            MESSAGE = format('pgmig: the pgmig engine %%s is installed; this release needs %%s or newer; nothing was applied', v_engine, %[1]s),
            HINT = 'Upgrade the engine (pgmig install, or psql -f pgmig.sql), or make the release with pgmig bundle --with-engine.';
    END IF;
`, sqlLiteral(majorMinor(engine)+".0"), versionLessSQL("v_engine", majorMinor(engine)+".0"))
	}
	if p.nontx {
		w.WriteString(`    -- Non-transactional migrations are in the batch as checksum-only entries: refuse, before
    -- anything is applied, where one of them is still pending.
    SELECT string_agg(format('%s (%s)', e->>'version', e->>'name'), ', ' ORDER BY (e->>'version')::bigint)
      INTO v_text
      FROM jsonb_array_elements(v_batch) AS e
     WHERE e->'transactional' = 'false'::jsonb
       AND NOT EXISTS (SELECT FROM pgmig.history AS h WHERE h.version = (e->>'version')::bigint);
    IF v_text IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PM005',
            MESSAGE = format('pgmig: non-transactional migrations %s are not applied in this database, and this script cannot run them; nothing was applied', v_text),
            DETAIL = 'Their statements must run outside a transaction while a second connection holds the migration lock, which only a client such as pgmig push can do.',
            HINT = 'Apply them with pgmig push (it applies what comes before them too), then run this script again.';
    END IF;
`)
	}
	fmt.Fprintf(w, `    PERFORM pg_catalog.set_config('search_path', v_path, true);
    CALL pgmig.migrate_run(batch => v_batch, client_info => %s, result => v_result);
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    RAISE NOTICE USING MESSAGE = format('pgmig: release %s (%d migrations): this run applied %%s, %%s; the database is at version %%s',
        v_result->>'applied',
        CASE WHEN (v_result->>'pending')::bigint > 0 THEN (v_result->>'pending') || ' still pending' ELSE 'nothing is pending' END,
        coalesce(v_result->>'version', 'none'));
    PERFORM pg_catalog.set_config('search_path', v_path, true);
END
`, p.clientInfo, p.digest[:12], p.count)
}

// engineVersionSQL reads the installed engine's version into v_engine
// (NULL: none). It queries pg_proc rather than calling to_regprocedure: a
// session that waited for the install script's advisory lock has not
// processed the catalog invalidations of the install it waited for (only
// opening a relation does), so its catalog caches would still miss the
// engine, and every racing session would install it again.
func engineVersionSQL(indent string) string {
	return indent + `v_engine := NULL;
` + indent + `IF EXISTS (SELECT FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
` + indent + `           WHERE n.nspname = 'pgmig' AND p.proname = 'engine_version') THEN
` + indent + `    EXECUTE 'SELECT pgmig.engine_version()' INTO v_engine;
` + indent + `END IF;
`
}

// versionLessSQL is an SQL condition: the dotted version in variable v
// (anything after its leading digits and dots ignored) is older than
// version.
func versionLessSQL(v, version string) string {
	return fmt.Sprintf(`coalesce(string_to_array(nullif(substring(%s from '^[0-9]+(?:\.[0-9]+)*'), ''), '.')::integer[], '{}') < %s::integer[]`,
		v, sqlLiteral("{"+strings.ReplaceAll(version, ".", ",")+"}"))
}

// engineScript is the install script's transaction body: the plain script
// (sql/build/pgmig.sql) without its header line, BEGIN and COMMIT, with the
// non-ASCII characters of its whole-line comments replaced, so that the
// bundle stays ASCII.
func engineScript() (string, error) {
	script := pgmigsql.InstallScript()
	_, rest, ok := strings.Cut(script, "\nBEGIN;\n")
	body, ok2 := strings.CutSuffix(rest, "COMMIT;\n")
	if !ok || !ok2 || !strings.HasPrefix(script, "--") {
		return "", errors.New("the embedded install script is not \"-- header, BEGIN;, body, COMMIT;\": cannot bundle the engine")
	}
	lines := strings.Split(body, "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimLeft(l, " \t"), "--") {
			lines[i] = asciiOnly(l)
		}
	}
	return strings.Join(lines, "\n"), nil
}

// asciiBatch is the batch (see Batch) as JSON with one migration per line
// and every non-ASCII character as a \u escape. Non-transactional
// migrations are checksum-only entries (Bundle refuses them otherwise).
func asciiBatch(ms []*Migration) (string, error) {
	var b bytes.Buffer
	b.WriteString("[")
	for i, m := range ms {
		e := newBatchEntry(m, m.Transactional)
		e.LockTimeout, e.Statements = "", nil // (as before: the bundle carries neither)
		var line bytes.Buffer
		enc := json.NewEncoder(&line)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(e); err != nil {
			return "", err
		}
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n")
		b.WriteString(escapeNonASCII(strings.TrimSuffix(line.String(), "\n")))
	}
	b.WriteString("\n]")
	return b.String(), nil
}

// escapeNonASCII replaces every non-ASCII character of JSON text (they can
// only be inside strings) with its \u escape, as two UTF-16 surrogates
// above U+FFFF.
func escapeNonASCII(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < utf8.RuneSelf:
			b.WriteRune(r)
		case r > 0xFFFF:
			r -= 0x10000
			fmt.Fprintf(&b, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

// quoteTag returns a dollar-quote tag ($base$, else $base_1$, $base_2$,
// ...) that can quote text: PostgreSQL's lexer (and psql's) ends a dollar
// quote at the first occurrence of its tag, so the tag must occur neither in
// the text nor across the text's end and the closing tag (text ending in
// "$base" followed by "$base$").
func quoteTag(base, text string) string {
	for n := 0; ; n++ {
		tag := "$" + base + "$"
		if n > 0 {
			tag = "$" + base + "_" + strconv.Itoa(n) + "$"
		}
		if strings.Index(text+tag, tag) == len(text) {
			return tag
		}
	}
}

// sqlLiteral quotes s as an SQL string literal that means the same with
// standard_conforming_strings on or off (E” with backslashes doubled).
func sqlLiteral(s string) string {
	s = asciiOnly(s)
	if !strings.Contains(s, `\`) {
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	return "E'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", "''") + "'"
}

// asciiOnly replaces each non-ASCII character of s with '?'.
func asciiOnly(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= utf8.RuneSelf {
			return '?'
		}
		return r
	}, s)
}

// commentText is s fit for one line of an SQL comment: printable ASCII only
// (control characters, backslashes and anything else become '?'), at most
// max characters.
func commentText(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' || r == '\\' {
			return '?'
		}
		return r
	}, s)
	if len(s) > max {
		s = s[:max-3] + "..."
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
